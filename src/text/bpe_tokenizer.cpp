// Placeholder until the tokenizer.json implementation lands (issue: tokenizer.json).
#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"

namespace gmsa {
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path) {
  fail("{}: tokenizer.json support is not built yet", path);
}
}  // namespace gmsa
