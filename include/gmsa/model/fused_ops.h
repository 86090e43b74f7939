#pragma once
// Fused CUDA kernels for the hot elementwise chains of a LLaMA block (RMSNorm, RoPE, SwiGLU's
// product) on bf16 CUDA tensors, with their own backward kernels under autograd: profiling the
// autoencoder step put ~45% of its GPU time in elementwise kernels (docs/performance.md). Also
// group merging's means, one kernel where the plain path's fp32 copy and scatter-add took
// 2.2 ms for 16 x 3,000 states of the 7B shape.
// Each function returns an undefined tensor when its kernel does not apply (CPU, another
// dtype, unsupported strides, a CPU-only build) and the caller runs the plain LibTorch ops,
// which define the semantics: forwards reproduce their bf16 rounding step for step; backwards
// run in fp32 and round once.
#include <torch/torch.h>

namespace gmsa::fused {

// Whether this build has the kernels (a CUDA build of LibTorch and nvcc at configure time).
bool compiled();
// Process-wide switch (default on) to compare against the plain path; GMSA_FUSED_KERNELS=0
// in the environment turns it off at start-up.
bool enabled();
void set_enabled(bool on);

// HF LlamaRMSNorm: w * bf16(x * rsqrt(mean(x^2) + eps)) in fp32. x [..., H].
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);
// x [B, T, heads, D] (a view of a projection's output) -> [B, heads, T, D] with RoPE applied;
// cos/sin [B, 1, T, D] as rope_tables() makes them. Without autograd the result is a transposed
// view of a token-major buffer (so attention's output needs no copy before o_proj), under
// autograd a contiguous tensor (the layout of the backward kernel).
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// The same without autograd, written into out: [B, heads, T, D] with a contiguous last dimension.
// values (laid out as x), when given, are copied unrotated into values_out (strided as out) by the
// same kernel: the prefill's keys and values go straight into the KV cache's columns. False, with
// nothing written, where the kernel does not apply.
bool rope_into(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& out,
               const torch::Tensor& values = {}, const torch::Tensor& values_out = {});
// silu(gate) * up.
torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up);
// Group merging's means for right-padded rows, without autograd (inference): hidden [B, T, H];
// sizes [2, B] int64 on hidden's device, its rows the rates and the real lengths -> [B, groups, H],
// the mean of each group of rates[b] consecutive real states summed in fp32, 0 past a row's
// end (group_merge's semantics: src/compressor/group_merging.cpp).
torch::Tensor group_mean(const torch::Tensor& hidden, const torch::Tensor& sizes, int64_t groups);

}  // namespace gmsa::fused
