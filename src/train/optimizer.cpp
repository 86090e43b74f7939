#include "gmsa/train/optimizer.h"

#include <cmath>
#include <set>
#include <unordered_map>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa {

namespace {

const char* kExpAvg = "exp_avg/";
const char* kExpAvgSq = "exp_avg_sq/";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

#if GMSA_TORCH_AT_LEAST(2, 1)
// The fused kernel reads raw fp32 buffers of one device; anything else takes the foreach path.
bool fusable(const std::vector<torch::Tensor>& p, const std::vector<torch::Tensor>& g) {
  if (p.empty() || !p[0].is_cuda()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    for (const auto* t : {&p[i], &g[i]}) {
      if (t->device() != p[0].device() || t->scalar_type() != torch::kFloat ||
          !t->is_contiguous())
        return false;
    }
  }
  return true;
}
#endif

}  // namespace

bool AdamW::decays_by_rule(const std::string& name, int64_t dim) {
  return name.find("norm") == std::string::npos && !ends_with(name, "bias") && dim >= 2;
}

AdamW::AdamW(NamedTensors params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  GMSA_CHECK(options_.beta1 >= 0 && options_.beta1 < 1, "AdamW: beta1 {} is not in [0, 1)",
             options_.beta1);
  GMSA_CHECK(options_.beta2 >= 0 && options_.beta2 < 1, "AdamW: beta2 {} is not in [0, 1)",
             options_.beta2);
  GMSA_CHECK(options_.eps >= 0, "AdamW: eps {} is negative", options_.eps);
  GMSA_CHECK(options_.weight_decay >= 0, "AdamW: weight_decay {} is negative",
             options_.weight_decay);
  std::set<std::string> seen;
  for (const auto& [name, p] : params_) {
    GMSA_CHECK(seen.insert(name).second, "AdamW: parameter '{}' is given twice", name);
    GMSA_CHECK(p.defined(), "AdamW: parameter '{}' is undefined", name);
    GMSA_CHECK(p.is_floating_point(), "AdamW: parameter '{}' is not floating point", name);
    torch::NoGradGuard no_grad;
    slots_.push_back({name, p, torch::zeros_like(p, torch::MemoryFormat::Contiguous),
                      torch::zeros_like(p, torch::MemoryFormat::Contiguous),
                      decays_by_rule(name, p.dim())});
  }
}

bool AdamW::decays(const std::string& name) const {
  for (const auto& s : slots_)
    if (s.name == name) return s.decay;
  fail("AdamW: no parameter named '{}'", name);
}

std::vector<AdamW::Group> AdamW::groups() const {
  Group with_decay, without_decay;
  with_decay.weight_decay = options_.weight_decay;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    torch::Tensor grad = s.param.grad();
    if (!grad.defined()) continue;
    GMSA_CHECK(grad.device() == s.param.device(), "AdamW: gradient of '{}' is on {}, the "
               "parameter on {}", s.name, grad.device().str(), s.param.device().str());
    Group& group = s.decay && options_.weight_decay != 0 ? with_decay : without_decay;
    group.idx.push_back(i);
    group.p.push_back(s.param);
    group.g.push_back(grad.scalar_type() == s.param.scalar_type() ? grad : grad.to(s.param.scalar_type()));
    group.m.push_back(s.exp_avg);
    group.v.push_back(s.exp_avg_sq);
  }
  std::vector<Group> out;
  for (Group* group : {&with_decay, &without_decay})
    if (!group->idx.empty()) out.push_back(std::move(*group));
  return out;
}

void AdamW::step(double lr) {
  sync_step_count();
  ++step_count_;
  torch::NoGradGuard no_grad;
  auto gs = groups();
  for (auto& group : gs) update_group(group, lr);
}

