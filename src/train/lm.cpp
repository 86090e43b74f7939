// Plain causal LM training of the decoder: [BOS] -> document + EOS, loss on every token.
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace {

class LmStage final : public Stage {
 public:
  explicit LmStage(const RunConfig& cfg) : cfg_(cfg) {}
  std::string name() const override { return "lm"; }
  bool uses_compressor() const override { return false; }
  bool reads_qa() const override { return false; }
  NamedTensors select_trainable(GmsaModel& model) const override {
    freeze_all(model);
    return enable(model, [](const std::string& n) { return n.rfind("decoder.", 0) == 0; });
  }
  Sample make_sample(const QaExample& ex, const Tokenizer& tok) const override {
    GMSA_CHECK(tok.bos_id() >= 0 && tok.eos_id() >= 0, "stage lm: the tokenizer needs BOS and EOS tokens");
    Sample s;
    s.prompt = {tok.bos_id()};
    s.target = tok.encode(ex.input);
    if (static_cast<int64_t>(s.target.size()) > cfg_.data.max_target_tokens - 1)
      s.target.resize(static_cast<size_t>(cfg_.data.max_target_tokens - 1));
    s.target.push_back(tok.eos_id());
    return s;
  }

 private:
  RunConfig cfg_;
};

}  // namespace

std::unique_ptr<Stage> make_lm_stage(const RunConfig& cfg) { return std::make_unique<LmStage>(cfg); }

}  // namespace gmsa
