#include "gmsa/eval/evaluate.h"

#include "gmsa/text/prompt_format.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "gmsa/compressor/decoder_input.h"
#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/data/convert.h"
#include "gmsa/data/corpus.h"
#include "gmsa/data/qa.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/metrics/metrics.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace {

const std::vector<std::string> kKnownMethods{"original", "closed-book", "gmsa", "tcp"};

bool is_compressed(const std::string& method) { return method == "gmsa" || method == "tcp"; }

// A (method, rate) pair: one row of the table.
using RowKey = std::pair<std::string, int64_t>;

// Uncompressed methods first, then each rate's compressed methods (the paper groups rows by
// compression constraint).
std::vector<RowKey> row_order(const std::vector<std::string>& methods,
                              const std::vector<int64_t>& rates) {
  std::vector<RowKey> rows;
  for (const auto& m : methods)
    if (!is_compressed(m)) rows.emplace_back(m, 0);
  for (int64_t r : rates)
    for (const auto& m : methods)
      if (is_compressed(m)) rows.emplace_back(m, r);
  return rows;
}

// The methods to run; each compressed one must have a compressor and some rate.
std::vector<std::string> resolve_methods(const EvalOptions& opts,
                                         const std::vector<std::string>& compressor_methods) {
  std::vector<std::string> methods = opts.methods;
  if (methods.empty()) {
    methods = {"original", "closed-book"};
    methods.insert(methods.end(), compressor_methods.begin(), compressor_methods.end());
  }
  for (const auto& m : methods) {
    if (!is_compressed(m)) continue;
    if (std::find(compressor_methods.begin(), compressor_methods.end(), m) == compressor_methods.end())
      fail("eval: method {} needs a {} compressor (--compressor DIR)", m, m);
    GMSA_CHECK(!opts.rates.empty(), "eval: method {} needs at least one rate (--rates)", m);
  }
  return methods;
}

// The token the restoration target ends with: the tokenizer's EOS, else the model's.
int64_t target_eos(const Tokenizer& tok, const ModelConfig& mc) {
  if (tok.eos_id() >= 0) return tok.eos_id();
  return mc.eos_token_ids.empty() ? -1 : mc.eos_token_ids.front();
}

std::vector<int64_t> to_int64(const std::vector<int>& ids) { return {ids.begin(), ids.end()}; }

std::string decode(const Tokenizer& tok, const std::vector<int64_t>& ids) {
  return tok.decode(std::vector<int>(ids.begin(), ids.end()));
}

// Compresses a batch of contexts at one rate: right-padded ids on the decoder's device,
// lengths and rates on the host (the compressor reads them there).
SoftTokens compress_batch(Compressor& comp, const std::vector<const EncodedExample*>& batch,
                          int64_t rate, torch::Device device) {
  const int64_t B = batch.size();
  int64_t L = 0;
  for (const auto* ex : batch) L = std::max<int64_t>(L, ex->context.size());
  auto ids = torch::zeros({B, L}, torch::kLong);
  auto lengths = torch::empty({B}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const auto& c = batch[b]->context;
    ids[b].narrow(0, 0, c.size()).copy_(torch::tensor(c, torch::kLong));
    lengths[b] = static_cast<int64_t>(c.size());
  }
  return comp->forward(ids.to(device), lengths, torch::full({B}, rate, torch::kLong));
}

SoftTokens slice_rows(const SoftTokens& s, int64_t start, int64_t n) {
  if (!s.embeds.defined()) return s;
  return {s.embeds.narrow(0, start, n), s.mask.narrow(0, start, n), s.lengths.narrow(0, start, n)};
}

// Prompt || target per row, right-padded, for teacher forcing.
TextBatch text_batch(const std::vector<std::vector<int64_t>>& prompts,
                     const std::vector<std::vector<int64_t>>& targets) {
  const int64_t B = prompts.size();
  int64_t P = 1;
  for (int64_t b = 0; b < B; ++b) P = std::max<int64_t>(P, prompts[b].size() + targets[b].size());
  TextBatch t{torch::zeros({B, P}, torch::kLong), torch::empty({B}, torch::kLong),
              torch::empty({B}, torch::kLong)};
  for (int64_t b = 0; b < B; ++b) {
    auto row = prompts[b];
    row.insert(row.end(), targets[b].begin(), targets[b].end());
    t.ids[b].narrow(0, 0, row.size()).copy_(torch::tensor(row, torch::kLong));
    t.prompt_lengths[b] = static_cast<int64_t>(prompts[b].size());
    t.target_lengths[b] = static_cast<int64_t>(targets[b].size());
  }
  return t;
}

