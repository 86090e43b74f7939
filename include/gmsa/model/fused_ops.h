#pragma once
// Fused CUDA kernels for the hot elementwise chains of a LLaMA block (RMSNorm, RoPE, SwiGLU's
// product) on bf16 CUDA tensors, with their own backward kernels under autograd: profiling the
// autoencoder step put ~45% of its GPU time in elementwise kernels (docs/performance.md).
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
// cos/sin [B, 1, T, D] as rope_tables() makes them.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// silu(gate) * up.
torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace gmsa::fused
