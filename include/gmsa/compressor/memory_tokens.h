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
  // ctx [B, L, H] right-padded, lengths [B], counts [B] memory tokens per row.
  torch::Tensor append(const torch::Tensor& ctx, const torch::Tensor& lengths,
                       const torch::Tensor& counts) const;
  // The encoder states at each row's memory positions, through the MLP.
  SoftTokens read(const torch::Tensor& states, const torch::Tensor& lengths,
                  const torch::Tensor& counts);

  torch::Tensor memory;  // [max_memory, H]
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(MemoryTokens);

}  // namespace gmsa
