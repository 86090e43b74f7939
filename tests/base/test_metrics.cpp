// Metric tests. Every expected value is derived by hand in the comments from the published
// definitions (sacreBLEU, rouge-score, SQuAD v1.1, "Lost in the Middle"), never read back from
// this implementation.
#include <gtest/gtest.h>

#include <cmath>

#include "gmsa/metrics/metrics.h"
#include "gmsa/util/error.h"

namespace m = gmsa::metrics;

// ---------------------------------------------------------------- 13a tokenisation

TEST(Tokenize13a, PadsAsciiPunctuation) {
  // '!' is in the symbol class; "o," matches ([^0-9])([\.,]).
  EXPECT_EQ(m::tokenize_13a("Hello, world!"), "Hello , world !");
  // ( ) " : ; ? / [ ] are symbols; ' and - between letters are not.
  EXPECT_EQ(m::tokenize_13a("(don't) \"well-known\": a/b; c? [x]"),
            "( don't ) \" well-known \" : a / b ; c ? [ x ]");
}

TEST(Tokenize13a, NumbersKeepInnerPeriodsAndCommas) {
  // "3.50" and "1,000.5": '.'/',' between digits match no rule. "50," -> ',' is followed by the
  // padding space, so rule 3 splits it. "2010-2011": rule 4 pads a dash after a digit. The last
  // '.' follows '1' (rule 2 fails) but precedes the added trailing space (rule 3 fires).
  EXPECT_EQ(m::tokenize_13a("It costs 3.50, or 1,000.5 in 2010-2011."),
            "It costs 3.50 , or 1,000.5 in 2010 - 2011 .");
  EXPECT_EQ(m::tokenize_13a("3.a"), "3 . a");  // rule 3 only: digit before, letter after
  EXPECT_EQ(m::tokenize_13a("a.5"), "a . 5");  // rule 2 only: letter before, digit after
  EXPECT_EQ(m::tokenize_13a(".5"), ". 5");     // the leading pad space is a non-digit
  EXPECT_EQ(m::tokenize_13a("5-a a-5"), "5 - a a-5");
  EXPECT_EQ(m::tokenize_13a("e.g."), "e . g .");
}

TEST(Tokenize13a, EntitiesSkippedAndLineBreaks) {
  // Replacements run in order &quot; &amp; &lt; &gt;, so "&amp;lt;" becomes "&lt;" then "<".
  EXPECT_EQ(m::tokenize_13a("a &amp;lt; b &quot;q&quot; &gt;"), "a < b \" q \" >");
  EXPECT_EQ(m::tokenize_13a("x<skipped>y"), "xy");
  EXPECT_EQ(m::tokenize_13a("hyphen-\nated\nline"), "hyphenated line");
  EXPECT_EQ(m::tokenize_13a("  many \t spaces  "), "many spaces");
  EXPECT_EQ(m::tokenize_13a(""), "");
}

TEST(Tokenize13a, Utf8PassesThrough) {
  // Only ASCII punctuation is padded; "€." splits like any non-digit followed by '.'.
  EXPECT_EQ(m::tokenize_13a("Ça coûte 5€. naïve, café"), "Ça coûte 5€ . naïve , café");
  EXPECT_EQ(m::tokenize_13a("日本語、テスト。"), "日本語、テスト。");
  // Python's str.split() treats U+00A0 and U+3000 as whitespace.
  EXPECT_EQ(m::tokenize_13a("a\u00A0b\u3000c"), "a b c");
}

// ---------------------------------------------------------------- BLEU

TEST(Bleu, IdenticalIs100) {
  EXPECT_DOUBLE_EQ(m::sentence_bleu("the cat sat on the mat", {"the cat sat on the mat"}).score,
                   100.0);
  const auto c = m::corpus_bleu({"the cat sat on the mat", "a b c d"},
                                {{"the cat sat on the mat", "a b c d"}});
  EXPECT_DOUBLE_EQ(c.score, 100.0);
  EXPECT_DOUBLE_EQ(c.bp, 1.0);
}

