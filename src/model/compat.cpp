#include "gmsa/model/compat.h"

#include <fmt/format.h>
#include <sys/resource.h>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && GMSA_TORCH_AT_LEAST(2, 0)
#include <c10/cuda/CUDACachingAllocator.h>
#define GMSA_HAVE_CUDA_ALLOCATOR 1
#endif

namespace gmsa::compat {

std::string torch_version_string() {
  std::string s = fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
                              TORCH_VERSION_PATCH);
  s += torch::cuda::is_available() ? fmt::format(" (CUDA, {} devices)", torch::cuda::device_count())
                                   : " (CPU)";
  return s;
}

int64_t cuda_peak_memory(torch::Device device) {
#ifdef GMSA_HAVE_CUDA_ALLOCATOR
  if (device.is_cuda() && torch::cuda::is_available()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[0].peak;
  }
#endif
  return 0;
}

void reset_cuda_peak_memory(torch::Device device) {
#ifdef GMSA_HAVE_CUDA_ALLOCATOR
  if (device.is_cuda() && torch::cuda::is_available())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

int64_t cpu_peak_rss() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

torch::Tensor to_device_async(const torch::Tensor& t, const torch::Device& device) {
  if (!device.is_cuda() || !t.is_cpu()) return t.to(device, /*non_blocking=*/true);
  return t.pin_memory().to(device, /*non_blocking=*/true);  // pinned already: no copy
}

std::string shape_str(c10::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

torch::Tensor rng_state(torch::Device device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Tensor& state, torch::Device device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

static torch::Tensor causal_mask(int64_t tq, int64_t tk, const torch::Device& device) {
  // Query i (of the last tq positions) sees keys 0 .. tk - tq + i.
  auto qi = torch::arange(tq, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(1);
  auto kj = torch::arange(tk, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(0);
  return kj <= qi + (tk - tq);
}

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v, const torch::Tensor& mask, bool causal,
                                  double scale) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)).to(torch::kFloat) * scale;
  torch::Tensor allowed = mask;
  if (!allowed.defined() && causal) allowed = causal_mask(q.size(-2), k.size(-2), q.device());
  if (allowed.defined() && allowed.is_floating_point())
    scores = scores + allowed.to(torch::kFloat);  // additive mask: 0 or -inf
  else if (allowed.defined())
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores, -1);
  // A fully masked row (only padding queries have one) gives NaN; make it 0 instead.
  if (allowed.defined()) probs = torch::nan_to_num(probs, 0.0);
  return torch::matmul(probs.to(v.scalar_type()), v);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, bool causal, double scale) {
#if GMSA_TORCH_AT_LEAST(2, 1)
  if (mask.defined())
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale);
  // is_causal in SDPA is top-left aligned; it matches ours only when tq == tk.
  if (!causal || q.size(-2) == k.size(-2))
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, scale);
  return at::scaled_dot_product_attention(q, k, v, causal_mask(q.size(-2), k.size(-2), q.device()),
                                          0.0, false, scale);
#else
  return attention_reference(q, k, v, mask, causal, scale);
#endif
}

}  // namespace gmsa::compat
