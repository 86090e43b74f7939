#include "gmsa/model/fused_ops.h"

#include <cstdlib>
#include <cstring>

#ifdef GMSA_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../kernels/fused_kernels.h"
#endif

namespace gmsa::fused {
namespace {

bool& enabled_flag() {
  static bool on = [] {
    const char* v = std::getenv("GMSA_FUSED_KERNELS");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

}  // namespace

bool compiled() {
#ifdef GMSA_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}
bool enabled() { return compiled() && enabled_flag(); }
void set_enabled(bool on) { enabled_flag() = on; }

#ifdef GMSA_HAVE_CUDA_KERNELS

namespace {
// bf16 CUDA tensors that autograd does not need to see.
bool applies(std::initializer_list<const torch::Tensor*> ts) {
  if (!compiled() || !enabled_flag()) return false;
  const bool grad = torch::GradMode::is_enabled();
  for (const auto* t : ts)
    if (!t->is_cuda() || t->scalar_type() != torch::kBFloat16 || (grad && t->requires_grad())) return false;
  return true;
}

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  if (!applies({&x, &w}) || x.stride(-1) != 1) return {};
  const int64_t cols = x.size(-1);
  auto rows2d = x.reshape({-1, cols});  // a view whenever rows are evenly strided
  if (rows2d.stride(-1) != 1 || !w.is_contiguous()) return {};
  c10::cuda::CUDAGuard guard(x.device());
  auto out = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
  kernels::rms_norm_bf16(rows2d.data_ptr(), rows2d.stride(0), w.data_ptr(), out.data_ptr(), rows2d.size(0),
                         cols, static_cast<float>(eps), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (!applies({&x, &cos, &sin}) || x.dim() != 4) return {};
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  // Heads and dims packed within a token; tokens evenly strided (a view of [B, T, H * D]).
  if (x.stride(3) != 1 || x.stride(2) != D || (B > 1 && x.stride(0) != T * x.stride(1))) return {};
  if (!cos.is_contiguous() || !sin.is_contiguous() || cos.size(0) != B || cos.size(2) != T) return {};
  c10::cuda::CUDAGuard guard(x.device());
  auto out = torch::empty({B, H, T, D}, x.options());
  kernels::rope_bf16(x.data_ptr(), x.stride(1), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), B, T, H, D,
                     c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!applies({&gate, &up}) || !gate.is_contiguous() || !up.is_contiguous() || gate.sizes() != up.sizes())
    return {};
  c10::cuda::CUDAGuard guard(gate.device());
  auto out = torch::empty_like(gate);
  kernels::silu_mul_bf16(gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel(),
                         c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

#else

torch::Tensor rms_norm(const torch::Tensor&, const torch::Tensor&, double) { return {}; }
torch::Tensor rope(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) { return {}; }
torch::Tensor silu_mul(const torch::Tensor&, const torch::Tensor&) { return {}; }

#endif

}  // namespace gmsa::fused
