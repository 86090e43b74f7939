#pragma once
// AdamW over named fp32 master weights, and gradient clipping.
//
// Semantics follow torch.optim.AdamW (amsgrad off, maximize off): for a parameter p with
// gradient g at update t (1-based, one global count):
//   p   *= 1 - lr * weight_decay                       (decoupled decay, only if decays(name))
//   m    = beta1 * m + (1 - beta1) * g
//   v    = beta2 * v + (1 - beta2) * g * g
//   p   -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Differences from torch: the step count t is one counter for all parameters (torch keeps one
// per parameter). They agree whenever every parameter has a gradient at every step; a parameter
// whose grad() is undefined is skipped entirely (no decay, no moment update), and when it comes
// back its bias correction uses the global t.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gmsa {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  // Parameters must be distinct names, defined floating-point leaf tensors (fp32 master
  // weights). Moments are allocated as zeros of the same dtype and device.
  AdamW(NamedTensors params, AdamWOptions options);

  // One update with learning rate `lr` for every parameter that has a gradient. On CUDA with
  // LibTorch >= 2.1 and fp32 contiguous tensors this is the fused multi-tensor kernel;
  // otherwise the _foreach_ ops (a multi-tensor loop on CUDA, a plain loop on CPU). Every call
  // advances step_count() by one, even if no parameter has a gradient.
  void step(double lr);
  // The same update, made conditional on `skip`, a 0-dim fp32 tensor: 1.0 = the step is bad
  // (non-finite loss or gradients): nothing changes (parameters, moments, step_count());
  // 0.0 = exactly step(lr). Other values are an error. Without host synchronisation where the
  // update is the fused CUDA kernel (LibTorch >= 2.1, every parameter with a gradient fusable
  // and on skip's device): skip is the kernel's found_inf, and the step counter the kernel reads
  // for the bias correction is advanced by 1 - skip on the device. Otherwise (CPU, foreach path)
  // skip is read on the host (free on the CPU) and step(lr) runs when it is 0.
  void step(double lr, const torch::Tensor& skip);
  // Drops the gradients (grad() becomes undefined), like set_to_none=True.
  void zero_grad();
  // Updates made so far. After step(lr, skip) on the fused path the count lives on the device:
  // the first call afterwards reads it (one host synchronisation) and caches it, so call it
  // where a sync is acceptable (checkpoints, logs), not inside a training step.
  int64_t step_count() const;

  // The moments, named "exp_avg/<param>" and "exp_avg_sq/<param>" (live tensors, not copies).
  NamedTensors state_tensors() const;
  // Copies moments saved by state_tensors() into this optimizer. Every parameter's two entries
  // must be present with matching shapes; an entry under either prefix that names no parameter
  // is an error too; names under other prefixes are ignored (so a checkpoint file may hold more).
  void load_state(const NamedTensors& state, int64_t step_count);

  // Weight decay applies to a parameter iff its name does not contain "norm", does not end with
  // "bias", and it has at least 2 dimensions (matrices and embeddings; not norms, biases,
  // scalar gates).
  bool decays(const std::string& name) const;
  static bool decays_by_rule(const std::string& name, int64_t dim);

  const NamedTensors& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  // The tensors of one update: parameters with a gradient, one weight decay.
  struct Group {
    std::vector<size_t> idx;
    std::vector<torch::Tensor> p, g, m, v;
    double weight_decay = 0;
  };
  std::vector<Group> groups() const;  // non-empty groups only
  void update_group(Group& group, double lr);
  // found_inf: undefined, or the 0-dim fp32 skip flag on the parameters' device.
  void update_fused(Group& group, double lr, const torch::Tensor& found_inf);
  void update_foreach(Group& group, double lr) const;
  // The fused kernels' step tensors on `device`, holding the host count unless the device is
  // ahead. Makes the host count current first if the counter has to move to another device.
  torch::Tensor& device_steps(torch::Device device);
  // Brings step_count_ up to date from the device counter (one read) if the device is ahead.
  void sync_step_count() const;

  NamedTensors params_;
  AdamWOptions options_;
  std::vector<Slot> slots_;
  // The host count; while device_ahead_, fused_steps_ holds the true count instead (advanced
  // on the device by step(lr, skip)) and step_count() reads it lazily.
  mutable int64_t step_count_ = 0;
  mutable bool device_ahead_ = false;
  // Fused path only: max(1, #parameters) fp32 elements on the CUDA device, one step tensor per
  // parameter, all holding the same count: fused_steps_value_ (refreshed when step_count_ moves
  // on), or the true count while device_ahead_.
  torch::Tensor fused_steps_;
  mutable int64_t fused_steps_value_ = -1;
};

// All parameters that require grad, with their dotted module paths as names.
NamedTensors trainable_parameters(const torch::nn::Module& module);

// Global L2 norm of all defined gradients (each computed in fp32, no host synchronisation:
// a 0-dim fp32 tensor on the first gradient's device; a CPU zero if there is none). If
// max_norm > 0, every gradient is then multiplied by min(1, max_norm / (norm + 1e-6)), as
// torch.nn.utils.clip_grad_norm_ does (a non-finite norm makes the gradients non-finite too).
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);
torch::Tensor clip_grad_norm(const NamedTensors& params, double max_norm);

// True iff every defined gradient is free of inf and NaN (one host synchronisation).
bool grads_finite(const std::vector<torch::Tensor>& params);

}  // namespace gmsa
