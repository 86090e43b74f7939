#include "gmsa/model/decode_ops.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "gmsa/model/fused_ops.h"
#include "gmsa/util/error.h"

#ifdef GMSA_HAVE_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../kernels/decode_kernels.h"
#endif

namespace gmsa::decode_ops {
namespace {

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, value) == 0;
}

bool& enabled_flag() {
  static bool on = !env_is("GMSA_DECODE_KERNELS", "0");
  return on;
}

Projection& projection_choice() {
  static Projection p = [] {
    const char* v = std::getenv("GMSA_DECODE_GEMV");
    return v ? parse_projection(v) : Projection::kAuto;
  }();
  return p;
}

bool& pdl_flag() {
  static bool on = !env_is("GMSA_DECODE_PDL", "0");
  return on;
}

bool& norm_fusion_flag() {
  static bool on = !env_is("GMSA_DECODE_NORM_FUSION", "0");
  return on;
}

bool& step_pick_flag() {
  static bool on = !env_is("GMSA_DECODE_STEP_PICK", "0");
  return on;
}

int64_t& warm_limit() {
  static int64_t bytes = [] {
    const char* v = std::getenv("GMSA_DECODE_WARM_MIB");
    if (!v) return kDefaultWarmBytes;
    char* end = nullptr;
    const long long mib = std::strtoll(v, &end, 10);
    if (end == v || *end != '\0' || mib < 0 || mib > kMaxWarmMiB)
      throw std::invalid_argument(std::string("GMSA_DECODE_WARM_MIB: expected a whole number of MiB in [0, ") +
                                  std::to_string(kMaxWarmMiB) + "], got '" + v + "'");
    return static_cast<int64_t>(mib) << 20;
  }();
  return bytes;
}

}  // namespace

bool enabled() { return fused::enabled() && enabled_flag(); }
void set_enabled(bool on) { enabled_flag() = on; }
Projection projection() { return projection_choice(); }
void set_projection(Projection p) { projection_choice() = p; }

const char* projection_name(Projection p) {
  switch (p) {
    case Projection::kAuto: return "auto";
    case Projection::kCublas: return "cublas";
    case Projection::kTensorCores: return "tc";
  }
  return "?";
}

Projection parse_projection(const std::string& name) {
  for (Projection p : {Projection::kAuto, Projection::kCublas, Projection::kTensorCores})
    if (name == projection_name(p)) return p;
  throw std::invalid_argument("GMSA_DECODE_GEMV / projection kernel: unknown value '" + name +
                              "' (expected auto, cublas or tc)");
}
bool programmatic_launch() { return enabled() && pdl_flag(); }
void set_programmatic_launch(bool on) { pdl_flag() = on; }
int64_t warm_bytes() { return warm_limit(); }
bool norm_fusion() { return norm_fusion_flag() && projection() != Projection::kCublas && tma_projection(); }
void set_norm_fusion(bool on) { norm_fusion_flag() = on; }
bool step_pick() { return enabled() && step_pick_flag(); }
void set_step_pick(bool on) { step_pick_flag() = on; }
void set_warm_bytes(int64_t bytes) { warm_limit() = std::max<int64_t>(bytes, 0); }

#ifdef GMSA_HAVE_CUDA_KERNELS

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool bf16_cuda(std::initializer_list<const torch::Tensor*> ts) {
  for (const auto* t : ts)
    if (!t->defined() || !t->is_cuda() || t->scalar_type() != torch::kBFloat16) return false;
  return true;
}

