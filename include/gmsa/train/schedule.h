#pragma once
// Learning-rate schedules: linear warmup, then constant, linear or cosine decay.
//
// `step` below is the number of updates already done (0 for the first update). With W warmup
// steps, T total steps, r = min_lr_ratio:
//   step < W:  lr = base * (step + 1) / W        (the first update gets base/W, update W-1 base)
//   step >= W: progress = clamp((step - W) / (T - W), 0, 1)     (1 when T == W)
//     constant: lr = base
//     linear:   lr = base * (r + (1 - r) * (1 - progress))
//     cosine:   lr = base * (r + (1 - r) * 0.5 * (1 + cos(pi * progress)))
// so decay starts from base at step W and would reach base*r at step T (the last update, T-1,
// is one step short of it). Unlike Hugging Face's get_*_schedule_with_warmup (step / W), no
// update is wasted with lr = 0 at the start. Steps past T keep base*r (constant: base).
#include <cstdint>
#include <string>

namespace gmsa {

struct ScheduleOptions {
  std::string type = "linear";  // constant | linear | cosine
  double base_lr = 0;
  int64_t warmup_steps = 0;     // used when > 0, else ceil(warmup_ratio * total_steps)
  double warmup_ratio = 0;
  int64_t total_steps = 0;
  double min_lr_ratio = 0;      // in [0, 1]: the floor of linear/cosine decay, times base_lr
};

class LrSchedule {
 public:
  explicit LrSchedule(ScheduleOptions options);
  double lr_at(int64_t step) const;
  int64_t warmup() const { return warmup_; }
  const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
  int64_t warmup_ = 0;
};

}  // namespace gmsa
