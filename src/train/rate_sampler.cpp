#include "gmsa/train/rate_sampler.h"

#include <cmath>
#include <sstream>

#include "gmsa/util/error.h"

namespace gmsa {

RateSampler::RateSampler(std::vector<int64_t> rates, std::vector<double> weights, uint64_t seed)
    : rates_(std::move(rates)), engine_(seed) {
  GMSA_CHECK(!rates_.empty(), "rate sampler: no compression rates given");
  for (int64_t r : rates_) GMSA_CHECK(r >= 1, "rate sampler: compression rate {} is below 1", r);
  if (weights.empty()) weights.assign(rates_.size(), 1.0);
  GMSA_CHECK(weights.size() == rates_.size(),
             "rate sampler: {} weights given for {} compression rates", weights.size(),
             rates_.size());
  double total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    GMSA_CHECK(std::isfinite(weights[i]) && weights[i] >= 0,
               "rate sampler: weight {} of rate {} must be finite and non-negative", weights[i],
               rates_[i]);
    total += weights[i];
    cumulative_.push_back(total);
  }
  GMSA_CHECK(total > 0, "rate sampler: all weights are zero");
}

int64_t RateSampler::next() {
  const double u = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  const double target = u * cumulative_.back();
  // Strictly greater: a zero weight (cumulative equal to its predecessor) is never chosen.
  for (size_t i = 0; i < cumulative_.size(); ++i)
    if (cumulative_[i] > target) return rates_[i];
  // Only rounding can get here (target within an ulp of the total): the last positive weight.
  size_t i = cumulative_.size() - 1;
  while (i > 0 && cumulative_[i] == cumulative_[i - 1]) --i;
  return rates_[i];
}

std::string RateSampler::state() const {
  std::ostringstream os;
  os << engine_;
  return os.str();
}

void RateSampler::restore(const std::string& state) {
  std::istringstream is(state);
  std::mt19937_64 parsed;
  is >> parsed;
  GMSA_CHECK(!state.empty() && !is.fail(), "rate sampler: invalid saved state");
  engine_ = parsed;
}

std::vector<double> RateSampler::probabilities() const {
  std::vector<double> p;
  double prev = 0;
  for (double c : cumulative_) {
    p.push_back((c - prev) / cumulative_.back());
    prev = c;
  }
  return p;
}

}  // namespace gmsa
