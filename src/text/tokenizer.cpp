#include "gmsa/text/tokenizer.h"

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {

std::vector<int> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int> ids;
  if (add_bos) {
    GMSA_CHECK(bos_id() >= 0, "tokenizer ({}) has no BOS token", kind());
    ids.push_back(bos_id());
  }
  auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos) {
    GMSA_CHECK(eos_id() >= 0, "tokenizer ({}) has no EOS token", kind());
    ids.push_back(eos_id());
  }
  return ids;
}

static bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (is_directory(path)) {
    auto json = join_path(path, "tokenizer.json");
    if (file_exists(json)) return load_hf_tokenizer_json(json);
    auto spm = join_path(path, "tokenizer.model");
    if (file_exists(spm)) return load_sentencepiece(spm);
    fail("{}: no tokenizer.json or tokenizer.model in this directory", path);
  }
  if (!file_exists(path)) fail("{}: no such tokenizer file", path);
  if (ends_with(path, ".json")) return load_hf_tokenizer_json(path);
  return load_sentencepiece(path);
}

}  // namespace gmsa
