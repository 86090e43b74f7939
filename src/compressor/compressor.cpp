#include "gmsa/compressor/compressor.h"

#include "gmsa/model/compat.h"
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
  const int64_t B = ids.size(0), L = ids.size(1);
  GMSA_CHECK(lengths.dim() == 1 && lengths.size(0) == B && rates.dim() == 1 && rates.size(0) == B,
             "compress: lengths and rates must be [{}], got {} and {}", B,
             compat::shape_str(lengths.sizes()), compat::shape_str(rates.sizes()));
  // Sizes on the host: free for CPU tensors (collate builds them there), one copy each else.
  auto len_host = lengths.to(torch::kCPU, torch::kLong);
  auto r_host = rates.to(torch::kCPU, torch::kLong);
  GMSA_CHECK((r_host >= 1).all().item<bool>(), "compression rate must be >= 1");
  GMSA_CHECK(((len_host >= 0) & (len_host <= L)).all().item<bool>(),
             "compress: context lengths must lie in [0, {}] (the width of ids)", L);
  auto ctx = encoder->embed(ids);
  if (cfg_.method == "tcp") {
    auto counts_host = soft_token_counts(len_host, r_host);
    auto states = encoder->forward(memory->append(ctx, len_host, counts_host));
    return memory->read(states, len_host, counts_host);
  }
  auto soft = group_merge_right_padded(encoder->forward(ctx), len_host, r_host);
  soft.embeds = lsa->forward(soft.embeds);
  // LSA maps the zero padding to non-zero vectors: zero them again (sizes on the host, so a batch
  // without padding skips the product).
  if ((soft.lengths < soft.embeds.size(1)).any().item<bool>())
    soft.embeds = soft.embeds * soft.mask.unsqueeze(-1).to(soft.embeds.scalar_type());
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
