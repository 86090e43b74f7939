// sentencepiece tokenizer.model (LLaMA-2, Mistral, llama2.c, the quickstart's own model).
#include <sentencepiece_processor.h>

#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    std::string bytes = read_file(path);
    auto status = sp_.LoadFromSerializedProto(bytes);
    if (!status.ok()) fail("{}: not a sentencepiece model: {}", path, status.ToString());
  }
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto status = sp_.Encode(text, &ids);
    if (!status.ok()) fail("sentencepiece encode failed: {}", status.ToString());
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    std::vector<int> valid;
    valid.reserve(ids.size());
    for (int id : ids)
      if (id >= 0 && id < sp_.GetPieceSize() && !sp_.IsControl(id)) valid.push_back(id);
    std::string out;
    auto status = sp_.Decode(valid, &out);
    if (!status.ok()) fail("sentencepiece decode failed: {}", status.ToString());
    return out;
  }
  int vocab_size() const override { return sp_.GetPieceSize(); }
  std::string id_to_piece(int id) const override { return sp_.IdToPiece(id); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int pad_id() const override { return sp_.pad_id(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

}  // namespace gmsa