// hyp "the cat sat in the mat" vs ref "the cat sat on the mat" (6 tokens each, bp = 1):
//  1-grams: the x2 (ref has 2), cat, sat, mat match; "in" not      -> 5/6
//  2-grams: "the cat" "cat sat" "the mat" match; "sat in" "in the" -> 3/5
//  3-grams: "the cat sat" matches; "cat sat in" "sat in the" "in the mat" -> 1/4
//  4-grams: none of "the cat sat in" "cat sat in the" "sat in the mat" -> 0/3
class BleuNoFourGram : public ::testing::Test {
 protected:
  m::BleuScore score(m::Smoothing s) {
    m::BleuOptions o;
    o.smoothing = s;
    return m::corpus_bleu({"the cat sat in the mat"}, {{"the cat sat on the mat"}}, o);
  }
};

TEST_F(BleuNoFourGram, Counts) {
  const auto b = score(m::Smoothing::None);
  EXPECT_EQ(b.matches, (std::array<int64_t, 4>{5, 3, 1, 0}));
  EXPECT_EQ(b.totals, (std::array<int64_t, 4>{6, 5, 4, 3}));
  EXPECT_EQ(b.sys_len, 6);
  EXPECT_EQ(b.ref_len, 6);
}

TEST_F(BleuNoFourGram, NoSmoothingGivesZero) {
  const auto b = score(m::Smoothing::None);
  EXPECT_EQ(b.score, 0.0);
  EXPECT_NEAR(b.precisions[0], 100.0 * 5 / 6, 1e-12);
  EXPECT_EQ(b.precisions[3], 0.0);
}

TEST_F(BleuNoFourGram, ExpSmoothing) {
  // First order without matches gets 100 / (2 * total) = 100 / 6.
  const auto b = score(m::Smoothing::Exp);
  EXPECT_NEAR(b.precisions[3], 100.0 / 6, 1e-12);
  EXPECT_NEAR(b.score, std::pow(100.0 * 5 / 6 * 60 * 25 * 100.0 / 6, 0.25), 1e-9);
}

TEST_F(BleuNoFourGram, FloorSmoothing) {
  // Zero count replaced by 0.1: p4 = 100 * 0.1 / 3.
  const auto b = score(m::Smoothing::Floor);
  EXPECT_NEAR(b.score, std::pow(100.0 * 5 / 6 * 60 * 25 * 10.0 / 3, 0.25), 1e-9);
}

TEST_F(BleuNoFourGram, AddKSmoothing) {
  // k = 1 added to matches and totals of orders 2..4: 4/6, 2/5, 1/4; order 1 stays 5/6.
  const auto b = score(m::Smoothing::AddK);
  EXPECT_NEAR(b.score, 100.0 * std::pow(5.0 / 6 * 4.0 / 6 * 2.0 / 5 * 1.0 / 4, 0.25), 1e-9);
  EXPECT_EQ(b.matches[3], 0);  // reported counts are the raw ones
}

TEST(Bleu, BrevityPenalty) {
  // hyp "the cat sat on the" (5) against "the cat sat on the mat" (6): every n-gram matches
  // (5/5, 4/4, 3/3, 2/2), bp = exp(1 - 6/5) = exp(-0.2).
  const auto b = m::corpus_bleu({"the cat sat on the"}, {{"the cat sat on the mat"}});
  EXPECT_NEAR(b.bp, std::exp(-0.2), 1e-15);
  EXPECT_NEAR(b.score, 100.0 * std::exp(-0.2), 1e-9);
}