// `rows`: the rows of the step, which the projection that reads `warm` has too.
kernels::Launch on_stream(const torch::Tensor& warm = {}, int64_t rows = 0) {
  kernels::Launch on{c10::cuda::getCurrentCUDAStream(), programmatic_launch()};
  if (warm.defined() && warm.is_cuda() && warm.is_contiguous() && warms_l2(rows))
    on.warm = {warm.data_ptr(), std::min<int64_t>(warm.nbytes(), warm_bytes())};
  return on;
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& y,
                                                     const torch::Tensor& w, double eps) {
  if (!enabled() || !bf16_cuda({&x, &y, &w}) || x.sizes() != y.sizes() || !x.is_contiguous() ||
      !y.is_contiguous() || !w.is_contiguous() || w.numel() != x.size(-1))
    return {};
  c10::cuda::CUDAGuard guard(x.device());
  auto h = torch::empty_like(x), normed = torch::empty_like(x);
  const int64_t cols = x.size(-1);
  kernels::add_rms_norm_bf16(x.data_ptr(), y.data_ptr(), w.data_ptr(), h.data_ptr(), normed.data_ptr(),
                             x.numel() / cols, cols, static_cast<float>(eps), on_stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {h, normed};
}

namespace {

// attention() and rope_attention(): q [B, H, D] (undefined with rope.qkv).
torch::Tensor split_kv_attention(const torch::Tensor& q, int64_t B, int64_t H, int64_t D, const torch::Tensor& k_cache,
                                 const torch::Tensor& v_cache, const torch::Tensor& key_mask, const torch::Tensor& slot,
                                 double scale, const torch::Tensor& arrivals, bool early_kv, const torch::Tensor& warm,
                                 const kernels::RopeKV& rope, const torch::TensorOptions& options) {
  const int64_t Hkv = k_cache.size(1), capacity = k_cache.size(2);
  if (!kernels::decode_attention_supports(D) || H % Hkv != 0 || !k_cache.is_contiguous() ||
      !v_cache.is_contiguous() || k_cache.sizes() != v_cache.sizes() || k_cache.size(0) != B ||
      k_cache.size(3) != D || key_mask.scalar_type() != torch::kBool || !key_mask.is_cuda() ||
      !key_mask.is_contiguous() || key_mask.size(0) != B || key_mask.size(1) != capacity ||
      (slot.defined() && (slot.scalar_type() != torch::kLong || !slot.is_cuda())))
    return {};
  c10::cuda::CUDAGuard guard(k_cache.device());
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto plan = kernels::decode_attention_plan(B, H, capacity, D, sms);
  auto out = torch::empty({B, H * D}, options);
  GMSA_CHECK(!arrivals.defined() || (arrivals.is_cuda() && arrivals.scalar_type() == torch::kInt &&
                                     arrivals.is_contiguous() && arrivals.numel() >= B * H),
             "decode attention: arrivals must be {} contiguous int32 zeros on the device", B * H);
  // One split writes its output itself: no workspace or arrival counts to allocate.
  const bool merges = plan.splits > 1;
  auto workspace =
      merges ? torch::empty({B * H * plan.splits * (D + 2)}, options.dtype(torch::kFloat)) : torch::Tensor();
  auto counts = !merges || arrivals.defined() ? arrivals : torch::zeros({B * H}, options.dtype(torch::kInt));
  kernels::decode_attention_bf16(q.defined() ? q.data_ptr() : nullptr, k_cache.data_ptr(), v_cache.data_ptr(),
                                 key_mask.data_ptr<bool>(), slot.defined() ? slot.data_ptr<int64_t>() : nullptr,
                                 out.data_ptr(), merges ? workspace.data_ptr<float>() : nullptr,
                                 counts.defined() ? counts.data_ptr<int>() : nullptr, B, H, Hkv, D,
                                 capacity, plan, static_cast<float>(scale), early_kv, on_stream(warm, B), rope);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                        const torch::Tensor& key_mask, const torch::Tensor& slot, double scale,
                        const torch::Tensor& arrivals, const torch::Tensor& warm) {
  if (!enabled() || !bf16_cuda({&q, &k_cache, &v_cache}) || q.dim() != 3 || !q.is_contiguous()) return {};
  return split_kv_attention(q, q.size(0), q.size(1), q.size(2), k_cache, v_cache, key_mask, slot, scale, arrivals,
                            /*early_kv=*/false, warm, {}, q.options());
}

torch::Tensor rope_attention(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                             torch::Tensor& k_cache, torch::Tensor& v_cache, const torch::Tensor& key_mask,
                             const torch::Tensor& slot, int64_t heads, double scale, const torch::Tensor& arrivals,
                             const torch::Tensor& warm) {
  if (!enabled() || !bf16_cuda({&qkv, &cos, &sin, &k_cache, &v_cache}) || qkv.dim() != 2 || qkv.stride(1) != 1 ||
      k_cache.dim() != 4 || !slot.defined())
    return {};
  const int64_t B = qkv.size(0), Hkv = k_cache.size(1), D = k_cache.size(3);
  if (qkv.size(1) != (heads + 2 * Hkv) * D || qkv.stride(0) % 8 != 0 || !aligned16(qkv.data_ptr()) ||
      !cos.is_contiguous() || !sin.is_contiguous() || !aligned16(cos.data_ptr()) || !aligned16(sin.data_ptr()) ||
      cos.numel() != B * D || sin.numel() != B * D)
    return {};
  return split_kv_attention({}, B, heads, D, k_cache, v_cache, key_mask, slot, scale, arrivals, /*early_kv=*/true,
                            warm, {qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr()}, qkv.options());
}

bool attention_supports(int64_t head_dim) { return kernels::decode_attention_supports(head_dim); }

AttentionPlan attention_plan(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto plan = kernels::decode_attention_plan(batch, heads, capacity, head_dim, sms);
  return {plan.splits, plan.steps, sms};
}
bool tma_projection() { return enabled() && kernels::skinny_tma_supported(); }

bool tma_fed_rows(int64_t rows) {
  return rows >= kernels::kSkinnyTmaMinRows && rows <= kernels::kSkinnyMaxRows && tma_projection() &&
         projection() != Projection::kCublas;
}

bool warms_l2(int64_t rows) { return warm_bytes() > 0 && !tma_fed_rows(rows); }

namespace {

enum class Kernel { kCublas, kGemv, kSkinny };

// The kernel for x [..., K] W [N, K]^T (+ bias), kCublas where none of ours applies.
Kernel pick(const torch::Tensor& x, const torch::Tensor& w, bool bias) {
  const Projection p = projection();
  if (!enabled() || p == Projection::kCublas || !bf16_cuda({&x, &w}) || w.dim() != 2 || !w.is_contiguous() ||
      !x.is_contiguous())
    return Kernel::kCublas;
  const int64_t N = w.size(0), K = w.size(1);
  if (K == 0 || x.size(-1) != K || !aligned16(w.data_ptr()) || !aligned16(x.data_ptr())) return Kernel::kCublas;
  const int64_t M = x.numel() / K;
  if (M == 1 && p == Projection::kAuto && !bias && K % 8 == 0) return Kernel::kGemv;
  if (!kernels::skinny_gemm_supports(M, K)) return Kernel::kCublas;
  const bool ours = p == Projection::kTensorCores || M == 1 || kernels::skinny_gemm_preferred(M, N);
  return ours ? Kernel::kSkinny : Kernel::kCublas;
}

torch::Tensor output_like(const torch::Tensor& x, int64_t n) {
  auto shape = x.sizes().vec();
  shape.back() = n;
  return torch::empty(shape, x.options());
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                     const torch::Tensor& warm) {
  const bool bias_ok = !bias.defined() || (bf16_cuda({&bias}) && bias.is_contiguous() && bias.numel() == w.size(0));
  const Kernel kernel = bias_ok ? pick(x, w, bias.defined()) : Kernel::kCublas;
  if (kernel == Kernel::kCublas) return torch::linear(x, w, bias);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = w.size(0), K = w.size(1), M = x.numel() / K;
  auto y = output_like(x, N);
  if (kernel == Kernel::kGemv)
    kernels::gemv_bf16(w.data_ptr(), x.data_ptr(), y.data_ptr(), N, K, /*swiglu=*/false, on_stream(warm, M));
  else
    kernels::skinny_gemm_bf16(w.data_ptr(), x.data_ptr(), K, bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(), N,
                              M, N, K, /*swiglu=*/false, on_stream(warm, M));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

torch::Tensor swiglu_linear(const torch::Tensor& x, const torch::Tensor& gate_up, const torch::Tensor& warm) {
  const Kernel kernel = pick(x, gate_up, /*bias=*/false);
  if (kernel == Kernel::kCublas || gate_up.size(0) % 2 != 0) return {};
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = gate_up.size(0), K = gate_up.size(1), M = x.numel() / K;
  auto y = output_like(x, N / 2);
  if (kernel == Kernel::kGemv)
    kernels::gemv_bf16(gate_up.data_ptr(), x.data_ptr(), y.data_ptr(), N, K, /*swiglu=*/true, on_stream(warm, M));
  else
    kernels::skinny_gemm_bf16(gate_up.data_ptr(), x.data_ptr(), K, nullptr, y.data_ptr(), N / 2, M, N, K,
                              /*swiglu=*/true, on_stream(warm, M));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

namespace {

// Rows and alignment the fused projections take: 9-16 contiguous bf16 rows of K % 32 == 0.
bool fusable_rows(const torch::Tensor& t) {
  return bf16_cuda({&t}) && t.dim() == 2 && t.is_contiguous() && aligned16(t.data_ptr()) &&
         t.size(0) >= kernels::kSkinnyTmaMinRows && t.size(0) <= kernels::kSkinnyMaxRows && t.size(1) % 32 == 0;
}

bool fusable_weight(const torch::Tensor& w, int64_t k, const torch::Tensor& bias, const torch::Device& on) {
  return bf16_cuda({&w}) && w.device() == on && w.dim() == 2 && w.is_contiguous() && aligned16(w.data_ptr()) &&
         w.size(1) == k &&
         (!bias.defined() || (bf16_cuda({&bias}) && bias.is_contiguous() && bias.numel() == w.size(0)));
}

// Partial sums of squares for `parts` parts: 16 rows (the kernel copies them whole).
torch::Tensor partial_buffer(int64_t parts, const torch::Tensor& like) {
  return torch::empty({16, kernels::norm_fusion_stride(parts)}, like.options().dtype(torch::kFloat));
}

bool gain_of(const torch::Tensor& gain, int64_t cols, const torch::Tensor& like) {
  return bf16_cuda({&gain}) && gain.device() == like.device() && gain.is_contiguous() && aligned16(gain.data_ptr()) &&
         gain.numel() == cols;
}

}  // namespace

bool norm_fusion_fits(int64_t hidden) { return kernels::norm_fusion_parts(hidden) <= kernels::kNormMaxParts; }

NormedInput rms_partials(const torch::Tensor& h, const torch::Tensor& gain, double eps) {
  if (!norm_fusion() || !fusable_rows(h) || !gain_of(gain, h.size(1), h)) return {};
  c10::cuda::CUDAGuard guard(h.device());
  NormedInput r{torch::empty_like(h), partial_buffer(1, h), 1, eps};
  kernels::rms_partials_bf16(h.data_ptr(), gain.data_ptr(), r.scaled.data_ptr(), r.partial.data_ptr<float>(),
                             h.size(0), h.size(1), on_stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
}

NormedInput residual_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                            torch::Tensor& resid, const torch::Tensor& gain, double eps, const torch::Tensor& warm) {
  if (!norm_fusion() || !fusable_rows(x) || !fusable_weight(w, x.size(1), bias, x.device()) || !fusable_rows(resid) ||
      resid.device() != x.device() || resid.size(0) != x.size(0) || resid.size(1) != w.size(0) ||
      !gain_of(gain, w.size(0), x))
    return {};
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
  const int64_t parts = kernels::norm_fusion_parts(N);
  if (parts > kernels::kNormMaxParts) return {};
  NormedInput r{torch::empty_like(resid), partial_buffer(parts, x), parts, eps};
  kernels::NormFusion fuse;
  fuse.partial_out = r.partial.data_ptr<float>();
  fuse.gain = gain.data_ptr();
  fuse.scaled = r.scaled.data_ptr();
  if (!kernels::skinny_gemm_fused_bf16(w.data_ptr(), x.data_ptr(), K, bias.defined() ? bias.data_ptr() : nullptr,
                                       resid.data_ptr(), N, M, N, K, /*swiglu=*/false, fuse, on_stream(warm, M)))
    return {};
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
}

torch::Tensor normed_linear(const NormedInput& in, const torch::Tensor& w, const torch::Tensor& bias, bool swiglu,
                            const torch::Tensor& warm) {
  const auto& x = in.scaled;
  if (!norm_fusion() || !in.defined() || !fusable_rows(x) || !fusable_weight(w, x.size(1), bias, x.device()) ||
      (swiglu && (bias.defined() || w.size(0) % 2 != 0)) || in.parts < 1 || in.parts > kernels::kNormMaxParts ||
      !in.partial.is_cuda() || in.partial.device() != x.device() || in.partial.scalar_type() != torch::kFloat ||
      !in.partial.is_contiguous() || !aligned16(in.partial.data_ptr()) ||
      in.partial.sizes() != torch::IntArrayRef({16, kernels::norm_fusion_stride(in.parts)}))
    return {};
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1), outs = swiglu ? N / 2 : N;
  auto y = torch::empty({M, outs}, x.options());
  kernels::NormFusion fuse;
  fuse.partial_in = in.partial.data_ptr<float>();
  fuse.parts_in = in.parts;
  fuse.cols = K;
  fuse.eps = static_cast<float>(in.eps);
  if (!kernels::skinny_gemm_fused_bf16(w.data_ptr(), x.data_ptr(), K, bias.defined() ? bias.data_ptr() : nullptr,
                                       y.data_ptr(), outs, M, N, K, swiglu, fuse, on_stream(warm, M)))
    return {};
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

namespace {

bool long_vector(const torch::Tensor& t, const torch::Device& on, int64_t n) {
  return t.defined() && t.device() == on && t.scalar_type() == torch::kLong && t.is_contiguous() && t.numel() == n;
}

// The kernels' view of where `rows` rows begin a step (kernels::NextStepBegin), or false where
// the tensors do not fit it: embed [V, H] bf16 (H % 8 == 0, 16-byte aligned), inv_freq
// [dim / 2] fp32, key_mask [rows, capacity] bool, `into` [rows, H] and [rows, dim] bf16.
bool begin_args(const torch::Tensor& embed, const torch::Tensor& inv_freq, const torch::Tensor& key_mask,
                int64_t rows, int64_t dim, const StepBegin& into, kernels::NextStepBegin& at) {
  if (!enabled() || !bf16_cuda({&embed}) || embed.dim() != 2 || !embed.is_contiguous() || embed.size(1) % 8 != 0 ||
      !aligned16(embed.data_ptr()) || dim % 2 != 0)
    return false;
  const auto on = embed.device();
  const int64_t H = embed.size(1);
  auto bf16_rows = [&](const torch::Tensor& t, int64_t cols) {
    return t.defined() && t.device() == on && t.scalar_type() == torch::kBFloat16 && t.is_contiguous() &&
           t.sizes() == torch::IntArrayRef({rows, cols}) && aligned16(t.data_ptr());
  };
  if (inv_freq.device() != on || inv_freq.scalar_type() != torch::kFloat || !inv_freq.is_contiguous() ||
      inv_freq.numel() != dim / 2 || key_mask.device() != on || key_mask.scalar_type() != torch::kBool ||
      !key_mask.is_contiguous() || key_mask.dim() != 2 || key_mask.size(0) != rows || !bf16_rows(into.embeds, H) ||
      !bf16_rows(into.cos, dim) || !bf16_rows(into.sin, dim))
    return false;
  at = {embed.data_ptr(), H, inv_freq.data_ptr<float>(), dim, key_mask.data_ptr<bool>(), key_mask.size(1),
        into.embeds.data_ptr(), into.cos.data_ptr(), into.sin.data_ptr()};
  return true;
}

}  // namespace

StepBegin step_begin(const torch::Tensor& tokens, const torch::Tensor& embed, const torch::Tensor& positions,
                     const torch::Tensor& inv_freq, const torch::Tensor& slot, torch::Tensor& key_mask, int64_t dim) {
  if (!embed.defined() || !embed.is_cuda() || embed.dim() != 2) return {};
  const auto on = embed.device();
  const int64_t B = tokens.numel();
  if (!long_vector(tokens, on, B) || !long_vector(positions, on, B) || !long_vector(slot, on, 1)) return {};
  auto options = embed.options();
  StepBegin r{torch::empty({B, embed.size(-1)}, options), torch::empty({B, dim}, options),
              torch::empty({B, dim}, options)};
  kernels::NextStepBegin at;
  if (!begin_args(embed, inv_freq, key_mask, B, dim, r, at)) return {};
  c10::cuda::CUDAGuard guard(on);
  kernels::decode_step_begin(tokens.data_ptr<int64_t>(), positions.data_ptr<int64_t>(), slot.data_ptr<int64_t>(), at, B,
                             c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
}

bool step_end(torch::Tensor& positions, torch::Tensor& slot) {
  if (!enabled() || !positions.is_cuda() || positions.scalar_type() != torch::kLong || !positions.is_contiguous() ||
      slot.device() != positions.device() || slot.scalar_type() != torch::kLong || slot.numel() != 1)
    return false;
  c10::cuda::CUDAGuard guard(positions.device());
  kernels::decode_step_end(positions.data_ptr<int64_t>(), positions.numel(), slot.data_ptr<int64_t>(),
                           c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

namespace {

// The checks both greedy picks share: logits [B, V] (fp32, or bf16 where bf16_ok) and the
// bookkeeping tensors on their device.
bool pickable(const torch::Tensor& logits, const torch::Tensor& seen, const torch::Tensor& eos,
              const torch::Tensor& finished, bool bf16_ok) {
  const auto dtype = logits.scalar_type();
  if (!enabled() || !logits.is_cuda() || !(dtype == torch::kFloat || (bf16_ok && dtype == torch::kBFloat16)) ||
      logits.dim() != 2 || !logits.is_contiguous() || logits.size(1) == 0)
    return false;
  const auto on = logits.device();
  const int64_t B = logits.size(0);
  return !(seen.defined() && (seen.device() != on || seen.scalar_type() != torch::kBool || !seen.is_contiguous() ||
                              seen.sizes() != logits.sizes())) &&
         long_vector(eos, on, eos.numel()) && finished.device() == on && finished.scalar_type() == torch::kBool &&
         finished.is_contiguous() && finished.numel() == B;
}

void launch_pick(const torch::Tensor& logits, const torch::Tensor& seen, double penalty, const torch::Tensor& eos,
                 torch::Tensor& next, int64_t* out, int64_t out_stride, torch::Tensor& finished,
                 const kernels::StepAdvance& advance) {
  c10::cuda::CUDAGuard guard(logits.device());
  kernels::greedy_pick(logits.data_ptr(), logits.scalar_type() == torch::kBFloat16, logits.size(0), logits.size(1),
                       seen.defined() ? seen.data_ptr<bool>() : nullptr, static_cast<float>(penalty),
                       eos.data_ptr<int64_t>(), eos.numel(), next.data_ptr<int64_t>(), out, out_stride,
                       finished.data_ptr<bool>(), advance, on_stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

torch::Tensor greedy_pick(const torch::Tensor& logits, const torch::Tensor& seen, double penalty,
                          const torch::Tensor& eos, torch::Tensor& out_column, torch::Tensor& finished) {
  if (!pickable(logits, seen, eos, finished, /*bf16_ok=*/false) || out_column.device() != logits.device() ||
      out_column.scalar_type() != torch::kLong || out_column.dim() != 1 || out_column.size(0) != logits.size(0))
    return {};
  auto next = torch::empty({logits.size(0)}, logits.options().dtype(torch::kLong));
  launch_pick(logits, seen, penalty, eos, next, out_column.data_ptr<int64_t>(), out_column.stride(0), finished, {});
  return next;
}

bool greedy_step_pick(const torch::Tensor& logits, const torch::Tensor& seen, double penalty, const torch::Tensor& eos,
                      torch::Tensor& next, torch::Tensor& out, int64_t slot_base, torch::Tensor& finished,
                      torch::Tensor& positions, torch::Tensor& slot, torch::Tensor& ticket,
                      const NextBegin* next_begin) {
  if (!pickable(logits, seen, eos, finished, /*bf16_ok=*/true)) return false;
  const auto on = logits.device();
  const int64_t B = logits.size(0);
  if (!long_vector(next, on, B) || !long_vector(positions, on, B) || !long_vector(slot, on, 1) ||
      out.device() != on || out.scalar_type() != torch::kLong || out.dim() != 2 || out.size(0) != B ||
      out.stride(1) != 1 || !ticket.defined() || ticket.device() != on || ticket.scalar_type() != torch::kInt ||
      ticket.numel() != 1)
    return false;
  kernels::StepAdvance advance{positions.data_ptr<int64_t>(), slot.data_ptr<int64_t>(), slot_base, out.size(1),
                               ticket.data_ptr<int>()};
  if (next_begin && !begin_args(next_begin->embed, next_begin->inv_freq, next_begin->key_mask, B,
                                next_begin->into.cos.defined() ? next_begin->into.cos.size(-1) : 0,
                                next_begin->into, advance.begin))
    return false;
  launch_pick(logits, seen, penalty, eos, next, out.data_ptr<int64_t>(), out.stride(0), finished, advance);
  return true;
}

#else

torch::Tensor greedy_pick(const torch::Tensor&, const torch::Tensor&, double, const torch::Tensor&, torch::Tensor&,
                          torch::Tensor&) {
  return {};
}
bool greedy_step_pick(const torch::Tensor&, const torch::Tensor&, double, const torch::Tensor&, torch::Tensor&,
                      torch::Tensor&, int64_t, torch::Tensor&, torch::Tensor&, torch::Tensor&, torch::Tensor&,
                      const NextBegin*) {
  return false;
}
StepBegin step_begin(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                     const torch::Tensor&, torch::Tensor&, int64_t) {
  return {};
}
bool step_end(torch::Tensor&, torch::Tensor&) { return false; }
bool norm_fusion_fits(int64_t) { return false; }
NormedInput rms_partials(const torch::Tensor&, const torch::Tensor&, double) { return {}; }
NormedInput residual_linear(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, torch::Tensor&,
                            const torch::Tensor&, double, const torch::Tensor&) {
  return {};
}
torch::Tensor normed_linear(const NormedInput&, const torch::Tensor&, const torch::Tensor&, bool,
                            const torch::Tensor&) {
  return {};
}
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor&, const torch::Tensor&,
                                                     const torch::Tensor&, double) {
  return {};
}
torch::Tensor attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                        const torch::Tensor&, double, const torch::Tensor&, const torch::Tensor&) {
  return {};
}
torch::Tensor rope_attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, torch::Tensor&,
                             torch::Tensor&, const torch::Tensor&, const torch::Tensor&, int64_t, double,
                             const torch::Tensor&, const torch::Tensor&) {
  return {};
}
bool attention_supports(int64_t) { return false; }
AttentionPlan attention_plan(int64_t, int64_t, int64_t, int64_t) { return {}; }
bool tma_projection() { return false; }
bool tma_fed_rows(int64_t) { return false; }
bool warms_l2(int64_t) { return false; }
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias, const torch::Tensor&) {
  return torch::linear(x, w, bias);
}
torch::Tensor swiglu_linear(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) { return {}; }

#endif

}  // namespace gmsa::decode_ops
