// BLEU as computed by sacreBLEU 2.x (BLEU class with tokenize='13a').
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include "gmsa/metrics/metrics.h"
#include "gmsa/util/error.h"

namespace gmsa::metrics {
namespace {

// n-grams of orders 1..4 keyed by their tokens joined with ' '; tokens hold no whitespace, so
// the number of spaces in a key is its order minus one.
using NgramCounts = std::unordered_map<std::string, int64_t>;

NgramCounts count_ngrams(const std::vector<std::string>& tokens) {
  NgramCounts counts;
  counts.reserve(kBleuMaxOrder * tokens.size());
  for (std::size_t n = 1; n <= kBleuMaxOrder; ++n) {
    for (std::size_t i = 0; i + n <= tokens.size(); ++i) {
      std::string key = tokens[i];
      for (std::size_t k = 1; k < n; ++k) key.append(" ").append(tokens[i + k]);
      ++counts[key];
    }
  }
  return counts;
}

// sacreBLEU's _preprocess_segment: optional lowercasing, rstrip, then 13a.
std::vector<std::string> preprocess(std::string_view segment, bool lowercase) {
  const std::string text = lowercase ? to_lower(segment) : std::string(segment);
  return split_whitespace(tokenize_13a(rstrip_whitespace(text)));
}

// The reference length closest to the hypothesis length; ties go to the shorter reference.
int64_t closest_ref_len(int64_t hyp_len, const std::vector<int64_t>& ref_lens) {
  int64_t best = ref_lens.front();
  for (int64_t len : ref_lens) {
    const int64_t d = std::llabs(hyp_len - len), best_d = std::llabs(hyp_len - best);
    if (d < best_d || (d == best_d && len < best)) best = len;
  }
  return best;
}

double default_smooth_value(Smoothing s) {
  return s == Smoothing::Floor ? 0.1 : s == Smoothing::AddK ? 1.0 : 0.0;
}

// sacreBLEU's my_log: log(0) is a huge negative number, so a zero precision zeroes the score.
double safe_log(double x) { return x == 0 ? -9999999999.0 : std::log(x); }

}  // namespace

BleuStats& BleuStats::operator+=(const BleuStats& o) {
  sys_len += o.sys_len;
  ref_len += o.ref_len;
  for (int n = 0; n < kBleuMaxOrder; ++n) {
    matches[n] += o.matches[n];
    totals[n] += o.totals[n];
  }
  return *this;
}

BleuStats bleu_stats(std::string_view hyp, const std::vector<std::string>& refs, bool lowercase) {
  GMSA_CHECK(!refs.empty(), "bleu: a segment needs at least one reference");
  NgramCounts ref_max;  // each n-gram's highest count in any one reference
  std::vector<int64_t> ref_lens;
  for (const auto& ref : refs) {
    const auto tokens = preprocess(ref, lowercase);
    ref_lens.push_back(static_cast<int64_t>(tokens.size()));
    for (const auto& [ngram, c] : count_ngrams(tokens))
      ref_max[ngram] = std::max(ref_max[ngram], c);
  }
  const auto hyp_tokens = preprocess(hyp, lowercase);
  BleuStats st;
  st.sys_len = static_cast<int64_t>(hyp_tokens.size());
  st.ref_len = closest_ref_len(st.sys_len, ref_lens);
  for (const auto& [ngram, c] : count_ngrams(hyp_tokens)) {
    const auto order = std::count(ngram.begin(), ngram.end(), ' ');
    const auto it = ref_max.find(ngram);
    st.totals[order] += c;
    st.matches[order] += std::min(c, it == ref_max.end() ? int64_t{0} : it->second);
  }
  return st;
}

BleuScore bleu_from_stats(const BleuStats& st, const BleuOptions& opts) {
  BleuScore out;
  out.sys_len = st.sys_len;
  out.ref_len = st.ref_len;
  out.matches = st.matches;
  out.totals = st.totals;
  if (st.sys_len < st.ref_len)
    out.bp = st.sys_len > 0 ? std::exp(1.0 - static_cast<double>(st.ref_len) / st.sys_len) : 0.0;
  else
    out.bp = 1.0;
  if (std::all_of(st.matches.begin(), st.matches.end(), [](int64_t m) { return m == 0; }))
    return out;  // sacreBLEU returns 0 with zero precisions before any smoothing

  const double k = opts.smooth_value.value_or(default_smooth_value(opts.smoothing));
  double exp_factor = 1.0;
  int eff_order = kBleuMaxOrder;
  for (int n = 0; n < kBleuMaxOrder; ++n) {
    double correct = static_cast<double>(st.matches[n]), total = static_cast<double>(st.totals[n]);
    if (opts.smoothing == Smoothing::AddK && n > 0) {
      correct += k;
      total += k;
    }
    if (total == 0) break;  // longer n-grams keep precision 0
    if (opts.effective_order) eff_order = n + 1;
    if (correct > 0) {
      out.precisions[n] = 100.0 * correct / total;
    } else if (opts.smoothing == Smoothing::Exp) {
      exp_factor *= 2;  // mteval-v13a: 1/2^k for the k-th order without matches
      out.precisions[n] = 100.0 / (exp_factor * total);
    } else if (opts.smoothing == Smoothing::Floor) {
      out.precisions[n] = 100.0 * k / total;
    }
  }
  double log_sum = 0;
  for (int n = 0; n < eff_order; ++n) log_sum += safe_log(out.precisions[n]);
  out.score = out.bp * std::exp(log_sum / eff_order);
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs, const BleuOptions& opts) {
  GMSA_CHECK(!refs.empty(), "corpus_bleu: no reference stream given");
  for (std::size_t k = 0; k < refs.size(); ++k)
    GMSA_CHECK(refs[k].size() == hyps.size(),
               "corpus_bleu: reference stream {} has {} segments, the hypotheses have {}", k,
               refs[k].size(), hyps.size());
  BleuStats total;
  std::vector<std::string> seg_refs(refs.size());
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    for (std::size_t k = 0; k < refs.size(); ++k) seg_refs[k] = refs[k][i];
    total += bleu_stats(hyps[i], seg_refs, opts.lowercase);
  }
  return bleu_from_stats(total, opts);
}

BleuScore sentence_bleu(std::string_view hyp, const std::vector<std::string>& refs,
                        const BleuOptions& opts) {
  return bleu_from_stats(bleu_stats(hyp, refs, opts.lowercase), opts);
}

}  // namespace gmsa::metrics
