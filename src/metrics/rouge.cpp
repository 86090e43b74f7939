// ROUGE-1, ROUGE-2 and ROUGE-L as scored by Google's rouge-score package (Lin 2004).
#include <algorithm>
#include <unordered_map>

#include "gmsa/metrics/metrics.h"

namespace gmsa::metrics {
namespace {

// rouge-score's fmeasure: 0 unless precision + recall > 0.
Rouge make_rouge(double precision, double recall) {
  const double f = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
  return {precision, recall, f};
}

// n-grams keyed by their tokens joined with ' ' (tokens are [a-z0-9]+, so keys are unique).
using NgramCounts = std::unordered_map<std::string, int64_t>;

NgramCounts ngram_counts(const std::vector<std::string>& tokens, std::size_t n) {
  NgramCounts counts;
  counts.reserve(tokens.size());
  for (std::size_t i = 0; i + n <= tokens.size(); ++i) {
    std::string key = tokens[i];
    for (std::size_t k = 1; k < n; ++k) key.append(" ").append(tokens[i + k]);
    ++counts[key];
  }
  return counts;
}

int64_t total(const NgramCounts& counts) {
  int64_t sum = 0;
  for (const auto& kv : counts) sum += kv.second;
  return sum;
}

// Clipped overlap over n-gram counts; empty sides divide by max(count, 1) as rouge-score does.
Rouge rouge_n(const std::vector<std::string>& pred, const std::vector<std::string>& ref,
              std::size_t n) {
  const auto p = ngram_counts(pred, n), r = ngram_counts(ref, n);
  int64_t overlap = 0;
  for (const auto& [ngram, c] : r) {
    const auto it = p.find(ngram);
    if (it != p.end()) overlap += std::min(c, it->second);
  }
  return make_rouge(static_cast<double>(overlap) / std::max<int64_t>(total(p), 1),
                    static_cast<double>(overlap) / std::max<int64_t>(total(r), 1));
}

// Length of the longest common subsequence, one DP row at a time.
std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (const auto& x : a) {
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = x == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

Rouge rouge_l(const std::vector<std::string>& pred, const std::vector<std::string>& ref) {
  if (pred.empty() || ref.empty()) return {};
  const auto lcs = static_cast<double>(lcs_length(ref, pred));
  return make_rouge(lcs / static_cast<double>(pred.size()), lcs / static_cast<double>(ref.size()));
}

}  // namespace

RougeScores rouge(std::string_view prediction, std::string_view reference) {
  const auto pred = rouge_tokenize(prediction), ref = rouge_tokenize(reference);
  return {rouge_n(pred, ref, 1), rouge_n(pred, ref, 2), rouge_l(pred, ref)};
}

}  // namespace gmsa::metrics
