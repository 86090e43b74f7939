#pragma once
// Evaluation metrics of GMSA, each following one published reference implementation exactly
// (docs/metrics.md): BLEU (sacreBLEU 2.x, tokenizer 13a), Prefix-EM (GMSA restoration),
// ROUGE-1/2/L (Google's rouge-score), perplexity, and SQuAD / "Lost in the Middle" QA scores.
// Text is UTF-8; helpers reproduce Python's str semantics where the references rely on them.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gmsa::metrics {

// ---- Text helpers with Python str semantics ----

// Python's str.split(): splits on runs of Unicode whitespace (ASCII \t\n\v\f\r, \x1c-\x1f,
// space, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
std::vector<std::string> split_whitespace(std::string_view text);
// Python's str.rstrip() with no argument.
std::string_view rstrip_whitespace(std::string_view text);
// Python's str.lower(): Unicode lowercase mapping (simple mapping from the C.UTF-8 locale, plus
// U+0130 -> "i\u0307"; the contextual final-sigma rule is not applied). Invalid UTF-8 bytes
// pass through unchanged. Throws gmsa::Error for non-ASCII text if no UTF-8 locale exists.
std::string to_lower(std::string_view text);
// One string per code point (an invalid UTF-8 byte is a unit of its own).
std::vector<std::string> utf8_chars(std::string_view text);

// ---- BLEU (sacreBLEU) ----

// sacreBLEU's tokenizer_13a (mteval-v13a): entity unescaping and ASCII punctuation padding,
// tokens joined by single spaces. Non-ASCII characters are never split off.
std::string tokenize_13a(std::string_view line);

enum class Smoothing { None, Floor, AddK, Exp };

struct BleuOptions {
  Smoothing smoothing = Smoothing::Exp;
  std::optional<double> smooth_value;  // unset: sacreBLEU's default (floor 0.1, add-k 1)
  bool lowercase = false;
  bool effective_order = false;  // average only over orders the hypothesis has n-grams of
};
// sacreBLEU's sentence_bleu() defaults: exp smoothing with effective order.
inline BleuOptions sentence_bleu_options() {
  BleuOptions o;
  o.effective_order = true;
  return o;
}

constexpr int kBleuMaxOrder = 4;

// Sufficient statistics; they add up over segments (and over ranks).
struct BleuStats {
  int64_t sys_len = 0, ref_len = 0;
  std::array<int64_t, kBleuMaxOrder> matches{}, totals{};
  BleuStats& operator+=(const BleuStats& o);
};

struct BleuScore {
  double score = 0;                                // 0..100
  std::array<double, kBleuMaxOrder> precisions{};  // 0..100, smoothed as sacreBLEU reports
  double bp = 0;                                   // brevity penalty
  int64_t sys_len = 0, ref_len = 0;
  std::array<int64_t, kBleuMaxOrder> matches{}, totals{};  // raw counts (before add-k)
};

// Statistics of one segment against its references (at least one): clipped n-gram matches
// with counts maxed over references, and the closest reference length (ties: the shorter).
BleuStats bleu_stats(std::string_view hyp, const std::vector<std::string>& refs,
                     bool lowercase = false);
BleuScore bleu_from_stats(const BleuStats& stats, const BleuOptions& opts = {});

// refs[k][i] is the k-th reference of segment i (sacreBLEU's reference streams); every stream
// has hyps.size() entries.
BleuScore corpus_bleu(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& opts = {});
BleuScore sentence_bleu(std::string_view hyp, const std::vector<std::string>& refs,
                        const BleuOptions& opts = sentence_bleu_options());

// ---- Prefix-EM (GMSA context restoration) ----

enum class PrefixUnit {
  Tokens13a,   // whitespace tokens of tokenize_13a(text)
  Whitespace,  // split_whitespace(text)
  CodePoints,  // Unicode code points
};
// |longest common prefix of prediction and reference| / |reference|, in [0, 1]. Prediction
// beyond the reference length does not lower it. An empty reference scores 1.
double prefix_em(std::string_view prediction, std::string_view reference,
                 PrefixUnit unit = PrefixUnit::Tokens13a);
double prefix_em(const std::vector<int>& prediction, const std::vector<int>& reference);

// ---- ROUGE (rouge-score, no stemming) ----

struct Rouge {
  double precision = 0, recall = 0, f1 = 0;
};
struct RougeScores {
  Rouge rouge1, rouge2, rougeL;
};
// rouge-score's default tokenizer: lowercase, every run of characters outside [a-z0-9] is a
// separator.
std::vector<std::string> rouge_tokenize(std::string_view text);
RougeScores rouge(std::string_view prediction, std::string_view reference);

// ---- Perplexity ----

// exp(nll_sum / tokens); nll in nats. Throws gmsa::Error unless tokens > 0.
double perplexity(double nll_sum, int64_t tokens);

struct PerplexityAccumulator {
  double nll_sum = 0;
  int64_t tokens = 0;
  void add(double nll, int64_t n);  // a batch: summed NLL over n tokens
  double mean_nll() const;          // throws gmsa::Error when empty
  double perplexity() const;        // throws gmsa::Error when empty
};

// ---- QA (SQuAD v1.1 / "Lost in the Middle"); scores in [0, 1] ----

// SQuAD's normalize_answer: lowercase, drop ASCII punctuation, drop the whole words
// a/an/the, collapse whitespace.
std::string normalize_answer(std::string_view text);
// Each takes the best over the gold answers; throws gmsa::Error when golds is empty.
double exact_match(std::string_view prediction, const std::vector<std::string>& golds);
double f1(std::string_view prediction, const std::vector<std::string>& golds);
// best_subspan_em: 1 if some normalised gold is a substring of the normalised prediction.
double accuracy(std::string_view prediction, const std::vector<std::string>& golds);

struct QaScores {
  double em = 0, f1 = 0, acc = 0;
};
QaScores qa_scores(std::string_view prediction, const std::vector<std::string>& golds);

// Mean of per-example QA scores.
class QaAggregator {
 public:
  void add(const QaScores& s);
  void add(std::string_view prediction, const std::vector<std::string>& golds) {
    add(qa_scores(prediction, golds));
  }
  int64_t count() const { return count_; }
  QaScores mean() const;  // all zero while count() == 0

 private:
  QaScores sum_;
  int64_t count_ = 0;
};

}  // namespace gmsa::metrics
