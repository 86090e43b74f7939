#pragma once
// Data-parallel gradient synchronisation: after backward every rank holds the SUM over ranks of
// the gradients of the given parameters.
//
// Loss contract (docs/distributed.md): before backward the trainer computes the global number of
// target tokens T = all_reduce_sum_int(local count) and backpropagates local_nll_sum / T on every
// rank. The sum over ranks of those gradients is then exactly the gradient of the mean loss over
// the whole global batch (one large batch), so finish(1.0) is the usual call.
//
// Gradients are packed into flat buckets of about bucket_bytes (parameters taken in reverse
// order, roughly the order backward produces them). With start() before the step's last
// backward, a bucket is all-reduced (asynchronously) as soon as backward has accumulated all its
// gradients, overlapping communication with the rest of backward; buckets always go out in the
// same order on every rank. finish() sends what is left, waits, and leaves each gradient as a
// view into its bucket (no second copy of the gradients stays alive).
//
// A parameter without a gradient on a rank contributes zeros; afterwards its gradient is
// defined on every rank iff some rank had one (so a parameter no rank used stays undefined, as
// in a single-process run, and AdamW skips it everywhere).
//
// Parameters must be contiguous leaf tensors requiring grad on the group's device. Construct
// after any set_data() that changes their dtype or device: that replaces the autograd
// accumulator the hooks sit on (results stay correct, but nothing overlaps: finish() then
// sends every bucket). With a single() group nothing is allocated and finish() only scales.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "gmsa/dist/process_group.h"

namespace torch::autograd {
struct Node;
}

namespace gmsa::dist {

class GradSync {
 public:
  GradSync(ProcessGroup& pg, const std::vector<torch::Tensor>& params,
           int64_t bucket_bytes = int64_t{25} << 20);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Arms the hooks: call right before the last backward of a step (with gradient accumulation,
  // the earlier micro-batches' backward runs unarmed and just accumulates locally).
  void start();
  // After backward: all-reduces what is not in flight yet, waits, multiplies the gradients by
  // `scale`. Throws gmsa::Error (naming the silent rank) on failure or timeout.
  void finish(double scale = 1.0);

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // How many buckets the last finish() found already launched during backward (overlap).
  int64_t launched_during_backward() const { return launched_early_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each parameter's gradient in `flat`
    int64_t numel = 0;             // gradient elements; one presence flag per parameter follows
    torch::Tensor flat;
    size_t ready = 0;  // parameters packed so far this step
    PendingOp op;
  };
  void on_gradient(size_t param);
  void pack(size_t param);
  void launch_in_order();
  torch::Tensor slot(size_t param) const;

  ProcessGroup& pg_;
  std::vector<torch::Tensor> params_;
  std::vector<size_t> bucket_of_, index_in_bucket_;
  std::vector<Bucket> buckets_;
  std::vector<bool> packed_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  int64_t launched_early_ = 0;
  std::mutex mutex_;  // hooks run on autograd's threads
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
};

}  // namespace gmsa::dist
