// gmsa_spm_train "FLAGS": sentencepiece's trainer in a process of its own. The trainer logs to
// std::cerr, which a library loaded with RTLD_DEEPBIND cannot use safely inside an executable
// that owns a copy-relocated std::cerr (see gmsa/text/spm_backend.h); so it runs here, in a
// small program that links sentencepiece and nothing that clashes with it.
#include <sentencepiece_trainer.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: gmsa_spm_train \"--input=... --model_prefix=... --vocab_size=...\"\n";
    return 2;
  }
  auto status = sentencepiece::SentencePieceTrainer::Train(argv[1]);
  if (!status.ok()) {
    std::cerr << status.ToString() << "\n";
    return 1;
  }
  return 0;
}
