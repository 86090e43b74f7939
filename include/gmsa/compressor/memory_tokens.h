#pragma once
// The traditional compression paradigm (TCP-AE, ICAE-like), GMSA's restoration baseline:
// ceil(L / r) learnable memory tokens are appended after the context in the encoder; their
// last hidden states, through an MLP, become the soft tokens.
#include <torch/torch.h>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/compressor/group_merging.h"

namespace gmsa {

class MemoryTokensImpl : public torch::nn::Module {
 public:
  MemoryTokensImpl(int64_t hidden, const CompressorConfig& cfg);

  // Encoder input: each row's context embeddings, then its memory tokens, then padding.
  // ctx [B, L, H] right-padded; host_lengths [B] context tokens and host_counts [B] memory
  // tokens per row: int64 CPU tensors (sizes are computed on the host, no device read).
  torch::Tensor append(const torch::Tensor& ctx, const torch::Tensor& host_lengths,
                       const torch::Tensor& host_counts) const;
  // The encoder states at each row's memory positions, through the MLP. Same host tensors as
  // append(); the result's lengths are host_counts (CPU), embeds and mask on states' device.
  SoftTokens read(const torch::Tensor& states, const torch::Tensor& host_lengths,
                  const torch::Tensor& host_counts);

  torch::Tensor memory;  // [max_memory, H]
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(MemoryTokens);

}  // namespace gmsa
