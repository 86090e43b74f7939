#pragma once
// A training stage decides two things: which parameters train, and how one example becomes
// token sequences. The trainer does the rest the same way for every stage.
//   ae   autoencoder pretraining (GMSA Sec. 3.3): encoder LoRA + LSA (or TCP memory + MLP +
//        LoRA) learn to restate the context; the decoder is frozen.
//   keft Knowledge Extraction Fine-Tuning (Sec. 3.4): the decoder's W_Q, W_K, W_V learn to
//        answer from soft tokens; the compressor is frozen.
//   ft   full (or pattern-selected) decoder fine-tuning on the same data as KEFT.
//   lm   plain causal LM training of a decoder (small decoders trained from scratch).
#include <memory>
#include <string>
#include <vector>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/config/run_config.h"
#include "gmsa/data/qa.h"
#include "gmsa/text/tokenizer.h"

namespace gmsa {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Token ids of one training example (host side).
struct Sample {
  std::vector<int> context;  // compressed into soft tokens; empty: none
  std::vector<int> prompt;   // no loss
  std::vector<int> target;   // loss on every token
  int64_t length() const { return static_cast<int64_t>(context.size() + prompt.size() + target.size()); }
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string name() const = 0;
  virtual bool uses_compressor() const { return true; }
  // true: examples are QA records (input, prompt, answer); false: corpus documents.
  virtual bool reads_qa() const = 0;
  // Sets requires_grad on exactly the parameters this stage trains (everything else frozen)
  // and returns them by name ("decoder." / "compressor." prefixes).
  virtual NamedTensors select_trainable(GmsaModel& model) const = 0;
  // Token sequences of one example; `ex.input` holds the document for corpus stages.
  virtual Sample make_sample(const QaExample& ex, const Tokenizer& tok) const = 0;
};

std::unique_ptr<Stage> make_stage(const RunConfig& cfg);

// Shared by the stages: freeze everything, then enable `names` (exact, prefixed names).
void freeze_all(GmsaModel& model);
NamedTensors enable(GmsaModel& model, const std::function<bool(const std::string&)>& pick);

// Context tokens as the compressor sees them: no BOS, cut to max_context_tokens.
std::vector<int> context_tokens(const std::string& text, const Tokenizer& tok, int64_t max_tokens);

}  // namespace gmsa
