// QA scores: SQuAD v1.1's exact match and token F1, and best_subspan_em ("Acc") from
// "Lost in the Middle"; all compare normalize_answer() forms and keep the best gold answer.
#include <algorithm>
#include <map>

#include "gmsa/metrics/metrics.h"
#include "gmsa/util/error.h"

namespace gmsa::metrics {
namespace {

template <typename Score>
double best_over_golds(const char* metric, const std::vector<std::string>& golds, Score score) {
  GMSA_CHECK(!golds.empty(), "{}: no gold answers for the prediction", metric);
  double best = 0;
  for (const auto& gold : golds) best = std::max(best, score(gold));
  return best;
}

// SQuAD v1.1 f1_score: 0 without common tokens (so also when both sides normalise to empty).
double f1_one(const std::vector<std::string>& pred, const std::vector<std::string>& gold) {
  std::map<std::string, int64_t> gold_counts;
  for (const auto& t : gold) ++gold_counts[t];
  int64_t same = 0;  // size of the multiset intersection (Counter &)
  for (const auto& t : pred) {
    auto it = gold_counts.find(t);
    if (it != gold_counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double p = static_cast<double>(same) / pred.size(), r = static_cast<double>(same) / gold.size();
  return 2 * p * r / (p + r);
}

}  // namespace

double exact_match(std::string_view prediction, const std::vector<std::string>& golds) {
  const std::string pred = normalize_answer(prediction);
  return best_over_golds("exact_match", golds, [&](const std::string& gold) {
    return pred == normalize_answer(gold) ? 1.0 : 0.0;
  });
}

double f1(std::string_view prediction, const std::vector<std::string>& golds) {
  const auto pred = split_whitespace(normalize_answer(prediction));
  return best_over_golds("f1", golds, [&](const std::string& gold) {
    return f1_one(pred, split_whitespace(normalize_answer(gold)));
  });
}

double accuracy(std::string_view prediction, const std::vector<std::string>& golds) {
  // best_subspan_em lowercases the normalised strings once more; to_lower keeps it exact.
  const std::string pred = to_lower(normalize_answer(prediction));
  return best_over_golds("accuracy", golds, [&](const std::string& gold) {
    return pred.find(to_lower(normalize_answer(gold))) != std::string::npos ? 1.0 : 0.0;
  });
}

QaScores qa_scores(std::string_view prediction, const std::vector<std::string>& golds) {
  return {exact_match(prediction, golds), f1(prediction, golds), accuracy(prediction, golds)};
}

void QaAggregator::add(const QaScores& s) {
  sum_.em += s.em;
  sum_.f1 += s.f1;
  sum_.acc += s.acc;
  ++count_;
}

QaScores QaAggregator::mean() const {
  if (count_ == 0) return {};
  const auto n = static_cast<double>(count_);
  return {sum_.em / n, sum_.f1 / n, sum_.acc / n};
}

}  // namespace gmsa::metrics