struct BatchOutput {
  std::vector<std::string> predictions;
  double nll = 0;
  int64_t tokens = 0;
};

// Summed target NLL of a batch, in row chunks that keep the [rows, T, V] fp32 logits near
// 1 GiB (a 128k vocabulary times 1k positions is 0.5 GiB per row).
void add_target_nll(Decoder& dec, const SoftTokens& soft, const TextBatch& text, BatchOutput& out) {
  const int64_t B = text.ids.size(0);
  const int64_t soft_len = soft.embeds.defined() ? soft.embeds.size(1) : 0;
  const int64_t per_row = (soft_len + text.ids.size(1)) * dec->config().vocab_size * 4;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 30) / std::max<int64_t>(per_row, 1));
  const auto device = dec->model->embed_tokens->weight.device();
  for (int64_t start = 0; start < B; start += chunk) {
    const int64_t n = std::min(chunk, B - start);
    TextBatch part{text.ids.narrow(0, start, n), text.prompt_lengths.narrow(0, start, n),
                   text.target_lengths.narrow(0, start, n)};
    auto sums = target_loss(dec, pack_decoder_input(dec, slice_rows(soft, start, n), part.to(device)));
    out.nll += sums.nll_sum.item<double>();
    out.tokens += sums.tokens.item<int64_t>();
  }
}

struct MethodRun {
  Decoder& decoder;
  const Tokenizer& tok;
  Compressor* compressor;  // null for uncompressed methods
  std::string method;
  int64_t rate;
  const EvalOptions& opts;
};

BatchOutput run_batch(const MethodRun& run, const std::vector<const EncodedExample*>& batch) {
  torch::NoGradGuard no_grad;
  auto& dec = run.decoder;
  const auto device = dec->model->embed_tokens->weight.device();
  SoftTokens soft;
  if (run.compressor) soft = compress_batch(*run.compressor, batch, run.rate, device);

  std::vector<GenerationPrompt> prompts(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    prompts[b].ids = method_prompt_ids(run.method, *batch[b], run.tok);
    if (soft.embeds.defined())
      prompts[b].prefix_embeds = soft.embeds[b].narrow(0, 0, soft.lengths[b].item<int64_t>());
  }
  GenerationConfig gen;
  gen.max_new_tokens = run.opts.max_new_tokens;
  gen.repetition_penalty = run.opts.repetition_penalty;
  gen.seed = run.opts.seed;
  BatchOutput out;
  for (const auto& tokens : generate(dec, prompts, gen).tokens)
    out.predictions.push_back(decode(run.tok, tokens));

  if (run.opts.task == "restore") {
    const int64_t eos = target_eos(run.tok, dec->config());
    std::vector<std::vector<int64_t>> prompt_ids, targets;
    for (size_t b = 0; b < batch.size(); ++b) {
      prompt_ids.push_back(prompts[b].ids);
      targets.push_back(batch[b]->context);
      if (eos >= 0) targets.back().push_back(eos);
    }
    add_target_nll(dec, soft, text_batch(prompt_ids, targets), out);
  }
  return out;
}

std::string upper_method(const std::string& method) {
  if (method == "gmsa") return "GMSA";
  if (method == "tcp") return "TCP";
  return method;
}

// "gmsa" or "tcp" from a compressor file's metadata, without building it.
std::string compressor_file_method(const std::string& dir_or_file) {
  const std::string path =
      is_directory(dir_or_file) ? join_path(dir_or_file, kCompressorFile) : dir_or_file;
  SafetensorsFile f(path);
  auto it = f.metadata().find("compressor");
  if (it == f.metadata().end()) fail("{}: not a GMSA compressor file", path);
  try {
    return CompressorConfig::from_json(nlohmann::json::parse(it->second), path).method;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed compressor metadata: {}", path, e.what());
  }
}

