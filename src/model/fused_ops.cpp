#include "gmsa/model/fused_ops.h"

#include <cstdlib>
#include <cstring>

#include "gmsa/util/error.h"

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

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool all_bf16_cuda(std::initializer_list<const torch::Tensor*> ts) {
  if (!compiled() || !enabled_flag()) return false;
  for (const auto* t : ts)
    if (!t->is_cuda() || t->scalar_type() != torch::kBFloat16) return false;
  return true;
}

bool wants_grad(std::initializer_list<const torch::Tensor*> ts) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const auto* t : ts)
    if (t->requires_grad()) return true;
  return false;
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

// [rows, cols] view of x with unit column stride, or undefined.
torch::Tensor rows_of(const torch::Tensor& x) {
  if (x.stride(-1) != 1) return {};
  auto r = x.reshape({-1, x.size(-1)});
  return r.stride(-1) == 1 ? r : torch::Tensor();
}

torch::Tensor rms_norm_fwd(const torch::Tensor& rows, const torch::Tensor& w, double eps, c10::IntArrayRef shape) {
  auto out = torch::empty(shape, rows.options());
  kernels::rms_norm_bf16(rows.data_ptr(), rows.stride(0), w.data_ptr(), out.data_ptr(), rows.size(0),
                         rows.size(1), static_cast<float>(eps), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor w, double eps) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["eps"] = eps;
    return rms_norm_fwd(rows_of(x), w, eps, x.sizes());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    auto rows = rows_of(x);
    auto dy = grads[0].contiguous();
    auto dx = torch::empty(x.sizes(), dy.options());
    kernels::rms_norm_backward_bf16(rows.data_ptr(), rows.stride(0), w.data_ptr(), dy.data_ptr(), dx.data_ptr(),
                                    rows.size(0), rows.size(1), static_cast<float>(eps), stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    torch::Tensor dw;
    if (ctx->needs_input_grad(1)) {  // trained norms (LSA): dw = sum over rows of dy * bf16(x r)
      auto normed = rms_norm_fwd(rows, torch::ones_like(w), eps, rows.sizes());
      dw = (dy.reshape({-1, dy.size(-1)}).to(torch::kFloat) * normed.to(torch::kFloat)).sum(0).to(w.scalar_type());
    }
    return {dx, dw, torch::Tensor()};
  }
};

