#include "gmsa/dist/grad_sync.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa::dist {

namespace {

// Runs after AccumulateGrad has added this backward's contribution to param.grad(): the same
// mechanism PyTorch's DistributedDataParallel uses (tensor hooks fire before accumulation).
class AfterAccumulation : public torch::autograd::FunctionPostHook {
 public:
  explicit AfterAccumulation(std::function<void()> fn) : fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    fn_();
    return outputs;
  }

 private:
  std::function<void()> fn_;
};

}  // namespace

GradSync::GradSync(ProcessGroup& pg, const std::vector<torch::Tensor>& params, int64_t bucket_bytes)
    : pg_(pg), params_(params) {
  GMSA_CHECK(bucket_bytes > 0, "GradSync: bucket size {} bytes is not positive", bucket_bytes);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    GMSA_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "GradSync: parameter {} is not a leaf "
               "tensor that requires grad", i);
    GMSA_CHECK(p.is_contiguous(), "GradSync: parameter {} (shape {}) is not contiguous", i,
               compat::shape_str(p.sizes()));
  }
  if (!pg_.distributed()) return;
  for (size_t i = 0; i < params_.size(); ++i)
    GMSA_CHECK(params_[i].device() == pg_.device(), "GradSync: parameter {} is on {}, the process group "
               "works on {}", i, params_[i].device().str(), pg_.device().str());
  bucket_of_.resize(params_.size());
  index_in_bucket_.resize(params_.size());
  packed_.assign(params_.size(), false);
  // Reverse order; a bucket holds one dtype and closes once it reaches bucket_bytes.
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const bool fits = !buckets_.empty() &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type() &&
                      buckets_.back().numel * p.element_size() < bucket_bytes;
    if (!fits) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    index_in_bucket_[k] = b.params.size();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
  }
  for (auto& b : buckets_) {
    const auto& first = params_[b.params.front()];
    b.flat = torch::zeros({b.numel + static_cast<int64_t>(b.params.size())},
                          torch::TensorOptions().dtype(first.scalar_type()).device(pg_.device()));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    GMSA_CHECK(acc != nullptr, "GradSync: parameter {} has no gradient accumulator", i);
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<AfterAccumulation>([this, i] { on_gradient(i); })));
    accumulators_.push_back(std::move(acc));  // keeps the node (and our hook) alive across graphs
  }
}

GradSync::~GradSync() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

torch::Tensor GradSync::slot(size_t param) const {
  const Bucket& b = buckets_[bucket_of_[param]];
  const auto& p = params_[param];
  return b.flat.narrow(0, b.offsets[index_in_bucket_[param]], p.numel()).view(p.sizes());
}

void GradSync::start() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = pg_.distributed();
}

void GradSync::on_gradient(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  GMSA_CHECK(!packed_[param], "GradSync: the gradient of parameter {} arrived twice; call start() only "
             "right before the last backward of a step", param);
  pack(param);
  Bucket& b = buckets_[bucket_of_[param]];
  if (++b.ready == b.params.size()) launch_in_order();
}

// Moves the parameter's gradient (or zeros) into its slot and records whether it had one. The
// gradient then becomes the slot itself, so the separately allocated one is freed.
void GradSync::pack(size_t param) {
  torch::NoGradGuard no_grad;
  auto& p = params_[param];
  Bucket& b = buckets_[bucket_of_[param]];
  torch::Tensor s = slot(param);
  const bool has = p.grad().defined();
  if (has) {
    if (!p.grad().is_same(s)) s.copy_(p.grad());
    p.mutable_grad() = s;
  } else {
    s.zero_();
  }
  b.flat[b.numel + static_cast<int64_t>(index_in_bucket_[param])].fill_(has ? 1 : 0);
  packed_[param] = true;
}

// Buckets leave strictly in index order, so every rank issues the same collectives in the same
// sequence whatever order its backward produced the gradients in.
void GradSync::launch_in_order() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == buckets_[next_launch_].params.size()) {
    Bucket& b = buckets_[next_launch_];
    b.op = pg_.all_reduce_sum_async({b.flat}, fmt::format("all_reduce of gradient bucket {}/{}",
                                                           next_launch_ + 1, buckets_.size()));
    ++next_launch_;
  }
}

void GradSync::finish(double scale) {
  torch::NoGradGuard no_grad;
  if (!pg_.distributed()) {
    if (scale != 1.0)
      for (auto& p : params_)
        if (p.grad().defined()) p.mutable_grad().mul_(scale);
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  launched_early_ = static_cast<int64_t>(next_launch_);
  for (auto& b : buckets_) {
    for (size_t k : b.params)
      if (!packed_[k]) pack(k);
    b.ready = b.params.size();
  }
  launch_in_order();
  std::vector<torch::Tensor> flags;
  for (auto& b : buckets_) {
    b.op.wait();
    if (scale != 1.0) b.flat.narrow(0, 0, b.numel).mul_(scale);
    flags.push_back(b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size())));
  }
  // One host read for all presence flags (each a count of ranks that had the gradient).
  const auto present = torch::cat(flags).to(torch::kCPU, torch::kDouble);
  const double* any = present.data_ptr<double>();
  int64_t f = 0;
  for (auto& b : buckets_) {
    for (size_t k : b.params) {
      if (any[f++] > 0) params_[k].mutable_grad() = slot(k);
      else params_[k].mutable_grad() = torch::Tensor();
    }
    b.ready = 0;
    b.op = PendingOp();
  }
  packed_.assign(params_.size(), false);
  next_launch_ = 0;
}

}  // namespace gmsa::dist
