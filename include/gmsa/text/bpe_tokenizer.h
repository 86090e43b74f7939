#pragma once
// Hugging Face tokenizer.json, byte-level BPE (GPT-2, LLaMA-3, Qwen2/3). Encoding follows the
// `tokenizers` pipeline: added tokens are split off first (on the raw text, then on the
// normalized text), the normalizer (none or NFC) runs, the pre-tokenizer splits with its regex
// (PCRE2, JIT), and BPE merges each piece's bytes by merge rank. docs/tokenizers.md says what is
// supported and how each field of tokenizer.json is read.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gmsa/text/tokenizer.h"

namespace gmsa {

// One entry of tokenizer.json "added_tokens": matched in the text before BPE.
struct AddedToken {
  int id = -1;
  std::string content;
  bool special = false;      // dropped by decode()
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched against the normalized text instead of the raw text
};

class BpeTokenizer final : public Tokenizer {
 public:
  // `tokenizer_json` is the text of tokenizer.json, `config_json` that of tokenizer_config.json
  // (empty when there is none); `origin` names the file in error messages.
  static std::unique_ptr<BpeTokenizer> from_json(const std::string& tokenizer_json,
                                                 const std::string& config_json,
                                                 const std::string& origin);
  // Reads tokenizer.json and, when present, tokenizer_config.json next to it.
  static std::unique_ptr<BpeTokenizer> load(const std::string& tokenizer_json_path);
  ~BpeTokenizer() override;

  // Fails with the byte offset when `text` is not valid UTF-8.
  std::vector<int> encode(std::string_view text) const override;
  // Like `tokenizers` decode(ids, skip_special_tokens=True): unknown ids are skipped, and
  // bytes that do not form valid UTF-8 become U+FFFD (one per maximal invalid subpart).
  std::string decode(const std::vector<int>& ids) const override;
  // Largest id + 1 over the model vocabulary and the added tokens (the embedding rows needed).
  int vocab_size() const override;
  // The vocabulary string (byte-level form, e.g. "Ġthe"), or the added token's content.
  std::string id_to_piece(int id) const override;
  int bos_id() const override;
  int eos_id() const override;
  int pad_id() const override;
  std::string kind() const override { return "tokenizer.json (byte-level BPE)"; }

  // Inverse of id_to_piece; -1 when absent. Added tokens take precedence.
  int piece_to_id(std::string_view piece) const;
  bool is_special(int id) const;
  // Whether the model expects BOS at the start (tokenizer_config "add_bos_token", else the
  // TemplateProcessing post-processor). encode() never adds it; callers do.
  bool adds_bos() const;
  const std::vector<AddedToken>& added_tokens() const;
  // The pre-tokenizer's pieces (raw bytes, after added-token splitting and normalization; added
  // tokens themselves are left out). For tests and debugging.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// UTF-8 helpers shared with the CLI and tests.
// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (overlongs,
// surrogates and code points above U+10FFFF are ill-formed), or std::string_view::npos.
size_t find_invalid_utf8(std::string_view s);
// Replaces each maximal ill-formed subpart by U+FFFD (the Unicode/WHATWG practice, as Rust's
// String::from_utf8_lossy does).
std::string utf8_lossy(std::string_view bytes);

}  // namespace gmsa
