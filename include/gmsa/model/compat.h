#pragma once
// The one place where LibTorch 1.13 (Debian, CPU) and 2.x (CUDA builds) differ for us.
#include <torch/torch.h>
#include <torch/version.h>

#include <optional>
#include <string>

#define GMSA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace gmsa::compat {

// "1.13.1 (CPU)" or "2.11.0 (CUDA 13.0)".
std::string torch_version_string();

// Attention over q [B,H,Tq,D], k/v [B,H,Tk,D] (k/v heads already expanded to H).
// `mask`: bool [B,1,Tq,Tk] (true = may attend), additive float (0 / -inf, in q's dtype), or
// undefined; `causal` applies the
// bottom-right-aligned causal mask when no explicit mask is given. On LibTorch >= 2.0 this is
// the fused scaled_dot_product_attention (flash / memory-efficient kernels on CUDA).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, bool causal, double scale);

// The same computation written out with matmul + softmax: the reference for tests.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v, const torch::Tensor& mask, bool causal,
                                  double scale);

// A tensor on `device` without the host waiting: a CPU tensor is copied to a CUDA device
// asynchronously from pinned memory (pinned first where it is not). A copy from pageable memory
// waits for the work queued before it, which keeps the host from queuing more work behind a
// long computation. Every host-to-device copy of a batch or of its sizes goes through here.
torch::Tensor to_device_async(const torch::Tensor& t, const torch::Device& device);

// "[2, 3, 4]" for error messages.
std::string shape_str(c10::IntArrayRef sizes);

// The default generator's state of a device (CPU or CUDA), to replay random draws exactly
// (activation checkpointing) and to save them in checkpoints.
torch::Tensor rng_state(torch::Device device = torch::kCPU);
void set_rng_state(const torch::Tensor& state, torch::Device device = torch::kCPU);

// Peak bytes allocated on a CUDA device since the last reset (0 without CUDA support), and the
// process's peak resident memory for the CPU.
int64_t cuda_peak_memory(torch::Device device);
void reset_cuda_peak_memory(torch::Device device);
int64_t cpu_peak_rss();

}  // namespace gmsa::compat