bool has_decoder_delta(const std::string& dir_or_file) {
  return is_directory(dir_or_file) && file_exists(join_path(dir_or_file, kDecoderDeltaFile));
}

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return torch::kFloat;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  fail("unknown dtype \"{}\" (fp32, bf16)", name);
}

// Appends `from`'s rows and predictions to `into` and restores the canonical row order.
void merge_result(EvalResult& into, EvalResult from, const std::vector<RowKey>& order) {
  for (auto& r : from.rows) into.rows.push_back(std::move(r));
  for (auto& p : from.predictions) into.predictions.push_back(std::move(p));
  auto rank = [&](const std::string& m, int64_t rate) {
    return std::find(order.begin(), order.end(), RowKey{m, rate}) - order.begin();
  };
  std::stable_sort(into.rows.begin(), into.rows.end(),
                   [&](const EvalRow& a, const EvalRow& b) { return rank(a.method, a.rate) < rank(b.method, b.rate); });
  std::stable_sort(into.predictions.begin(), into.predictions.end(),
                   [&](const EvalPrediction& a, const EvalPrediction& b) {
                     return rank(a.method, a.rate) < rank(b.method, b.rate);
                   });
}

nlohmann::json options_json(const EvalOptions& o) {
  return {{"task", o.task},
          {"methods", o.methods},
          {"rates", o.rates},
          {"max_samples", o.max_samples},
          {"batch_size", o.batch_size},
          {"max_new_tokens", o.max_new_tokens},
          {"repetition_penalty", o.repetition_penalty},
          {"max_context_tokens", o.max_context_tokens},
          {"question_template", o.question_template},
          {"restore_prompt", o.restore_prompt},
          {"seed", o.seed}};
}

}  // namespace

void EvalOptions::validate() const {
  if (task != "restore" && task != "qa") fail("eval: --task must be restore or qa, got \"{}\"", task);
  std::set<std::string> seen;
  for (const auto& m : methods) {
    if (std::find(kKnownMethods.begin(), kKnownMethods.end(), m) == kKnownMethods.end())
      fail("eval: unknown method \"{}\" (original, closed-book, gmsa, tcp)", m);
    if (!seen.insert(m).second) fail("eval: method \"{}\" listed twice", m);
  }
  for (int64_t r : rates) GMSA_CHECK(r >= 1, "eval: compression rates must be >= 1, got {}", r);
  if (std::set<int64_t>(rates.begin(), rates.end()).size() != rates.size())
    fail("eval: a compression rate is listed twice");
  GMSA_CHECK(batch_size >= 1, "eval: --batch-size must be >= 1, got {}", batch_size);
  GMSA_CHECK(max_new_tokens >= 1, "eval: --max-new-tokens must be >= 1, got {}", max_new_tokens);
  GMSA_CHECK(repetition_penalty > 0, "eval: --repetition-penalty must be > 0, got {}", repetition_penalty);
  GMSA_CHECK(max_context_tokens >= 1, "eval: --max-context-tokens must be >= 1, got {}", max_context_tokens);
}

std::string dataset_name(const std::string& path) {
  std::filesystem::path p(path);
  if (p.extension() == ".gz") p = p.stem();
  return p.stem().string();
}

std::vector<EvalExample> load_eval_examples(const std::string& path, const EvalOptions& opts) {
  std::vector<EvalExample> out;
  auto full = [&] { return opts.max_samples >= 0 && static_cast<int64_t>(out.size()) >= opts.max_samples; };
  if (opts.task == "restore") {
    CorpusReader reader(path);
    std::string doc;
    while (!full() && reader.next(doc))
      out.push_back({std::to_string(out.size()), doc, opts.restore_prompt, {}});
  } else {
    auto qa = read_qa_jsonl(path);
    for (auto& ex : qa.examples) {
      if (full()) break;
      std::string id = ex.id.empty() ? std::to_string(out.size()) : ex.id;
      auto prompt = format_template(opts.question_template, {{"question", ex.prompt}}, "--question-template");
      out.push_back({std::move(id), std::move(ex.input), std::move(prompt), std::move(ex.answers)});
    }
  }
  if (out.empty()) fail("{}: no examples", path);
  return out;
}

