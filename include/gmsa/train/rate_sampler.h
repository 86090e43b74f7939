#pragma once
// Draws a compression rate per training example from a fixed list, with given weights.
// Deterministic across platforms: std::mt19937_64 (fully specified by the standard), a 53-bit
// uniform double u = (x >> 11) * 2^-53 in [0, 1), and the first index whose cumulative weight
// exceeds u * total (std::discrete_distribution's algorithm is implementation-defined).
// Every next() consumes exactly one engine output, also with a single rate.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace gmsa {

class RateSampler {
 public:
  // weights empty = uniform. Errors (gmsa::Error): no rates, a rate < 1, a weights list of
  // another length, a negative or non-finite weight, all weights zero.
  RateSampler(std::vector<int64_t> rates, std::vector<double> weights, uint64_t seed);

  int64_t next();
  // The engine state (operator<< text); restore() continues the stream exactly where it was.
  // The rates and weights are not part of it: restore into a sampler built the same way.
  std::string state() const;
  void restore(const std::string& state);

  const std::vector<int64_t>& rates() const { return rates_; }
  // Normalised probabilities, one per rate.
  std::vector<double> probabilities() const;

 private:
  std::vector<int64_t> rates_;
  std::vector<double> cumulative_;  // running sums of the weights
  std::mt19937_64 engine_;
};

}  // namespace gmsa
