#pragma once
// Converters from the benchmarks used by the GMSA paper to the QA schema (data/qa.h).
// docs/data.md describes each source format and what its conversion produces.
//
// Multi-document formats (nq-litm, nq-oracle, hotpotqa, 2wiki, and the key-value records of
// kv-retrieval) share one pipeline: a list of documents, some marked gold; --num-docs drops
// non-gold documents from the end; --gold-position moves the gold documents (as one block, in
// their own order) to a position; the documents are rendered with the doc template and joined
// with "\n". Randomness comes from std::mt19937_64 seeded with mix_seed(seed, example number),
// so an example's output does not depend on --limit or on the other examples' choices.
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmsa/data/qa.h"

namespace gmsa {

enum class SourceFormat { NqLitm, NqOracle, HotpotQa, TwoWiki, Squad, KvRetrieval };

// "nq-litm", "nq-oracle", "hotpotqa", "2wiki", "squad", "kv-retrieval".
SourceFormat parse_source_format(const std::string& name);
std::string source_format_name(SourceFormat format);
std::vector<std::string> source_format_names();

// Where the gold document(s) go. Index is 0-based (as in Lost in the Middle's gold_at_k).
// For N documents of which g are gold the block starts at: first 0, middle (N-g)/2 (rounded
// down: 4 of 10 for one gold), last N-g, random uniform in [0, N-g], index k (must be <= N-g).
struct GoldPosition {
  enum class Kind { Keep, First, Middle, Last, Random, Index };
  Kind kind = Kind::Keep;
  int64_t index = 0;
  // "keep" | "first" | "middle" | "last" | "random" | a non-negative integer.
  static GoldPosition parse(const std::string& text);
};

struct Document {
  std::string title;
  std::string text;
  bool gold = false;
};

inline constexpr const char* kDefaultDocTemplate = "Document [{index}](Title: {title}) {text}";

struct ConvertOptions {
  int64_t num_docs = 0;                       // 0: format default (all; nq-oracle 10)
  std::optional<GoldPosition> gold_position;  // unset: keep (nq-oracle: random)
  uint64_t seed = 0;
  std::optional<std::string> doc_template;  // unset: kDefaultDocTemplate (squad: raw context)
  std::string question_template = "{question}";
  int64_t limit = 0;  // 0: every example
};

struct ConvertStats {
  int64_t read = 0;                        // source examples looked at
  int64_t written = 0;                     // examples produced
  std::map<std::string, int64_t> skipped;  // reason -> count
  int64_t total_skipped() const;
};

struct ConvertResult {
  std::vector<QaExample> examples;
  ConvertStats stats;
};

// Reads `path` (plain or .gz) in `format` and converts it. Malformed source records throw
// gmsa::Error naming the file and line (or array item); examples that cannot be converted as
// asked (no gold document, gold position out of range, unanswerable, ...) are skipped and
// counted by reason.
ConvertResult convert_dataset(SourceFormat format, const std::string& path,
                              const ConvertOptions& options);

// ---- building blocks (exposed for tests and other tools) ----

// Replaces {name} by values.at(name); "{{" and "}}" are literal braces. An unknown or
// unterminated placeholder throws gmsa::Error naming `what` (e.g. "--doc-template").
std::string format_template(const std::string& tpl,
                            const std::map<std::string, std::string>& values,
                            const std::string& what);

// Drops non-gold documents from the end until at most max_docs remain (max_docs <= 0: none).
void truncate_documents(std::vector<Document>& docs, int64_t max_docs);

// Moves the gold documents to `pos` (see GoldPosition); the others keep their relative order.
// Returns false, leaving docs unchanged, when there is no gold document or the position does
// not fit. Keep always succeeds.
bool place_gold(std::vector<Document>& docs, const GoldPosition& pos, std::mt19937_64& rng);

// Each document through the template ({index} 1-based, {title}, {text}), joined with "\n".
std::string format_documents(const std::vector<Document>& docs, const std::string& doc_template);

// The Lost-in-the-Middle rendering of key-value records: {"k1": "v1",\n "k2": "v2"}.
std::string format_kv_records(const std::vector<std::pair<std::string, std::string>>& records);

// True when `text` contains one of `answers` as whole words, ignoring ASCII case and
// punctuation (used to keep answer-bearing passages out of nq-oracle distractors).
bool contains_answer(const std::string& text, const std::vector<std::string>& answers);

}  // namespace gmsa