TEST(Bleu, SentenceBleuUsesEffectiveOrder) {
  // hyp "the cat" (2) vs 6-token ref: p1 = 2/2, p2 = 1/1, no 3- or 4-grams. sentence_bleu
  // averages over the 2 orders present: 100 * bp, bp = exp(1 - 6/2) = exp(-2).
  EXPECT_NEAR(m::sentence_bleu("the cat", {"the cat sat on the mat"}).score,
              100.0 * std::exp(-2.0), 1e-9);
  // corpus_bleu keeps all 4 orders; the loop stops at the empty 3-gram order (precision 0).
  EXPECT_EQ(m::corpus_bleu({"the cat"}, {{"the cat sat on the mat"}}).score, 0.0);
  // A single matching token: eff. order 1, p1 = 100.
  EXPECT_DOUBLE_EQ(m::sentence_bleu("yes", {"yes"}).score, 100.0);
}

TEST(Bleu, MultipleReferences) {
  // hyp "a a a b" (4); refs "a b c" (3) and "a a d e f" (5): both 1 away -> the shorter, 3.
  // Counts clipped by the max over refs: a: max(1,2) = 2, b: 1 -> 1-grams 3/4;
  // "a a": max(0,1) = 1 of 2, "a b": 1 of 1 -> 2/3; 3-grams 0/2; 4-grams 0/1.
  // exp smoothing: p3 = 100/(2*2) = 25, p4 = 100/(4*1) = 25; bp = 1.
  const auto b = m::corpus_bleu({"a a a b"}, {{"a b c"}, {"a a d e f"}});
  EXPECT_EQ(b.ref_len, 3);
  EXPECT_EQ(b.matches, (std::array<int64_t, 4>{3, 2, 0, 0}));
  EXPECT_EQ(b.totals, (std::array<int64_t, 4>{4, 3, 2, 1}));
  EXPECT_NEAR(b.score, std::pow(75.0 * 200.0 / 3 * 25 * 25, 0.25), 1e-9);
}

