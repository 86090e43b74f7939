#include "gmsa/compressor/compressor.h"

#include "gmsa/util/error.h"

namespace gmsa {

CompressorImpl::CompressorImpl(Decoder& decoder, const CompressorConfig& cfg) : cfg_(cfg) {
  cfg_.validate("compressor config");
  encoder = register_module("encoder", Encoder(decoder, cfg_));
  if (cfg_.method == "gmsa") {
    lsa = register_module("lsa", LSA(decoder, cfg_));
  } else {
    memory = register_module("memory", MemoryTokens(decoder->config().hidden_size, cfg_));
    memory->to(decoder->model->embed_tokens->weight.device());
  }
}

SoftTokens CompressorImpl::forward(const torch::Tensor& ids, const torch::Tensor& lengths,
                                   const torch::Tensor& rates) {
  GMSA_CHECK(ids.dim() == 2, "compress: ids must be [B, L]");
  auto device = ids.device();
  auto len = lengths.to(device, torch::kLong);
  auto r = rates.to(device, torch::kLong);
  GMSA_CHECK((r >= 1).all().item<bool>(), "compression rate must be >= 1");
  auto ctx = encoder->embed(ids);
  if (cfg_.method == "tcp") {
    auto counts = soft_token_counts(len, r);
    auto states = encoder->forward(memory->append(ctx, len, counts));
    return memory->read(states, len, counts);
  }
  auto states = encoder->forward(ctx);
  const int64_t L = ids.size(1);
  auto mask = (torch::arange(L, len.options()).unsqueeze(0) < len.unsqueeze(1)).to(torch::kLong);
  auto soft = group_merge(states, mask, r);
  soft.embeds = lsa->forward(soft.embeds) * soft.mask.unsqueeze(-1).to(soft.embeds.scalar_type());
  return soft;
}

std::vector<std::pair<std::string, torch::Tensor>> CompressorImpl::own_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : named_parameters(true)) {
    const auto& k = p.key();
    const bool is_lora = k.find("lora_") != std::string::npos;
    const bool is_encoder_base = k.rfind("encoder.", 0) == 0 && !is_lora;
    if (!is_encoder_base) out.emplace_back(k, p.value());
  }
  return out;
}

}  // namespace gmsa