// Writes RoPE(x) into out, a [B, heads, T, D] tensor or view with a contiguous last dimension,
// and the values (laid out as x) unrotated into values_out (laid out as out) when given.
void rope_fwd(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& out,
              const torch::Tensor& values = {}, const torch::Tensor& values_out = {}) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  const kernels::RopeOut o{out.stride(0), out.stride(1), out.stride(2)};
  kernels::RopeValues v;
  if (values.defined()) v = {values.data_ptr(), values.stride(1), values_out.data_ptr()};
  kernels::rope_bf16(x.data_ptr(), x.stride(1), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), o, v, B, T, H, D,
                     stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct RopeFn : torch::autograd::Function<RopeFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor cos, torch::Tensor sin) {
    ctx->save_for_backward({cos, sin});
    auto out = torch::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, x.options());  // the backward's layout
    rope_fwd(x, cos, sin, out);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto dout = grads[0].contiguous();  // [B, H, T, D]
    const int64_t B = dout.size(0), H = dout.size(1), T = dout.size(2), D = dout.size(3);
    auto dx = torch::empty({B, T, H, D}, dout.options());
    kernels::rope_backward_bf16(dout.data_ptr(), saved[0].data_ptr(), saved[1].data_ptr(), dx.data_ptr(), B, T, H,
                                D, stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

// gate, up: [rows, cols] views with unit column stride (rows may be strided).
torch::Tensor silu_mul_fwd(const torch::Tensor& gate, const torch::Tensor& up, c10::IntArrayRef shape) {
  auto out = torch::empty(shape, gate.options());
  kernels::silu_mul_bf16(gate.data_ptr(), gate.stride(0), up.data_ptr(), up.stride(0), out.data_ptr(), gate.size(0),
                         gate.size(1), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

struct SiluMulFn : torch::autograd::Function<SiluMulFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor gate, torch::Tensor up) {
    ctx->save_for_backward({gate, up});
    return silu_mul_fwd(rows_of(gate), rows_of(up), gate.sizes());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto dout = grads[0].contiguous();
    auto dgate = torch::empty_like(saved[0]), dup = torch::empty_like(saved[1]);
    kernels::silu_mul_backward_bf16(saved[0].data_ptr(), saved[1].data_ptr(), dout.data_ptr(), dgate.data_ptr(),
                                    dup.data_ptr(), dout.numel(), stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {dgate, dup};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  if (!all_bf16_cuda({&x, &w}) || !w.is_contiguous()) return {};
  auto rows = rows_of(x);
  if (!rows.defined()) return {};
  c10::cuda::CUDAGuard guard(x.device());
  if (wants_grad({&x, &w})) return RmsNormFn::apply(x, w, eps);
  return rms_norm_fwd(rows, w, eps, x.sizes());
}

namespace {

// Heads and dims packed within a token, tokens evenly strided: a view of [B, T, H * D].
bool token_rows(const torch::Tensor& x) {
  if (x.dim() != 4) return false;
  const int64_t B = x.size(0), T = x.size(1), D = x.size(3);
  return x.stride(3) == 1 && x.stride(2) == D && (B == 1 || x.stride(0) == T * x.stride(1));
}

// Whether the kernel serves x [B, T, heads, D] with these tables.
bool rope_applies(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (!all_bf16_cuda({&x, &cos, &sin}) || !token_rows(x)) return false;
  if (!cos.is_contiguous() || !sin.is_contiguous() || cos.size(0) != x.size(0) || cos.size(2) != x.size(1))
    return false;
  return !wants_grad({&cos, &sin});  // positions are never trained
}

// out: [B, heads, T, D] for x [B, T, heads, D], last dimension contiguous, bf16 on x's device.
bool rotated_layout(const torch::Tensor& x, const torch::Tensor& out) {
  return all_bf16_cuda({&out}) && out.dim() == 4 && out.device() == x.device() && out.stride(3) == 1 &&
         out.size(0) == x.size(0) && out.size(1) == x.size(2) && out.size(2) == x.size(1) && out.size(3) == x.size(3);
}

}  // namespace

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (!rope_applies(x, cos, sin)) return {};
  c10::cuda::CUDAGuard guard(x.device());
  if (wants_grad({&x})) return RopeFn::apply(x, cos, sin);
  // Token-major: attention's output then comes out token-major too (cuDNN's follows q's layout),
  // and o_proj reads it without the transpose copy (0.5 ms per layer at 48,000 tokens of the
  // 7B shape).
  auto out = torch::empty(x.sizes(), x.options()).transpose(1, 2);
  rope_fwd(x, cos, sin, out);
  return out;
}

bool rope_into(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& out,
               const torch::Tensor& values, const torch::Tensor& values_out) {
  if (!rope_applies(x, cos, sin) || wants_grad({&x}) || !rotated_layout(x, out)) return false;
  if (values.defined()) {
    if (!all_bf16_cuda({&values}) || values.sizes() != x.sizes() || !token_rows(values) ||
        values.device() != x.device() || wants_grad({&values}) || !values_out.defined() ||
        values_out.strides() != out.strides() || !rotated_layout(x, values_out))
      return false;
  }
  c10::cuda::CUDAGuard guard(x.device());
  rope_fwd(x, cos, sin, out, values, values_out);
  return true;
}

torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!all_bf16_cuda({&gate, &up}) || gate.sizes() != up.sizes()) return {};
  c10::cuda::CUDAGuard guard(gate.device());
  if (wants_grad({&gate, &up}))  // the backward kernel reads contiguous inputs
    return gate.is_contiguous() && up.is_contiguous() ? SiluMulFn::apply(gate, up) : torch::Tensor();
  // Strided rows: the two halves of a packed gate/up projection.
  auto g = rows_of(gate), u = rows_of(up);
  if (!g.defined() || !u.defined()) return {};
  return silu_mul_fwd(g, u, gate.sizes());
}

torch::Tensor group_mean(const torch::Tensor& hidden, const torch::Tensor& sizes, int64_t groups) {
  if (!all_bf16_cuda({&hidden}) || wants_grad({&hidden}) || hidden.dim() != 3 || !hidden.is_contiguous()) return {};
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2);
  GMSA_CHECK(sizes.device() == hidden.device() && sizes.scalar_type() == torch::kLong && sizes.is_contiguous() &&
                 sizes.dim() == 2 && sizes.size(0) == 2 && sizes.size(1) == B,
             "fused::group_mean: sizes must be [2, {}] int64 on {}", B, hidden.device().str());
  c10::cuda::CUDAGuard guard(hidden.device());
  auto out = torch::empty({B, groups, H}, hidden.options());
  kernels::group_mean_bf16(hidden.data_ptr(), B, T, H, sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + B,
                           out.data_ptr(), groups, stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

#else

torch::Tensor rms_norm(const torch::Tensor&, const torch::Tensor&, double) { return {}; }
torch::Tensor rope(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) { return {}; }
bool rope_into(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
               const torch::Tensor&, const torch::Tensor&) {
  return false;
}
torch::Tensor silu_mul(const torch::Tensor&, const torch::Tensor&) { return {}; }
torch::Tensor group_mean(const torch::Tensor&, const torch::Tensor&, int64_t) { return {}; }

#endif

}  // namespace gmsa::fused
