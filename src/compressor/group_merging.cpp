#include "gmsa/compressor/group_merging.h"

#include <algorithm>

#include "gmsa/model/compat.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/util/error.h"

namespace gmsa {

torch::Tensor soft_token_counts(const torch::Tensor& lengths, const torch::Tensor& rates) {
  return torch::div(lengths + rates - 1, rates, "floor");
}

int64_t soft_token_width(const torch::Tensor& counts_host) {
  return counts_host.numel() == 0 ? 1 : std::max<int64_t>(counts_host.max().item<int64_t>(), 1);
}

namespace {

// Rates on the host, validated (a device tensor costs one copy).
torch::Tensor host_rates(const torch::Tensor& rates, int64_t B) {
  GMSA_CHECK(rates.dim() == 1 && rates.size(0) == B, "group_merge: rates must be [{}]", B);
  auto r_host = rates.to(torch::kCPU, torch::kLong);
  GMSA_CHECK((r_host >= 1).all().item<bool>(), "compression rate must be >= 1");
  return r_host;
}

// Real-token counts on the host, validated against the row width T.
torch::Tensor host_lengths_checked(const torch::Tensor& lengths, int64_t B, int64_t T) {
  GMSA_CHECK(lengths.dim() == 1 && lengths.size(0) == B, "group_merge: lengths must be [{}], got {}", B,
             compat::shape_str(lengths.sizes()));
  auto len_host = lengths.to(torch::kCPU, torch::kLong);
  GMSA_CHECK(((len_host >= 0) & (len_host <= T)).all().item<bool>(), "group_merge: lengths must lie in [0, {}]", T);
  return len_host;
}

}  // namespace

SoftTokens group_merge(const torch::Tensor& hidden, const torch::Tensor& mask,
                       const torch::Tensor& rates, const torch::Tensor& host_lengths) {
  GMSA_CHECK(hidden.dim() == 3, "group_merge: hidden must be [B, T, H], got {}",
             compat::shape_str(hidden.sizes()));
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2);
  GMSA_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == T,
             "group_merge: mask must be [{}, {}], got {}", B, T, compat::shape_str(mask.sizes()));
  auto device = hidden.device();
  // Sizes on the host (free when rates and host_lengths are CPU tensors).
  auto r_host = host_rates(rates, B);
  auto valid = mask.to(device).to(torch::kBool);
  auto len_host = host_lengths.defined() ? host_lengths_checked(host_lengths, B, T)
                                         : valid.sum(1).to(torch::kCPU);  // the one device read without them
  auto counts_host = soft_token_counts(len_host, r_host);
  const int64_t M = soft_token_width(counts_host);
  // One host-to-device copy for rates and counts.
  auto rc = compat::to_device_async(torch::stack({r_host, counts_host}), device);
  auto r = rc[0], counts = rc[1];
  // The k-th real token of a row (k counted from 0 over real tokens only) joins group k / r.
  auto rank = valid.to(torch::kLong).cumsum(1) - 1;
  auto group = torch::div(rank, r.unsqueeze(1), "floor");
  // Flat slot b * M + group for real tokens; padding goes to a spare slot that is dropped.
  auto rows = torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(1);
  auto slot = torch::where(valid, rows * M + group, torch::full_like(group, B * M)).view({-1});
  // Sums in fp32 at least (bf16 sums of many states would lose precision).
  const auto acc = hidden.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto sums = torch::zeros({B * M + 1, H}, hidden.options().dtype(acc));
  sums.index_add_(0, slot, hidden.reshape({B * T, H}).to(acc));
  auto sizes = torch::zeros({B * M + 1}, sums.options());
  sizes.index_add_(0, slot, valid.view({-1}).to(acc));
  auto means = sums.narrow(0, 0, B * M) / sizes.narrow(0, 0, B * M).clamp_min(1).unsqueeze(1);
  auto soft_mask = (torch::arange(M, rows.options()).unsqueeze(0) < counts.unsqueeze(1)).to(torch::kLong);
  return {means.view({B, M, H}).to(hidden.scalar_type()), soft_mask, counts_host};
}

SoftTokens group_merge_right_padded(const torch::Tensor& hidden, const torch::Tensor& host_lengths,
                                    const torch::Tensor& rates) {
  GMSA_CHECK(hidden.dim() == 3, "group_merge: hidden must be [B, T, H], got {}", compat::shape_str(hidden.sizes()));
  const int64_t B = hidden.size(0), T = hidden.size(1);
  auto r_host = host_rates(rates, B);
  auto len_host = host_lengths_checked(host_lengths, B, T);
  auto counts_host = soft_token_counts(len_host, r_host);
  const int64_t M = soft_token_width(counts_host);
  // Rates, lengths and counts reach the device in one copy that the host does not wait for.
  auto sizes_host = torch::stack({r_host, len_host, counts_host});
  auto sizes = compat::to_device_async(sizes_host, hidden.device());
  auto embeds = fused::group_mean(hidden, sizes.narrow(0, 0, 2), M);
  if (!embeds.defined()) {  // CPU, fp32, autograd: the general path on the prefix mask
    auto positions = torch::arange(T, sizes.options()).unsqueeze(0);
    return group_merge(hidden, (positions < sizes[1].unsqueeze(1)).to(torch::kLong), r_host, len_host);
  }
  auto soft_mask = (torch::arange(M, sizes.options()).unsqueeze(0) < sizes[2].unsqueeze(1)).to(torch::kLong);
  return {embeds, soft_mask, counts_host};
}

}  // namespace gmsa
