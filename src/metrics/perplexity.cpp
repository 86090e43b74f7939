// Perplexity: exp of the mean per-token negative log-likelihood (natural log).
#include <cmath>

#include "gmsa/metrics/metrics.h"
#include "gmsa/util/error.h"

namespace gmsa::metrics {

double perplexity(double nll_sum, int64_t tokens) {
  GMSA_CHECK(tokens > 0, "perplexity: needs a positive token count, got {}", tokens);
  return std::exp(nll_sum / static_cast<double>(tokens));
}

void PerplexityAccumulator::add(double nll, int64_t n) {
  GMSA_CHECK(n >= 0, "perplexity: negative token count {}", n);
  nll_sum += nll;
  tokens += n;
}

double PerplexityAccumulator::mean_nll() const {
  GMSA_CHECK(tokens > 0, "perplexity: no tokens accumulated");
  return nll_sum / static_cast<double>(tokens);
}

double PerplexityAccumulator::perplexity() const { return std::exp(mean_nll()); }

}  // namespace gmsa::metrics