TEST(Bleu, SacreBleuReadmeExample) {
  // sacreBLEU's README: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ... hyp_len = 17
  // ref_len = 18)". By hand: hyp lengths 6+4+7 = 17 (13a splits the final '.'), closest refs
  // 6, 5 (tie 5/5), 7 = 18; matches 1-grams 6+2+6 = 14/17, 2-grams 5+0+2 = 7/14, 3-grams
  // 4+0+1 = 5/11, 4-grams 3+0+0 = 3/8; bp = exp(1 - 18/17).
  const std::vector<std::string> sys = {"The dog bit the man.", "It wasn't surprising.",
                                        "The man had just bitten him."};
  const std::vector<std::vector<std::string>> refs = {
      {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
      {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};
  const auto b = m::corpus_bleu(sys, refs);
  EXPECT_EQ(b.sys_len, 17);
  EXPECT_EQ(b.ref_len, 18);
  EXPECT_EQ(b.matches, (std::array<int64_t, 4>{14, 7, 5, 3}));
  EXPECT_EQ(b.totals, (std::array<int64_t, 4>{17, 14, 11, 8}));
  const double expected =
      100.0 * std::exp(1.0 - 18.0 / 17) * std::pow(14.0 / 17 * 7 / 14 * 5 / 11 * 3 / 8, 0.25);
  EXPECT_NEAR(b.score, expected, 1e-9);
  EXPECT_NEAR(b.score, 48.53, 0.005);
  EXPECT_NEAR(b.bp, 0.943, 0.0005);
}

TEST(Bleu, StatsAddUpOverSegments) {
  m::BleuStats s = m::bleu_stats("the cat", {"the cat"});
  s += m::bleu_stats("a dog", {"a dog barks"});
  EXPECT_EQ(s.sys_len, 4);
  EXPECT_EQ(s.ref_len, 5);
  EXPECT_EQ(s.matches, (std::array<int64_t, 4>{4, 2, 0, 0}));
}

TEST(Bleu, LowercaseAndTrailingWhitespace) {
  EXPECT_EQ(m::sentence_bleu("The Cat", {"the cat"}).score, 0.0);
  m::BleuOptions lower = m::sentence_bleu_options();
  lower.lowercase = true;
  EXPECT_DOUBLE_EQ(m::sentence_bleu("The Cat", {"the cat"}, lower).score, 100.0);
  // sacreBLEU rstrips before 13a, so a final "-\n" is not a line-break hyphen: "abc-" stays.
  EXPECT_DOUBLE_EQ(m::sentence_bleu("abc-\n", {"abc-"}).score, 100.0);
}

TEST(Bleu, EmptySides) {
  // Empty hypothesis: no matches -> 0, bp = 0 since sys_len = 0 < ref_len.
  const auto e = m::sentence_bleu("", {"the cat"});
  EXPECT_EQ(e.score, 0.0);
  EXPECT_EQ(e.bp, 0.0);
  EXPECT_EQ(e.sys_len, 0);
  // Empty reference: nothing can match -> 0, bp = 1.
  const auto r = m::sentence_bleu("the cat", {""});
  EXPECT_EQ(r.score, 0.0);
  EXPECT_EQ(r.bp, 1.0);
  EXPECT_EQ(m::sentence_bleu("", {""}).score, 0.0);
}

TEST(Bleu, RejectsMalformedReferences) {
  EXPECT_THROW(m::corpus_bleu({"a", "b"}, {{"a"}}), gmsa::Error);
  EXPECT_THROW(m::corpus_bleu({"a"}, {}), gmsa::Error);
  EXPECT_THROW(m::sentence_bleu("a", {}), gmsa::Error);
}

// ---------------------------------------------------------------- Prefix-EM

TEST(PrefixEm, Tokens13a) {
  // Common prefix "the cat sat on" = 4 of 6 reference tokens.
  EXPECT_DOUBLE_EQ(m::prefix_em("the cat sat on a mat", "the cat sat on the mat"), 4.0 / 6);
  // Extra predicted tokens after a full match do not count against it.
  EXPECT_DOUBLE_EQ(m::prefix_em("the cat sat more", "the cat sat"), 1.0);
  EXPECT_DOUBLE_EQ(m::prefix_em("", "the cat"), 0.0);
  EXPECT_DOUBLE_EQ(m::prefix_em("anything", ""), 1.0);
}

TEST(PrefixEm, UnitsDiffer) {
  // 13a: "Hello , world" vs "Hello world" -> 1 of 3. Whitespace: "Hello," != "Hello" -> 0.
  // Code points: "Hello" then ',' vs ' ' -> 5 of 12.
  EXPECT_DOUBLE_EQ(m::prefix_em("Hello world", "Hello, world"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(m::prefix_em("Hello world", "Hello, world", m::PrefixUnit::Whitespace), 0.0);
  EXPECT_DOUBLE_EQ(m::prefix_em("Hello world", "Hello, world", m::PrefixUnit::CodePoints),
                   5.0 / 12);
  // "café" has 4 code points (5 bytes); "caf" is shared -> 3/4.
  EXPECT_DOUBLE_EQ(m::prefix_em("cafe", "café", m::PrefixUnit::CodePoints), 0.75);
}

TEST(PrefixEm, TokenIds) {
  EXPECT_DOUBLE_EQ(m::prefix_em(std::vector<int>{1, 2, 9, 4}, std::vector<int>{1, 2, 3, 4}), 0.5);
  EXPECT_DOUBLE_EQ(m::prefix_em(std::vector<int>{1, 2}, std::vector<int>{1, 2, 3, 4}), 0.5);
  EXPECT_DOUBLE_EQ(m::prefix_em(std::vector<int>{7}, std::vector<int>{1, 2}), 0.0);
}

// ---------------------------------------------------------------- ROUGE

TEST(Rouge, Tokenizer) {
  // lower -> "don't stop-believing 2x!" -> non-[a-z0-9] runs become separators.
  EXPECT_EQ(m::rouge_tokenize("Don't stop-Believing 2x!"),
            (std::vector<std::string>{"don", "t", "stop", "believing", "2x"}));
  // Non-ASCII letters separate tokens; U+212A KELVIN SIGN lowercases to ASCII 'k'.
  EXPECT_EQ(m::rouge_tokenize("café naïve \u212Aelvin"),
            (std::vector<std::string>{"caf", "na", "ve", "kelvin"}));
}

TEST(Rouge, HandWorkedPair) {
  // pred "the cat sat on the mat", ref "the cat was on the mat" (6 tokens each).
  // R1: the 2, cat, on, mat -> 5 of 6 both ways. R2: "the cat" "on the" "the mat" -> 3 of 5.
  // RL: LCS "the cat on the mat" = 5 -> 5/6.
  const auto s = m::rouge("The cat sat on the mat.", "the cat was on the mat");
  EXPECT_DOUBLE_EQ(s.rouge1.f1, 5.0 / 6);
  EXPECT_DOUBLE_EQ(s.rouge2.precision, 3.0 / 5);
  EXPECT_DOUBLE_EQ(s.rouge2.f1, 3.0 / 5);
  EXPECT_DOUBLE_EQ(s.rougeL.recall, 5.0 / 6);
}

TEST(Rouge, PrecisionRecallAsymmetry) {
  // pred [the cat], ref [the cat sat down]: R1 P = 2/2, R = 2/4, F = 2*1*.5/1.5 = 2/3;
  // R2 "the cat" 1 of 1 vs 1 of 3 -> F = 2*(1/3)/(4/3) = 1/2; RL LCS 2 -> same as R1.
  const auto s = m::rouge("The Cat!", "the cat sat down");
  EXPECT_DOUBLE_EQ(s.rouge1.precision, 1.0);
  EXPECT_DOUBLE_EQ(s.rouge1.recall, 0.5);
  EXPECT_DOUBLE_EQ(s.rouge1.f1, 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.rouge2.f1, 0.5);
  EXPECT_DOUBLE_EQ(s.rougeL.f1, 2.0 / 3);
}

TEST(Rouge, ClippingAndOrder) {
  // "the" x3 vs [the cat]: overlap min(3,1) = 1; P = 1/3, R = 1/2, F = (1/3)/(5/6) = 0.4.
  EXPECT_DOUBLE_EQ(m::rouge("the the the", "the cat").rouge1.f1, 0.4);
  // Reversed order: all unigrams match, but the LCS is 1 of 4.
  const auto s = m::rouge("a b c d", "d c b a");
  EXPECT_DOUBLE_EQ(s.rouge1.f1, 1.0);
  EXPECT_DOUBLE_EQ(s.rouge2.f1, 0.0);
  EXPECT_DOUBLE_EQ(s.rougeL.f1, 0.25);
}

TEST(Rouge, EmptySidesScoreZero) {
  for (const auto& s : {m::rouge("", "abc"), m::rouge("abc", ""), m::rouge("!!", "")}) {
    EXPECT_EQ(s.rouge1.f1, 0.0);
    EXPECT_EQ(s.rouge2.f1, 0.0);
    EXPECT_EQ(s.rougeL.f1, 0.0);
  }
}

// ---------------------------------------------------------------- Perplexity

TEST(Perplexity, ExpOfMeanNll) {
  // Two tokens with probability 1/4 each: NLL sum 2 ln 4, perplexity 4.
  EXPECT_NEAR(m::perplexity(2 * std::log(4.0), 2), 4.0, 1e-12);
  m::PerplexityAccumulator acc;
  acc.add(std::log(2.0), 1);  // p = 1/2
  acc.add(std::log(8.0), 1);  // p = 1/8 -> geometric mean of 2 and 8 is 4
  EXPECT_NEAR(acc.mean_nll(), std::log(4.0), 1e-12);
  EXPECT_NEAR(acc.perplexity(), 4.0, 1e-12);
  EXPECT_THROW(m::perplexity(1.0, 0), gmsa::Error);
  EXPECT_THROW(m::PerplexityAccumulator{}.perplexity(), gmsa::Error);
}

// ---------------------------------------------------------------- QA

TEST(Qa, NormalizeAnswer) {
  // lower -> drop punctuation -> drop articles as whole words -> collapse whitespace.
  EXPECT_EQ(m::normalize_answer("The  Quick, brown fox!"), "quick brown fox");
  EXPECT_EQ(m::normalize_answer("An apple a day"), "apple day");
  EXPECT_EQ(m::normalize_answer("theater"), "theater");
  EXPECT_EQ(m::normalize_answer("a-team the_end"), "ateam theend");  // punctuation goes first
  // Curly quotes are not ASCII punctuation and not word characters: "the" is still a word.
  EXPECT_EQ(m::normalize_answer("\u201CThe answer\u201D"), "\u201C answer\u201D");
  // 'é' is a word character, so "a" in "aé" is not a whole word; Unicode lowercasing.
  EXPECT_EQ(m::normalize_answer("Aé ÉCOLE"), "aé école");
}

TEST(Qa, ExactMatch) {
  EXPECT_EQ(m::exact_match("the Eiffel Tower.", {"Paris", "Eiffel tower"}), 1.0);
  EXPECT_EQ(m::exact_match("Eiffel Tower in Paris", {"Paris", "Eiffel tower"}), 0.0);
  EXPECT_EQ(m::exact_match("The", {"a"}), 1.0);  // both normalise to ""
}

TEST(Qa, TokenF1) {
  // [eiffel tower in paris] vs [eiffel tower]: 2 common, P 1/2, R 1 -> 2/3;
  // vs [paris]: P 1/4, R 1 -> 0.4; the max is 2/3.
  EXPECT_DOUBLE_EQ(m::f1("Eiffel tower in Paris", {"Paris", "the Eiffel Tower"}), 2.0 / 3);
  // Counter intersection: [x x y] & [x z] = {x: 1}; P 1/3, R 1/2 -> 0.4.
  EXPECT_DOUBLE_EQ(m::f1("x x y", {"x z"}), 0.4);
  EXPECT_EQ(m::f1("The", {"a"}), 0.0);  // SQuAD v1.1: no common tokens -> 0, even if both empty
}

TEST(Qa, SubspanAccuracy) {
  EXPECT_EQ(m::accuracy("It was built in 1889 by Eiffel.", {"1889"}), 1.0);
  EXPECT_EQ(m::accuracy("It was built in 1889 by Eiffel.", {"1890", "gustave eiffel"}), 0.0);
  EXPECT_EQ(m::accuracy("It was built in 1889.", {"88"}), 1.0);  // substring, not token
  EXPECT_EQ(m::accuracy("The answer is Paris", {"PARIS!"}), 1.0);
}

TEST(Qa, EmptyGoldsThrow) {
  EXPECT_THROW(m::exact_match("x", {}), gmsa::Error);
  EXPECT_THROW(m::f1("x", {}), gmsa::Error);
  EXPECT_THROW(m::accuracy("x", {}), gmsa::Error);
}

TEST(Qa, Aggregator) {
  m::QaAggregator agg;
  EXPECT_EQ(agg.count(), 0);
  EXPECT_EQ(agg.mean().f1, 0.0);
  agg.add("Paris", {"Paris"});                  // em 1, f1 1, acc 1
  agg.add("x x y", {"x z"});                    // em 0, f1 0.4, acc 0
  agg.add("in Paris, France", {"paris"});       // em 0, f1 2*(1/3)/(4/3) = 0.5, acc 1
  EXPECT_EQ(agg.count(), 3);
  const auto mean = agg.mean();
  EXPECT_DOUBLE_EQ(mean.em, 1.0 / 3);
  EXPECT_DOUBLE_EQ(mean.f1, (1.0 + 0.4 + 0.5) / 3);
  EXPECT_DOUBLE_EQ(mean.acc, 2.0 / 3);
}
