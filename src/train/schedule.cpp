#include "gmsa/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "gmsa/util/error.h"

namespace gmsa {

namespace {
const double kPi = 3.14159265358979323846;
}

LrSchedule::LrSchedule(ScheduleOptions o) : options_(std::move(o)) {
  const auto& t = options_.type;
  GMSA_CHECK(t == "constant" || t == "linear" || t == "cosine",
             "lr schedule: unknown type '{}' (expected constant, linear or cosine)", t);
  GMSA_CHECK(options_.base_lr >= 0, "lr schedule: base_lr {} is negative", options_.base_lr);
  GMSA_CHECK(options_.total_steps > 0 || t == "constant",
             "lr schedule: total_steps must be positive for a {} schedule, got {}", t,
             options_.total_steps);
  GMSA_CHECK(options_.warmup_steps >= 0, "lr schedule: warmup_steps {} is negative",
             options_.warmup_steps);
  GMSA_CHECK(options_.warmup_ratio >= 0 && options_.warmup_ratio <= 1,
             "lr schedule: warmup_ratio {} is not in [0, 1]", options_.warmup_ratio);
  GMSA_CHECK(options_.min_lr_ratio >= 0 && options_.min_lr_ratio <= 1,
             "lr schedule: min_lr_ratio {} is not in [0, 1]", options_.min_lr_ratio);
  // The 1e-9 keeps products like 0.07 * 100 = 7.000000000000001 from rounding up to 8.
  warmup_ = options_.warmup_steps > 0
                ? options_.warmup_steps
                : static_cast<int64_t>(
                      std::ceil(options_.warmup_ratio * static_cast<double>(options_.total_steps) - 1e-9));
  warmup_ = std::max<int64_t>(warmup_, 0);
  GMSA_CHECK(t == "constant" || warmup_ <= options_.total_steps,
             "lr schedule: {} warmup steps exceed total_steps {}", warmup_, options_.total_steps);
}

double LrSchedule::lr_at(int64_t step) const {
  GMSA_CHECK(step >= 0, "lr schedule: step {} is negative", step);
  const double base = options_.base_lr;
  if (step < warmup_) return base * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (options_.type == "constant") return base;
  const int64_t span = options_.total_steps - warmup_;
  const double progress =
      span > 0 ? std::min(1.0, static_cast<double>(step - warmup_) / static_cast<double>(span)) : 1.0;
  const double r = options_.min_lr_ratio;
  const double shape = options_.type == "linear" ? 1 - progress : 0.5 * (1 + std::cos(kPi * progress));
  return base * (r + (1 - r) * shape);
}

}  // namespace gmsa
