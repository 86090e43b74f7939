#pragma once
// Seeded synthetic knowledge world for the quickstart: a small mirror of the GMSA paper's
// NaturalQuestions multi-document QA. Fictional people with facts from closed vocabularies,
// one document per person, and questions whose context holds the gold document among
// distractors. Held-out people (eval questions) never appear in the pretraining corpus, so
// answering needs the context. See docs/synthetic-data.md.
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace gmsa::data {

// std::mt19937_64 (its output sequence is fixed by the C++ standard) with our own
// rejection-sampled integers and Fisher-Yates shuffle: std::uniform_int_distribution and
// std::shuffle are implementation-defined, so files would differ between standard libraries.
class SynthRng {
 public:
  explicit SynthRng(uint64_t seed) : engine_(seed) {}
  // Uniform in [0, n); n > 0.
  uint64_t below(uint64_t n);
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi);
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  std::mt19937_64 engine_;
};

// Where the gold document sits among the K documents of a context (0-based).
struct GoldPlacement {
  enum class Kind { First, Middle, Last, Random, Index };
  Kind kind = Kind::Random;
  int index = 0;  // for Kind::Index

  // "first" | "middle" | "last" | "random" | a 0-based index; throws gmsa::Error otherwise.
  static GoldPlacement parse(const std::string& text);
  std::string to_string() const;
  // middle = (K-1)/2, the lost-in-the-middle convention (K=20 -> 9, K=3 -> 1).
  int resolve(int docs_per_context, SynthRng& rng) const;
};

struct SynthConfig {
  uint64_t seed = 1;
  int entities = 300;         // people whose documents form corpus.txt and qa_train
  int heldout_entities = 60;  // people of corpus_eval.txt and qa_eval only
  int docs_per_context = 3;   // K: gold + K-1 distractors
  GoldPlacement train_gold;   // random by default, so training teaches no position shortcut
  GoldPlacement eval_gold;
  int train_questions = 2000;
  int eval_questions = 200;
};

// The attributes every person has, in a fixed order (the index is used below).
const std::vector<std::string>& synth_attribute_names();
// The closed vocabulary of one attribute (years as decimal strings).
const std::vector<std::string>& synth_attribute_values(size_t attribute);

struct SynthEntity {
  std::string name;
  bool heldout = false;
  bool female = false;              // chooses he/she in the document; never asked
  std::vector<std::string> values;  // one per attribute, aligned with synth_attribute_names()
  std::string document;             // one paragraph, no title
};

struct SynthQuestion {
  std::string id;
  std::string input;                // K lines "Document [i](Title: NAME) TEXT"
  std::string prompt;               // the question
  std::vector<std::string> answer;  // {value}
  // For inspection and tests (not written to the JSONL, which keeps the official schema).
  int gold_index = 0;                // 0-based position of the gold document
  std::vector<int> context_entities;  // entity indices in document order
  size_t attribute = 0;
};

struct SynthWorld {
  SynthConfig config;
  std::vector<SynthEntity> entities;  // training entities first, then held-out ones
  std::vector<SynthQuestion> train;
  std::vector<SynthQuestion> eval;
};

// Validates the config (gmsa::Error naming the option) and builds everything in memory.
SynthWorld generate_synth_world(const SynthConfig& config);

// The dataset files by name: corpus.txt, corpus_eval.txt, qa_train.jsonl, qa_eval.jsonl,
// world.json. Deterministic byte-for-byte in the config.
std::vector<std::pair<std::string, std::string>> render_synth_files(const SynthWorld& world);

// Creates out_dir if needed and writes every file atomically.
void write_synth_dataset(const SynthWorld& world, const std::string& out_dir);

}  // namespace gmsa::data
