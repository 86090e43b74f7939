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
  // Drops the gradients (grad() becomes undefined), like set_to_none=True.
  void zero_grad();
  int64_t step_count() const { return step_count_; }

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
  void update_group(const std::vector<size_t>& idx, double lr, double weight_decay);
  void update_fused(const std::vector<size_t>& idx, std::vector<torch::Tensor>& p,
                    std::vector<torch::Tensor>& g, std::vector<torch::Tensor>& m,
                    std::vector<torch::Tensor>& v, double lr, double weight_decay);
  void update_foreach(std::vector<torch::Tensor>& p, std::vector<torch::Tensor>& g,
                      std::vector<torch::Tensor>& m, std::vector<torch::Tensor>& v, double lr,
                      double weight_decay) const;

  NamedTensors params_;
  AdamWOptions options_;
  std::vector<Slot> slots_;
  int64_t step_count_ = 0;
  // Fused path only: one fp32 element per parameter on the CUDA device, all holding
  // fused_steps_value_ (refreshed when step_count_ moves on).
  torch::Tensor fused_steps_;
  int64_t fused_steps_value_ = -1;
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
