#pragma once
// Fused CUDA kernels for the hot elementwise chains of a LLaMA block (RMSNorm, RoPE, SwiGLU's
// product), used for bf16 tensors on CUDA when no gradient is needed: inference, the frozen
// compressor's forward, the CUDA-graph decoding step. Each function returns an undefined
// tensor when its kernel does not apply (CPU, another dtype, autograd, a CPU-only build) and
// the caller runs the plain LibTorch ops, which define the semantics the kernels reproduce.
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
