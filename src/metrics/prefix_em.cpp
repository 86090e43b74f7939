// Prefix-EM, GMSA's context-restoration metric: how much of the reference the prediction
// reproduces before its first divergence.
#include <algorithm>

#include "gmsa/metrics/metrics.h"

namespace gmsa::metrics {
namespace {

template <typename T>
double prefix_ratio(const std::vector<T>& prediction, const std::vector<T>& reference) {
  if (reference.empty()) return 1.0;  // nothing to restore
  const auto diverge =
      std::mismatch(reference.begin(), reference.end(), prediction.begin(), prediction.end());
  return static_cast<double>(diverge.first - reference.begin()) /
         static_cast<double>(reference.size());
}

std::vector<std::string> units(std::string_view text, PrefixUnit unit) {
  switch (unit) {
    case PrefixUnit::Tokens13a: return split_whitespace(tokenize_13a(text));
    case PrefixUnit::Whitespace: return split_whitespace(text);
    case PrefixUnit::CodePoints: return utf8_chars(text);
  }
  return {};
}

}  // namespace

double prefix_em(std::string_view prediction, std::string_view reference, PrefixUnit unit) {
  return prefix_ratio(units(prediction, unit), units(reference, unit));
}

double prefix_em(const std::vector<int>& prediction, const std::vector<int>& reference) {
  return prefix_ratio(prediction, reference);
}

}  // namespace gmsa::metrics
