#pragma once
// Evaluation of GMSA and its baselines (docs/evaluation.md): context restoration (BLEU,
// Prefix-EM, ROUGE, perplexity) and question answering (Acc / EM / F1), with the paper's
// decoding settings. Methods and the decoder input each one sees:
//   original     [BOS][context][sep][prompt]  sep = the tokenizer's encoding of "\n"
//   closed-book  [BOS][prompt]
//   gmsa, tcp    [soft tokens][prompt]        no BOS; soft = compressor(context) at a rate
// The context is encoded without BOS and truncated (head kept) to max_context_tokens; the
// original method sees exactly those tokens.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "gmsa/compressor/compressor.h"
#include "gmsa/model/decoder.h"
#include "gmsa/text/tokenizer.h"

namespace gmsa {

inline constexpr const char* kRestorePrompt = "Restate the aforementioned Text.";

struct EvalOptions {
  std::string task = "restore";  // restore | qa
  // original | closed-book | gmsa | tcp; empty: original, closed-book, then each compressor's
  // method in the order the compressors are given.
  std::vector<std::string> methods;
  std::vector<int64_t> rates{4, 8};  // compression rates of gmsa / tcp
  int64_t max_samples = -1;          // first N examples (-1: all)
  int64_t batch_size = 8;
  int64_t max_new_tokens = 100;
  double repetition_penalty = 1.3;
  int64_t max_context_tokens = 512;
  std::string prompt_format;  // a chat preset (text/prompt_format.h) around the prompt; "" = raw
  std::string question_template = "{question}";  // qa: the prompt; {question} = "prompt"
  std::string restore_prompt = kRestorePrompt;
  uint64_t seed = 0;

  void validate() const;  // throws gmsa::Error on a bad value
};

// One example of either task: what gets compressed, what follows it, what is scored against.
struct EvalExample {
  std::string id;
  std::string context;
  std::string prompt;  // qa: the question through question_template; restore: restore_prompt
  std::vector<std::string> answers;  // qa only; restore scores against the truncated context
};

// restore: a text corpus or JSONL ("text", else "input"; ids are 0-based document numbers);
// qa: the GMSA QA schema. At most opts.max_samples examples.
std::vector<EvalExample> load_eval_examples(const std::string& path, const EvalOptions& opts);
// The dataset's name in tables: the file name without directory and extensions
// ("data/nq_eval.jsonl.gz" -> "nq_eval").
std::string dataset_name(const std::string& path);

// An example's token ids.
struct EncodedExample {
  std::vector<int64_t> context;  // no BOS, at most max_context_tokens (the head is kept)
  std::vector<int64_t> prompt;   // no BOS
};
EncodedExample encode_example(const Tokenizer& tokenizer, const EvalExample& example,
                              int64_t max_context_tokens, const std::string& prompt_format = "");

// The token ids a method feeds the decoder: the whole input for original / closed-book, the
// part after the soft tokens for gmsa / tcp (layouts at the top of this file). BOS is the
// tokenizer's, left out when it has none.
std::vector<int64_t> method_prompt_ids(const std::string& method, const EncodedExample& ex,
                                       const Tokenizer& tokenizer);

// One row of the result table: a method at a rate. Restore metrics are filled for the restore
// task, QA ones for qa. Scales: BLEU 0..100 (sacreBLEU); the others 0..1; PPL >= 1.
struct EvalRow {
  std::string method;
  int64_t rate = 0;  // 0 for original / closed-book
  int64_t examples = 0;
  double bleu = 0, prefix_em = 0, rouge1 = 0, rouge2 = 0, rougeL = 0, ppl = 0;
  double acc = 0, em = 0, f1 = 0;
  std::string label() const;  // "Original", "Closed-book", "GMSA@4x", "TCP@8x"
};

// A row's text metrics (all but PPL) from its predictions: restore takes one reference per
// example (corpus BLEU, mean Prefix-EM and ROUGE F1), qa the gold answers (mean Acc / EM / F1).
EvalRow score_predictions(const std::string& task, const std::vector<std::string>& predictions,
                          const std::vector<std::vector<std::string>>& references);

struct EvalPrediction {
  std::string id, method;
  int64_t rate = 0;
  std::string prediction;
  std::vector<std::string> references;  // restore: the truncated context; qa: the answers
};

struct EvalResult {
  std::string task, dataset;
  std::vector<EvalRow> rows;
  std::vector<EvalPrediction> predictions;  // grouped by row, examples in file order
  nlohmann::json to_json() const;           // rows only (metrics.json)
};

// Evaluates one dataset. Compressed methods use the compressor of `compressors` whose
// config().method matches (at most one per method); every compressor must be built on
// `decoder`. `dataset` names the result.
EvalResult run_eval(Decoder& decoder, const Tokenizer& tokenizer,
                    const std::vector<Compressor>& compressors,
                    const std::vector<EvalExample>& examples, const std::string& dataset,
                    const EvalOptions& opts);

// Everything `gmsa eval` loads from disk.
struct EvalFiles {
  std::string model;        // HF directory or llama2.c .bin
  std::string tokenizer;    // empty: the model directory's
  std::vector<std::string> data;
  std::vector<std::string> compressors;  // directories (or compressor.safetensors files)
  std::string device = "auto";
  std::string dtype = "fp32";  // fp32 | bf16
};

// Loads the model, compressors and datasets and evaluates each dataset. A compressor that
// carries a decoder delta (KEFT) gets a decoder of its own, so the other methods still see
// the unchanged base model.
std::vector<EvalResult> run_eval(const EvalFiles& files, const EvalOptions& opts);

// A markdown table per task: rows method@rate in first-seen order; columns BLEU / Prefix-EM /
// ROUGE-1 / ROUGE-2 / ROUGE-L / PPL (restore) or Acc / EM / F1 (qa), per dataset. Scores
// are shown in percent (BLEU on its own 0..100 scale), PPL as is.
std::string render_table(const std::vector<EvalResult>& results);

// DIR/predictions.jsonl, DIR/metrics.json (options + every result) and DIR/table.md.
void write_eval_outputs(const std::string& dir, const std::vector<EvalResult>& results,
                        const EvalOptions& opts);

}  // namespace gmsa
