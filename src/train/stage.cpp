#include "gmsa/train/stage.h"

#include "gmsa/util/error.h"

namespace gmsa {

void freeze_all(GmsaModel& model) {
  for (auto& p : model.decoder->parameters()) p.set_requires_grad(false);
  if (!model.compressor.is_empty())
    for (auto& p : model.compressor->parameters()) p.set_requires_grad(false);
}

NamedTensors enable(GmsaModel& model, const std::function<bool(const std::string&)>& pick) {
  NamedTensors out;
  auto visit = [&](torch::nn::Module& m, const std::string& prefix) {
    for (auto& p : m.named_parameters(true)) {
      const std::string name = prefix + p.key();
      if (!pick(name)) continue;
      p.value().set_requires_grad(true);
      out.emplace_back(name, p.value());
    }
  };
  visit(*model.decoder, "decoder.");
  if (!model.compressor.is_empty()) visit(*model.compressor, "compressor.");
  return out;
}

std::vector<int> context_tokens(const std::string& text, const Tokenizer& tok, int64_t max_tokens) {
  auto ids = tok.encode(text);
  if (static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  return ids;
}

std::unique_ptr<Stage> make_autoencoder_stage(const RunConfig& cfg);
std::unique_ptr<Stage> make_keft_stage(const RunConfig& cfg);
std::unique_ptr<Stage> make_finetune_stage(const RunConfig& cfg);
std::unique_ptr<Stage> make_lm_stage(const RunConfig& cfg);

std::unique_ptr<Stage> make_stage(const RunConfig& cfg) {
  const auto& t = cfg.stage.type;
  if (t == "ae") return make_autoencoder_stage(cfg);
  if (t == "keft") return make_keft_stage(cfg);
  if (t == "ft") return make_finetune_stage(cfg);
  if (t == "lm") return make_lm_stage(cfg);
  fail("unknown stage type \"{}\" (ae, keft, ft, lm)", t);
}

}  // namespace gmsa
