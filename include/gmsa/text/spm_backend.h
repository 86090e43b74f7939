#pragma once
// Why a backend behind dlopen: Debian's libsentencepiece carries its own protobuf-lite 3.14
// and exports its symbols, while libtorch needs libprotobuf 3.21. In one symbol namespace one
// of them always binds to the other's code (a crash before main, or sentencepiece's
// version check failing). So sentencepiece lives in a small module, libgmsa_sentencepiece.so,
// loaded with RTLD_DEEPBIND: its references resolve inside its own dependencies first.
// Only virtual calls cross the boundary (no symbol look-ups), with the same libstdc++.
#include <memory>
#include <string>
#include <vector>

namespace gmsa {

class SpmBackend {
 public:
  virtual ~SpmBackend() = default;
  virtual std::string load(const std::string& serialized_model) = 0;  // "" or an error
  virtual std::string encode(const std::string& text, std::vector<int>* ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int piece_size() const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
};

// Loads the module once (from $GMSA_SPM_MODULE, else beside the running executable, else
// ../lib beside it) and returns a new backend; throws gmsa::Error naming what was tried.
std::unique_ptr<SpmBackend> make_spm_backend();

// Trains a sentencepiece model through the trainer API (flags as spm_train's, e.g.
// "--input=a.txt --model_prefix=m --vocab_size=1000 --model_type=bpe"; values without spaces,
// as sentencepiece splits the string on whitespace). Runs in the helper program
// gmsa_spm_train beside the module, because the trainer writes to std::cerr.
void train_sentencepiece(const std::string& flags);

}  // namespace gmsa
