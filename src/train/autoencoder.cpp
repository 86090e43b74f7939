// Autoencoder pretraining (GMSA Sec. 3.3): [soft(context)]["Restate the aforementioned Text."]
// -> context + EOS. Trains the encoder's LoRA and the LSA blocks (TCP: memory tokens, MLP and
// LoRA); the decoder, the encoder's base weights and LSA's final norm stay frozen.
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace {

class AutoencoderStage final : public Stage {
 public:
  explicit AutoencoderStage(const RunConfig& cfg) : cfg_(cfg) {}
  std::string name() const override { return "ae"; }
  bool reads_qa() const override { return false; }

  NamedTensors select_trainable(GmsaModel& model) const override {
    GMSA_CHECK(!model.compressor.is_empty(), "stage ae needs a compressor");
    freeze_all(model);
    return enable(model, [](const std::string& n) {
      if (n.rfind("compressor.", 0) != 0) return false;
      if (n.find("lora_") != std::string::npos) return true;
      if (n.rfind("compressor.lsa.", 0) == 0) return n.rfind("compressor.lsa.norm.", 0) != 0;
      return n.rfind("compressor.memory.", 0) == 0;
    });
  }

  Sample make_sample(const QaExample& ex, const Tokenizer& tok) const override {
    Sample s;
    s.context = context_tokens(ex.input, tok, cfg_.data.max_context_tokens);
    s.prompt = tok.encode(cfg_.data.ae_prompt);
    s.target = s.context;
    GMSA_CHECK(tok.eos_id() >= 0, "stage ae: the tokenizer has no EOS token");
    s.target.push_back(tok.eos_id());
    return s;
  }

 private:
  RunConfig cfg_;
};

}  // namespace

std::unique_ptr<Stage> make_autoencoder_stage(const RunConfig& cfg) {
  return std::make_unique<AutoencoderStage>(cfg);
}

}  // namespace gmsa
