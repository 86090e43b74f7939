#include "gmsa/compressor/memory_tokens.h"

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa {

MemoryTokensImpl::MemoryTokensImpl(int64_t hidden, const CompressorConfig& cfg) {
  const int64_t inner = cfg.tcp_mlp_hidden > 0 ? cfg.tcp_mlp_hidden : hidden;
  memory = register_parameter("memory", torch::randn({cfg.tcp_max_memory, hidden}) * 0.02);
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(hidden, inner),
                                                     torch::nn::SiLU(),
                                                     torch::nn::Linear(inner, hidden)));
}

torch::Tensor MemoryTokensImpl::append(const torch::Tensor& ctx, const torch::Tensor& host_lengths,
                                       const torch::Tensor& host_counts) const {
  const int64_t B = ctx.size(0), H = ctx.size(2);
  GMSA_CHECK(host_lengths.is_cpu() && host_counts.is_cpu(), "tcp: lengths and counts must be host tensors");
  const int64_t max_mem = B == 0 ? 0 : host_counts.max().item<int64_t>();
  GMSA_CHECK(max_mem <= memory.size(0),
             "tcp: {} memory tokens needed but the compressor has {} (raise max context or rate)",
             max_mem, memory.size(0));
  const int64_t T = B == 0 ? 0 : (host_lengths + host_counts).max().item<int64_t>();
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(ctx.device());
  auto t = torch::arange(T, opts).unsqueeze(0);  // [1, T]
  auto lc = compat::to_device_async(
      torch::stack({host_lengths.to(torch::kLong), host_counts.to(torch::kLong)}), ctx.device());
  auto len = lc[0].unsqueeze(1);  // [B, 1]
  auto cnt = lc[1].unsqueeze(1);
  auto is_ctx = t < len;
  auto is_mem = (t >= len).logical_and(t < len + cnt);
  auto ctx_padded = torch::cat({ctx, torch::zeros({B, std::max<int64_t>(T - ctx.size(1), 0), H}, ctx.options())}, 1)
                        .narrow(1, 0, T);
  auto mem_idx = (t - len).clamp(0, memory.size(0) - 1);                // [B, T]
  auto mem = memory.to(ctx.scalar_type()).index_select(0, mem_idx.view({-1})).view({B, T, H});
  auto zero = torch::zeros_like(ctx_padded);
  return torch::where(is_ctx.unsqueeze(-1), ctx_padded, torch::where(is_mem.unsqueeze(-1), mem, zero));
}

SoftTokens MemoryTokensImpl::read(const torch::Tensor& states, const torch::Tensor& host_lengths,
                                  const torch::Tensor& host_counts) {
  const int64_t B = states.size(0), H = states.size(2);
  GMSA_CHECK(host_lengths.is_cpu() && host_counts.is_cpu(), "tcp: lengths and counts must be host tensors");
  const int64_t M = soft_token_width(host_counts);
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(states.device());
  auto j = torch::arange(M, opts).unsqueeze(0);
  auto lc = compat::to_device_async(
      torch::stack({host_lengths.to(torch::kLong), host_counts.to(torch::kLong)}), states.device());
  auto cnt = lc[1].unsqueeze(1);
  auto idx = (lc[0].unsqueeze(1) + j).clamp_max(states.size(1) - 1);
  auto picked = states.gather(1, idx.unsqueeze(-1).expand({B, M, H}));
  auto mask = (j < cnt).to(torch::kLong);
  // Run the MLP in the state dtype (its fp32 weights are the master copy).
  auto out = torch::Tensor();
  {
    auto w_dtype = picked.scalar_type();
    out = mlp->forward(picked.to(torch::kFloat)).to(w_dtype);
  }
  out = out * mask.unsqueeze(-1).to(out.scalar_type());
  return {out, mask, host_counts.to(torch::kLong)};
}

}  // namespace gmsa