void AdamW::step(double lr, const torch::Tensor& skip) {
  GMSA_CHECK(skip.defined() && skip.dim() == 0 && skip.scalar_type() == torch::kFloat,
             "AdamW: the skip flag must be a 0-dim fp32 tensor");
#if GMSA_TORCH_AT_LEAST(2, 1)
  if (skip.is_cuda()) {
    torch::NoGradGuard no_grad;
    auto gs = groups();
    bool all_fusable = true;
    for (const auto& group : gs)
      all_fusable = all_fusable && fusable(group.p, group.g) && group.p[0].device() == skip.device();
    if (all_fusable) {
      // No host read: the kernel returns at once where *skip == 1 (found_inf), and it reads
      // the step tensors for the bias correction, so they advance by 1 - skip beforehand.
      torch::Tensor& steps = device_steps(skip.device());
      steps.sub_(skip).add_(1);
      device_ahead_ = true;
      for (auto& group : gs) update_fused(group, lr, skip);
      return;
    }
  }
#endif
  const float flag = skip.item<float>();  // free on the CPU; one sync on the foreach path on CUDA
  GMSA_CHECK(flag == 0.0f || flag == 1.0f, "AdamW: the skip flag is {}, not 0 or 1", flag);
  if (flag == 0.0f) step(lr);
}

int64_t AdamW::step_count() const {
  sync_step_count();
  return step_count_;
}

void AdamW::sync_step_count() const {
  if (!device_ahead_) return;
  // fp32 holds every count up to 2^24 exactly.
  step_count_ = static_cast<int64_t>(fused_steps_[0].item<float>());
  fused_steps_value_ = step_count_;
  device_ahead_ = false;
}

torch::Tensor& AdamW::device_steps(torch::Device device) {
  if (!fused_steps_.defined() || fused_steps_.device() != device) {
    sync_step_count();
    fused_steps_ = torch::empty({std::max<int64_t>(1, static_cast<int64_t>(slots_.size()))},
                                torch::TensorOptions().dtype(torch::kFloat).device(device));
    fused_steps_value_ = -1;
  }
  if (!device_ahead_ && fused_steps_value_ != step_count_) {
    fused_steps_.fill_(static_cast<double>(step_count_));
    fused_steps_value_ = step_count_;
  }
  return fused_steps_;
}

void AdamW::update_group(Group& group, double lr) {
#if GMSA_TORCH_AT_LEAST(2, 1)
  if (fusable(group.p, group.g)) {
    update_fused(group, lr, torch::Tensor());
    return;
  }
#endif
  update_foreach(group, lr);
}

void AdamW::update_foreach(Group& group, double lr) const {
  auto& [idx, p, g, m, v, weight_decay] = group;
  const double t = static_cast<double>(step_count_);
  const double bc1 = 1 - std::pow(options_.beta1, t);
  const double bc2 = 1 - std::pow(options_.beta2, t);
  if (weight_decay != 0) at::_foreach_mul_(p, 1 - lr * weight_decay);
  at::_foreach_mul_(m, options_.beta1);
  at::_foreach_add_(m, g, 1 - options_.beta1);
  at::_foreach_mul_(v, options_.beta2);
  at::_foreach_addcmul_(v, g, g, 1 - options_.beta2);
  // denom = sqrt(v) / sqrt(bc2) + eps: eps after the bias correction, as torch does.
  std::vector<torch::Tensor> denom = at::_foreach_sqrt(v);
  at::_foreach_div_(denom, std::sqrt(bc2));
  at::_foreach_add_(denom, options_.eps);
  at::_foreach_addcdiv_(p, m, denom, -lr / bc1);
}

