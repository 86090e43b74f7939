#pragma once
// Group merging (GMSA, Sec. 3.1): a sample's L context states are split into consecutive
// groups of r (its compression rate); each group is averaged into one soft token, a shorter
// last group into one more: ceil(L / r) soft tokens. Padding never enters a mean.
#include <torch/torch.h>

namespace gmsa {

struct SoftTokens {
  torch::Tensor embeds;  // [B, M, H], right-padded with zeros, M = max_b ceil(L_b / r_b)
  torch::Tensor mask;    // [B, M] int64, 1 = real soft token
  torch::Tensor lengths; // [B] int64: ceil(L_b / r_b)
};

// hidden [B, T, H]; mask [B, T] (1 = real token, padding may sit on either side);
// rates [B] int64 >= 1, one per sample. Fully vectorised: one scatter-add, no host loop.
SoftTokens group_merge(const torch::Tensor& hidden, const torch::Tensor& mask,
                       const torch::Tensor& rates);

// ceil(L / r) for each sample.
torch::Tensor soft_token_counts(const torch::Tensor& lengths, const torch::Tensor& rates);

}  // namespace gmsa
