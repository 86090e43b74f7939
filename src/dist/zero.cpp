#include "gmsa/dist/zero.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <unordered_map>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa::dist {

namespace {

const std::string kExpAvg = "exp_avg/";
const std::string kExpAvgSq = "exp_avg_sq/";

std::vector<int64_t> owners(const NamedTensors& params, int64_t world) {
  std::set<std::string> seen;
  std::vector<int64_t> numels;
  for (const auto& [name, p] : params) {
    GMSA_CHECK(seen.insert(name).second, "ZeroAdamW: parameter '{}' is given twice", name);
    GMSA_CHECK(p.defined(), "ZeroAdamW: parameter '{}' is undefined", name);
    numels.push_back(p.numel());
  }
  return ZeroAdamW::partition(numels, world);
}

NamedTensors owned_by(const NamedTensors& params, const std::vector<int64_t>& owner, int64_t rank) {
  NamedTensors out;
  for (size_t i = 0; i < params.size(); ++i)
    if (owner[i] == rank) out.push_back(params[i]);
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::vector<int64_t> ZeroAdamW::partition(const std::vector<int64_t>& numels, int64_t world) {
  GMSA_CHECK(world >= 1, "ZeroAdamW: world size {} < 1", world);
  std::vector<size_t> order(numels.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(world, 0), owner(numels.size(), 0);
  for (size_t i : order) {
    const int64_t r = std::min_element(load.begin(), load.end()) - load.begin();  // first minimum
    owner[i] = r;
    load[r] += numels[i];
  }
  return owner;
}

ZeroAdamW::ZeroAdamW(ProcessGroup& pg, NamedTensors params, AdamWOptions options, bool shard)
    : pg_(pg),
      shard_(shard && pg.distributed()),
      params_(std::move(params)),
      owner_(owners(params_, shard_ ? pg.world_size() : 1)),
      local_(owned_by(params_, owner_, shard_ ? pg.rank() : 0), options) {}

bool ZeroAdamW::decays(const std::string& name) const {
  for (const auto& [n, p] : params_)
    if (n == name) return AdamW::decays_by_rule(n, p.dim());
  fail("ZeroAdamW: no parameter named '{}'", name);
}

void ZeroAdamW::step(double lr) {
  local_.step(lr);
  broadcast_params();
}

void ZeroAdamW::step(double lr, const torch::Tensor& skip) {
  local_.step(lr, skip);
  // A skipped step changed nothing: no broadcast needed where the flag is free to read.
  if (skip.is_cpu() && skip.item<float>() == 1.0f) return;
  broadcast_params();
}

void ZeroAdamW::broadcast_params() {
  if (!shard_) return;
  // One in-place broadcast per parameter, all in flight together: no staging buffer.
  std::vector<PendingOp> ops;
  for (size_t i = 0; i < params_.size(); ++i)
    ops.push_back(pg_.broadcast_async({params_[i].second.detach()}, owner_[i],
                                      "ZeRO-1 parameter broadcast of '" + params_[i].first + "'"));
  for (auto& op : ops) op.wait();
}

void ZeroAdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

NamedTensors ZeroAdamW::state_tensors() {
  if (!shard_) return local_.state_tensors();
  std::unordered_map<std::string, torch::Tensor> mine;
  for (auto& [name, t] : local_.state_tensors()) mine[name] = t;
  NamedTensors out;
  torch::NoGradGuard no_grad;
  for (const std::string& prefix : {kExpAvg, kExpAvgSq}) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string name = prefix + params_[i].first;
      const bool own = owner_[i] == pg_.rank();
      torch::Tensor t = own ? mine.at(name)
                            : torch::empty_like(params_[i].second, torch::MemoryFormat::Contiguous);
      // One tensor at a time: no rank ever holds more than its shard plus one tensor on device.
      pg_.broadcast({t}, owner_[i], "gather of optimizer state '" + name + "'");
      if (pg_.is_main()) out.emplace_back(name, own ? t : t.cpu());
    }
  }
  return out;
}

void ZeroAdamW::load_state(const NamedTensors& state, int64_t step_count) {
  std::unordered_map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : state) by_name[name] = &t;
  std::set<std::string> expected;
  for (const auto& [name, p] : params_) {
    expected.insert(kExpAvg + name);
    expected.insert(kExpAvgSq + name);
  }
  for (const auto& [name, t] : state) {
    const bool ours = starts_with(name, kExpAvg) || starts_with(name, kExpAvgSq);
    GMSA_CHECK(!ours || expected.count(name), "ZeroAdamW state: '{}' names no parameter", name);
  }
  // Every rank checks the whole state, so a bad file stops all ranks alike.
  NamedTensors shard;
  for (const std::string& prefix : {kExpAvg, kExpAvgSq}) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string key = prefix + params_[i].first;
      auto it = by_name.find(key);
      GMSA_CHECK(it != by_name.end(), "ZeroAdamW state: '{}' is missing", key);
      const torch::Tensor& t = *it->second;
      GMSA_CHECK(t.defined() && t.sizes() == params_[i].second.sizes(), "ZeroAdamW state: '{}' has shape "
                 "{}, expected {}", key, t.defined() ? compat::shape_str(t.sizes()) : "undefined",
                 compat::shape_str(params_[i].second.sizes()));
      if (owner_[i] == (shard_ ? pg_.rank() : 0)) shard.emplace_back(key, t);
    }
  }
  local_.load_state(shard, step_count);
}

}  // namespace gmsa::dist