#if GMSA_TORCH_AT_LEAST(2, 1)
void AdamW::update_fused(Group& group, double lr, const torch::Tensor& found_inf) {
  // The kernel takes one fp32 step tensor per parameter and reads it (the Python wrapper
  // increments it beforehand). Ours all hold the global count: one buffer, one view each.
  torch::Tensor& buffer = device_steps(group.p[0].device());
  std::vector<torch::Tensor> steps;
  for (size_t i : group.idx) steps.push_back(buffer[static_cast<int64_t>(i)]);
  // No grad_scale: fp32 master weights need no loss scaling. found_inf (when given) is the
  // skip flag: the kernel leaves everything untouched when it is exactly 1.
  if (found_inf.defined()) {
    at::_fused_adamw_(group.p, group.g, group.m, group.v, /*max_exp_avg_sqs=*/{}, steps, lr,
                      options_.beta1, options_.beta2, group.weight_decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/{}, found_inf);
  } else {
    at::_fused_adamw_(group.p, group.g, group.m, group.v, /*max_exp_avg_sqs=*/{}, steps, lr,
                      options_.beta1, options_.beta2, group.weight_decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
}
#endif

void AdamW::zero_grad() {
  for (auto& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad() = torch::Tensor();
}

NamedTensors AdamW::state_tensors() const {
  NamedTensors out;
  for (const auto& s : slots_) out.emplace_back(kExpAvg + s.name, s.exp_avg);
  for (const auto& s : slots_) out.emplace_back(kExpAvgSq + s.name, s.exp_avg_sq);
  return out;
}

void AdamW::load_state(const NamedTensors& state, int64_t step_count) {
  GMSA_CHECK(step_count >= 0, "AdamW: step count {} is negative", step_count);
  std::unordered_map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : state) by_name[name] = &t;
  std::set<std::string> expected;
  for (const auto& s : slots_) {
    expected.insert(kExpAvg + s.name);
    expected.insert(kExpAvgSq + s.name);
  }
  for (const auto& [name, t] : state) {
    bool ours = starts_with(name, kExpAvg) || starts_with(name, kExpAvgSq);
    GMSA_CHECK(!ours || expected.count(name), "AdamW state: '{}' names no parameter", name);
  }
  // Validate everything before copying anything, so a bad file leaves the optimizer untouched.
  auto find = [&](const std::string& key, const torch::Tensor& like) -> const torch::Tensor& {
    auto it = by_name.find(key);
    GMSA_CHECK(it != by_name.end(), "AdamW state: '{}' is missing", key);
    GMSA_CHECK(it->second->defined() && it->second->sizes() == like.sizes(),
               "AdamW state: '{}' has shape {}, expected {}", key,
               it->second->defined() ? compat::shape_str(it->second->sizes()) : "undefined",
               compat::shape_str(like.sizes()));
    return *it->second;
  };
  for (const auto& s : slots_) {
    find(kExpAvg + s.name, s.exp_avg);
    find(kExpAvgSq + s.name, s.exp_avg_sq);
  }
  torch::NoGradGuard no_grad;
  for (auto& s : slots_) {
    s.exp_avg.copy_(find(kExpAvg + s.name, s.exp_avg));
    s.exp_avg_sq.copy_(find(kExpAvgSq + s.name, s.exp_avg_sq));
  }
  step_count_ = step_count;
  device_ahead_ = false;   // the loaded count replaces the device's
  fused_steps_value_ = -1; // refill the step tensors before the next fused update
}

NamedTensors trainable_parameters(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

namespace {

std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

// Per-gradient L2 norms in fp32 on `device`: one multi-tensor kernel when all are fp32 on it.
std::vector<torch::Tensor> grad_norms(const std::vector<torch::Tensor>& grads,
                                      const torch::Device& device) {
  bool uniform = true;
  for (const auto& g : grads)
    uniform = uniform && g.device() == device && g.scalar_type() == torch::kFloat;
  if (uniform) return at::_foreach_norm(grads, 2);
  std::vector<torch::Tensor> norms;
  for (const auto& g : grads)
    norms.push_back(g.to(torch::kFloat).norm().to(device));
  return norms;
}

}  // namespace

torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads = defined_grads(params);
  if (grads.empty()) return torch::zeros({}, torch::kFloat);
  torch::NoGradGuard no_grad;
  const torch::Device device = grads[0].device();
  torch::Tensor total = torch::stack(grad_norms(grads, device)).norm();
  if (max_norm > 0) {
    torch::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (auto& g : grads) g.mul_(coef.to(g.device()));
  }
  return total;
}

torch::Tensor clip_grad_norm(const NamedTensors& params, double max_norm) {
  std::vector<torch::Tensor> tensors;
  for (const auto& [name, p] : params) tensors.push_back(p);
  return clip_grad_norm(tensors, max_norm);
}

bool grads_finite(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads = defined_grads(params);
  if (grads.empty()) return true;
  torch::NoGradGuard no_grad;
  torch::Tensor ok = torch::isfinite(grads[0]).all();
  for (size_t i = 1; i < grads.size(); ++i)
    ok = ok.logical_and(torch::isfinite(grads[i]).all().to(ok.device()));
  return ok.item<bool>();
}

}  // namespace gmsa
