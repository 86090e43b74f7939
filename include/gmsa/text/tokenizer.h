#pragma once
// The tokenizer interface every model sees: sentencepiece models (LLaMA-2, Mistral, the
// quickstart's own) and Hugging Face tokenizer.json byte-level BPE (LLaMA-3, Qwen2/3).
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gmsa {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Plain encoding: no BOS, no EOS.
  virtual std::vector<int> encode(std::string_view text) const = 0;
  // Special and control tokens (BOS, EOS, pad) are dropped from the text.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  // -1 when the tokenizer has no such token.
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  // Human-readable kind, e.g. "sentencepiece" or "tokenizer.json (BPE)".
  virtual std::string kind() const = 0;

  std::vector<int> encode(std::string_view text, bool add_bos, bool add_eos) const;
};

// `path` is a tokenizer file (*.model: sentencepiece; tokenizer.json: byte-level BPE) or a
// model directory holding one of them (tokenizer.json is preferred when both are present).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Registered by the tokenizer.json implementation (text/bpe_tokenizer.cpp).
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& tokenizer_json_path);
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path);

}  // namespace gmsa
