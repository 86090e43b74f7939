#pragma once
// Group merging (GMSA, Sec. 3.1): a sample's L context states are split into consecutive
// groups of r (its compression rate); each group is averaged into one soft token, a shorter
// last group into one more: ceil(L / r) soft tokens. Padding never enters a mean.
//
// Sizes live on the host, contents on the device: every length of a batch is known on the
// host when it is collated, so sizes (soft-token counts, the padded width M) are computed on
// the CPU and only the tensors' contents are computed on the accelerator. This keeps a
// training step free of device-to-host synchronisation.
#include <torch/torch.h>

namespace gmsa {

struct SoftTokens {
  torch::Tensor embeds;  // [B, M, H] on the device, right-padded with zeros, M = max_b ceil(L_b / r_b)
  torch::Tensor mask;    // [B, M] int64 on the device, 1 = real soft token
  torch::Tensor lengths; // [B] int64 on the HOST (CPU): ceil(L_b / r_b); reading it costs nothing
};

// hidden [B, T, H]; mask [B, T] (1 = real token, padding may sit on either side);
// rates [B] int64 >= 1, one per sample, validated and used on the host (a device tensor costs
// one device-to-host copy: pass a CPU tensor). host_lengths [B], optional: the real tokens per
// row (= mask.sum(1)) if the caller knows them; then nothing is read from the device, otherwise
// mask.sum(1) is read once. The result's lengths are on the CPU, embeds and mask on hidden's
// device. Fully vectorised: one scatter-add, no host loop.
SoftTokens group_merge(const torch::Tensor& hidden, const torch::Tensor& mask,
                       const torch::Tensor& rates, const torch::Tensor& host_lengths = {});

// The same for right-padded rows, as the compressor's batches are: row b's real states are
// its first host_lengths[b] (on the host, validated). No mask is read; on bf16 CUDA states
// without autograd one fused kernel computes the means (fp32 sums in token order, where the
// general path scatter-adds them: the two agree to fp32 rounding), elsewhere the general path runs.
SoftTokens group_merge_right_padded(const torch::Tensor& hidden, const torch::Tensor& host_lengths,
                                    const torch::Tensor& rates);

// ceil(L / r) for each sample (on the inputs' device).
torch::Tensor soft_token_counts(const torch::Tensor& lengths, const torch::Tensor& rates);
// The padded soft-token width of a batch: its largest count (host tensor), at least 1.
int64_t soft_token_width(const torch::Tensor& counts_host);

}  // namespace gmsa
