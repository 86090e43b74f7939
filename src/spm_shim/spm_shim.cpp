// The only translation unit that includes sentencepiece (see include/gmsa/text/spm_backend.h).
#include <sentencepiece_processor.h>

#include "gmsa/text/spm_backend.h"

namespace {

class Backend final : public gmsa::SpmBackend {
 public:
  std::string load(const std::string& bytes) override {
    auto s = sp_.LoadFromSerializedProto(bytes);
    return s.ok() ? "" : s.ToString();
  }
  std::string encode(const std::string& text, std::vector<int>* ids) const override {
    auto s = sp_.Encode(text, ids);
    return s.ok() ? "" : s.ToString();
  }
  std::string decode(const std::vector<int>& ids, std::string* text) const override {
    auto s = sp_.Decode(ids, text);
    return s.ok() ? "" : s.ToString();
  }
  int piece_size() const override { return sp_.GetPieceSize(); }
  std::string id_to_piece(int id) const override { return sp_.IdToPiece(id); }
  bool is_control(int id) const override { return sp_.IsControl(id); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int pad_id() const override { return sp_.pad_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) gmsa::SpmBackend* gmsa_spm_backend_new() {
  return new Backend();
}