EncodedExample encode_example(const Tokenizer& tok, const EvalExample& ex, int64_t max_context_tokens,
                              const std::string& prompt_format) {
  auto ctx = tok.encode(ex.context);
  truncate_tokens(ctx, max_context_tokens, TruncateKeep::Head);
  if (ctx.empty()) fail("example {}: the context is empty after tokenization", ex.id);
  return {to_int64(ctx), to_int64(encode_user_turn(tok, prompt_format, ex.prompt))};
}

std::vector<int64_t> method_prompt_ids(const std::string& method, const EncodedExample& ex,
                                       const Tokenizer& tok) {
  if (is_compressed(method)) return ex.prompt;
  std::vector<int64_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  if (method == "original") {
    ids.insert(ids.end(), ex.context.begin(), ex.context.end());
    for (int id : tok.encode("\n")) ids.push_back(id);
  } else if (method != "closed-book") {
    fail("eval: unknown method \"{}\"", method);
  }
  ids.insert(ids.end(), ex.prompt.begin(), ex.prompt.end());
  return ids;
}

EvalRow score_predictions(const std::string& task, const std::vector<std::string>& predictions,
                          const std::vector<std::vector<std::string>>& references) {
  GMSA_CHECK(predictions.size() == references.size(), "eval: {} predictions for {} references",
             predictions.size(), references.size());
  const size_t n = predictions.size();
  EvalRow row;
  row.examples = n;
  if (task == "qa") {
    metrics::QaAggregator agg;
    for (size_t i = 0; i < n; ++i) agg.add(predictions[i], references[i]);
    const auto mean = agg.mean();
    row.acc = mean.acc, row.em = mean.em, row.f1 = mean.f1;
    return row;
  }
  std::vector<std::string> refs(n);
  for (size_t i = 0; i < n; ++i) {
    GMSA_CHECK(references[i].size() == 1, "eval: restoration has one reference per example");
    refs[i] = references[i].front();
    const auto r = metrics::rouge(predictions[i], refs[i]);
    row.prefix_em += metrics::prefix_em(predictions[i], refs[i]) / n;
    row.rouge1 += r.rouge1.f1 / n;
    row.rouge2 += r.rouge2.f1 / n;
    row.rougeL += r.rougeL.f1 / n;
  }
  row.bleu = metrics::corpus_bleu(predictions, {refs}).score;
  return row;
}

std::string EvalRow::label() const {
  if (method == "original") return "Original";
  if (method == "closed-book") return "Closed-book";
  return fmt::format("{}@{}x", upper_method(method), rate);
}

nlohmann::json EvalResult::to_json() const {
  auto rows_json = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j{{"method", r.method}, {"rate", r.rate}, {"label", r.label()}, {"examples", r.examples}};
    if (task == "qa") {
      j.update({{"acc", r.acc}, {"em", r.em}, {"f1", r.f1}});
    } else {
      j.update({{"bleu", r.bleu}, {"prefix_em", r.prefix_em}, {"rouge1", r.rouge1},
                {"rouge2", r.rouge2}, {"rougeL", r.rougeL}, {"ppl", r.ppl}});
    }
    rows_json.push_back(std::move(j));
  }
  return {{"task", task}, {"dataset", dataset}, {"rows", rows_json}};
}

EvalResult run_eval(Decoder& decoder, const Tokenizer& tok, const std::vector<Compressor>& compressors,
                    const std::vector<EvalExample>& examples, const std::string& dataset,
                    const EvalOptions& opts) {
  opts.validate();
  GMSA_CHECK(tok.vocab_size() <= decoder->config().vocab_size,
             "eval: the tokenizer has {} tokens but the model's vocabulary is {}", tok.vocab_size(),
             decoder->config().vocab_size);
  std::map<std::string, Compressor> by_method;
  std::vector<std::string> compressor_methods;
  for (const auto& c : compressors) {
    const auto& m = c->config().method;
    if (!by_method.emplace(m, c).second) fail("eval: two {} compressors given (one per method)", m);
    compressor_methods.push_back(m);
  }
  const auto methods = resolve_methods(opts, compressor_methods);
  torch::manual_seed(opts.seed);

  std::vector<EncodedExample> encoded;
  std::vector<std::vector<std::string>> references;
  for (const auto& ex : examples) {
    encoded.push_back(encode_example(tok, ex, opts.max_context_tokens, opts.prompt_format));
    references.push_back(opts.task == "qa" ? ex.answers
                                           : std::vector<std::string>{decode(tok, encoded.back().context)});
  }

  EvalResult result{opts.task, dataset, {}, {}};
  for (const auto& [method, rate] : row_order(methods, opts.rates)) {
    const auto t0 = std::chrono::steady_clock::now();
    Compressor* comp = is_compressed(method) ? &by_method.at(method) : nullptr;
    if (comp) (*comp)->eval();
    MethodRun run{decoder, tok, comp, method, rate, opts};
    BatchOutput all;
    for (size_t start = 0; start < encoded.size(); start += opts.batch_size) {
      std::vector<const EncodedExample*> batch;
      for (size_t i = start; i < std::min(encoded.size(), start + opts.batch_size); ++i)
        batch.push_back(&encoded[i]);
      auto out = run_batch(run, batch);
      all.predictions.insert(all.predictions.end(), out.predictions.begin(), out.predictions.end());
      all.nll += out.nll;
      all.tokens += out.tokens;
    }
    EvalRow row = score_predictions(opts.task, all.predictions, references);
    row.method = method;
    row.rate = rate;
    if (opts.task == "restore") row.ppl = metrics::perplexity(all.nll, all.tokens);
    for (size_t i = 0; i < examples.size(); ++i)
      result.predictions.push_back({examples[i].id, method, rate, all.predictions[i], references[i]});
    spdlog::info("eval {} {}: {} examples in {:.1f} s", dataset, row.label(), row.examples,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    result.rows.push_back(std::move(row));
  }
  return result;
}

std::vector<EvalResult> run_eval(const EvalFiles& files, const EvalOptions& opts) {
  opts.validate();
  GMSA_CHECK(!files.data.empty(), "eval: no --data file given");
  std::vector<std::string> comp_methods;
  for (const auto& dir : files.compressors) comp_methods.push_back(compressor_file_method(dir));
  const auto methods = resolve_methods(opts, comp_methods);
  const auto order = row_order(methods, opts.rates);

  std::vector<std::vector<EvalExample>> examples;
  std::vector<EvalResult> results;
  std::set<std::string> names;
  for (const auto& path : files.data) {
    examples.push_back(load_eval_examples(path, opts));
    results.push_back({opts.task, dataset_name(path), {}, {}});
    if (!names.insert(results.back().dataset).second)
      fail("{}: two data files named {} (tables name datasets by file stem)", path, results.back().dataset);
  }
  LoadOptions load;
  load.device = parse_device(files.device);
  load.dtype = parse_dtype(files.dtype);
  load.tokenizer = files.tokenizer;
  load.require_tokenizer = true;

  auto wanted = [&](const std::string& m) {
    return std::find(methods.begin(), methods.end(), m) != methods.end();
  };
  // A group = one decoder and the methods it serves: compressors that change decoder weights
  // (KEFT) each get a freshly loaded decoder, everything else shares the base one.
  auto run_group = [&](const std::vector<size_t>& comp_indices, bool with_uncompressed) {
    EvalOptions sub = opts;
    sub.methods.clear();
    for (const auto& m : methods)
      if (with_uncompressed && !is_compressed(m)) sub.methods.push_back(m);
    for (size_t i : comp_indices) sub.methods.push_back(comp_methods[i]);
    if (sub.methods.empty()) return;
    auto model = load_pretrained(files.model, load);
    std::vector<Compressor> comps;
    for (size_t i : comp_indices) comps.push_back(load_compressor(files.compressors[i], model.decoder));
    for (size_t d = 0; d < examples.size(); ++d)
      merge_result(results[d], run_eval(model.decoder, *model.tokenizer, comps, examples[d],
                                        results[d].dataset, sub), order);
  };
  std::vector<size_t> shared, own;
  std::set<std::string> given;
  for (size_t i = 0; i < files.compressors.size(); ++i) {
    if (!given.insert(comp_methods[i]).second)
      fail("{}: a second {} compressor (one per method)", files.compressors[i], comp_methods[i]);
    if (!wanted(comp_methods[i])) {
      spdlog::warn("{}: method {} is not in --methods; skipped", files.compressors[i], comp_methods[i]);
      continue;
    }
    (has_decoder_delta(files.compressors[i]) ? own : shared).push_back(i);
  }
  run_group(shared, /*with_uncompressed=*/true);
  for (size_t i : own) {
    spdlog::info("{} changes decoder weights: evaluating it on a decoder of its own", files.compressors[i]);
    run_group({i}, false);
  }
  return results;
}

std::string render_table(const std::vector<EvalResult>& results) {
  std::vector<std::string> tasks;
  for (const auto& r : results)
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  std::string out;
  for (const auto& task : tasks) {
    std::vector<const EvalResult*> group;
    std::vector<std::string> labels;
    for (const auto& r : results) {
      if (r.task != task) continue;
      group.push_back(&r);
      for (const auto& row : r.rows)
        if (std::find(labels.begin(), labels.end(), row.label()) == labels.end()) labels.push_back(row.label());
    }
    const bool qa = task == "qa";
    const std::vector<std::string> metric_names =
        qa ? std::vector<std::string>{"Acc", "EM", "F1"}
           : std::vector<std::string>{"BLEU", "Prefix-EM", "ROUGE-1", "ROUGE-2", "ROUGE-L", "PPL"};
    // QA columns always name their dataset (the paper's layout); restore ones only when the
    // table covers several datasets.
    const bool name_datasets = qa || group.size() > 1;
    std::string header = "| Method |", rule = "|---|";
    for (const auto* r : group)
      for (const auto& m : metric_names) {
        header += name_datasets ? fmt::format(" {} {} |", r->dataset, m) : fmt::format(" {} |", m);
        rule += "---:|";
      }
    if (!out.empty()) out += "\n";
    out += fmt::format("**{}**\n\n{}\n{}\n", qa ? "Question answering" : "Context restoration", header, rule);
    for (const auto& label : labels) {
      std::string line = "| " + label + " |";
      for (const auto* r : group) {
        auto it = std::find_if(r->rows.begin(), r->rows.end(), [&](const EvalRow& x) { return x.label() == label; });
        if (it == r->rows.end()) {
          for (size_t k = 0; k < metric_names.size(); ++k) line += " - |";
          continue;
        }
        const std::vector<double> values =
            qa ? std::vector<double>{100 * it->acc, 100 * it->em, 100 * it->f1}
               : std::vector<double>{it->bleu, 100 * it->prefix_em, 100 * it->rouge1,
                                     100 * it->rouge2, 100 * it->rougeL, it->ppl};
        for (double v : values) line += fmt::format(" {:.2f} |", v);
      }
      out += line + "\n";
    }
  }
  return out;
}

void write_eval_outputs(const std::string& dir, const std::vector<EvalResult>& results,
                        const EvalOptions& opts) {
  std::filesystem::create_directories(dir);
  std::string lines;
  auto all = nlohmann::json::array();
  for (const auto& r : results) {
    all.push_back(r.to_json());
    for (const auto& p : r.predictions)
      lines += nlohmann::json{{"dataset", r.dataset}, {"id", p.id}, {"method", p.method},
                              {"rate", p.rate}, {"prediction", p.prediction},
                              {"references", p.references}}
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
               "\n";
  }
  write_file_atomic(join_path(dir, "predictions.jsonl"), lines);
  nlohmann::json metrics{{"options", options_json(opts)}, {"results", all}};
  write_file_atomic(join_path(dir, "metrics.json"),
                    metrics.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  write_file_atomic(join_path(dir, "table.md"), render_table(results));
}

}  // namespace gmsa
