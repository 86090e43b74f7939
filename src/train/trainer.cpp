#include "gmsa/train/trainer.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gmsa/config/config.h"
#include "gmsa/data/corpus.h"
#include "gmsa/data/sampler.h"
#include "gmsa/data/stream.h"
#include "gmsa/dist/grad_sync.h"
#include "gmsa/dist/process_group.h"
#include "gmsa/dist/zero.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/metrics/metrics.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/train/batching.h"
#include "gmsa/train/checkpoint.h"
#include "gmsa/train/flops.h"
#include "gmsa/train/optimizer.h"
#include "gmsa/train/rate_sampler.h"
#include "gmsa/train/schedule.h"
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop_requested{false};

static void on_signal(int) {
  if (g_stop_requested.exchange(true)) std::_Exit(130);  // second signal: exit at once
}

void install_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

namespace {

// ------------------------------------------------------------------ setup

CorpusFormat corpus_format(const RunConfig& cfg) {
  if (cfg.data.format == "text") return CorpusFormat::Text;
  return cfg.data.format == "auto" ? CorpusFormat::Auto : CorpusFormat::Jsonl;
}

std::vector<QaExample> read_examples(const std::string& path, const Stage& stage, const RunConfig& cfg,
                                     int64_t limit = -1) {
  if (stage.reads_qa()) {
    if (cfg.data.format == "text") fail("{}: stage {} needs QA JSONL data, data.format is text", path, stage.name());
    auto r = read_qa_jsonl(path, {cfg.data.skip_bad_lines});
    if (r.skipped > 0) spdlog::warn("{}: skipped {} malformed lines", path, r.skipped);
    if (limit >= 0 && static_cast<int64_t>(r.examples.size()) > limit) r.examples.resize(limit);
    return std::move(r.examples);
  }
  CorpusReader reader(path, corpus_format(cfg));
  std::vector<QaExample> out;
  std::string doc;
  while ((limit < 0 || static_cast<int64_t>(out.size()) < limit) && reader.next(doc)) {
    if (doc.find_first_not_of(" \t\n\r") == std::string::npos) continue;
    QaExample ex;
    ex.id = path + ":" + std::to_string(reader.line());
    ex.input = doc;
    out.push_back(std::move(ex));
  }
  GMSA_CHECK(!out.empty(), "{}: no documents", path);
  return out;
}

std::vector<Sample> tokenize_all(const std::vector<QaExample>& examples, const Stage& stage, const Tokenizer& tok) {
  std::vector<Sample> out;
  out.reserve(examples.size());
  for (const auto& ex : examples) out.push_back(stage.make_sample(ex, tok));
  return out;
}

ModelConfig config_from_init(const RunConfig& cfg, const Tokenizer& tok) {
  const auto& i = cfg.model.init;
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = tok.vocab_size();
  c.hidden_size = i.hidden_size;
  c.intermediate_size = i.intermediate_size;
  c.num_hidden_layers = i.num_layers;
  c.num_attention_heads = i.num_heads;
  c.num_key_value_heads = i.num_kv_heads;
  GMSA_CHECK(i.hidden_size % i.num_heads == 0, "model.init: hidden_size {} is not a multiple of num_heads {}",
             i.hidden_size, i.num_heads);
  c.head_dim = i.hidden_size / i.num_heads;
  c.max_position_embeddings = i.max_position_embeddings;
  c.rope_theta = i.rope_theta;
  c.rms_norm_eps = i.rms_norm_eps;
  c.tie_word_embeddings = i.tie_word_embeddings;
  c.bos_token_id = tok.bos_id();
  if (tok.eos_id() >= 0) c.eos_token_ids = {tok.eos_id()};
  c.pad_token_id = tok.pad_id();
  c.validate("model.init");
  return c;
}

struct Setup {
  std::unique_ptr<GmsaModel> model;
  std::shared_ptr<Tokenizer> tok;
  std::string tokenizer_file;  // sentencepiece file to ship with an lm stage's output
  torch::Device device = torch::kCPU;
};

Setup build(const RunConfig& cfg, const Stage& stage, torch::Device device) {
  Setup s;
  s.device = device;
  const auto dtype = cfg.run.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  Decoder decoder{nullptr};
  if (cfg.model.path.empty()) {
    GMSA_CHECK(stage.name() == "lm", "model.path is empty: only stage lm builds a model from model.init");
    GMSA_CHECK(!cfg.model.tokenizer.empty(), "model.tokenizer is required to build a model from model.init");
    s.tok = load_tokenizer(cfg.model.tokenizer);
    torch::manual_seed(cfg.run.seed);
    decoder = Decoder(config_from_init(cfg, *s.tok));
    torch::NoGradGuard g;
    for (auto& p : decoder->named_parameters())
      if (p.value().dim() >= 2) p.value().normal_(0.0, 0.02);  // GPT-2 / LLaMA-style init
    decoder->to(s.device, dtype);
    decoder->set_compute_dtype(dtype);
  } else {
    auto pm = load_pretrained(cfg.model.path, {s.device, dtype, cfg.model.tokenizer, true});
    decoder = pm.decoder;
    s.tok = pm.tokenizer;
  }
  s.tokenizer_file = cfg.model.tokenizer;
  if (s.tokenizer_file.empty() && !cfg.model.path.empty() && is_directory(cfg.model.path))
    s.tokenizer_file = join_path(cfg.model.path, "tokenizer.model");
  Compressor comp{nullptr};
  if (stage.uses_compressor()) {
    if (!cfg.compressor.path.empty()) {
      comp = load_compressor(cfg.compressor.path, decoder);
    } else {
      CompressorConfig cc;
      cc.method = cfg.compressor.method;
      cc.encoder_layers = cfg.compressor.encoder_layers;
      cc.lora = {cfg.compressor.lora.r, cfg.compressor.lora.alpha, cfg.compressor.lora.dropout};
      cc.lora_targets = cfg.compressor.lora.targets;
      cc.lsa_type = cfg.compressor.lsa.type;
      cc.lsa_layers = cfg.compressor.lsa.layers;
      cc.tcp_mlp_hidden = cfg.compressor.tcp.mlp_hidden;
      const int64_t min_rate = *std::min_element(cfg.data.rates.begin(), cfg.data.rates.end());
      cc.tcp_max_memory = (cfg.data.max_context_tokens + min_rate - 1) / min_rate;
      torch::manual_seed(cfg.run.seed + 1);
      comp = Compressor(decoder, cc);
    }
  }
  s.model = std::make_unique<GmsaModel>(decoder, comp);
  return s;
}

// ------------------------------------------------------------------ logging

// Rank 0 logs to the console and train.log; other ranks only report warnings and errors.
std::shared_ptr<spdlog::logger> stage_logger(const std::string& dir, int64_t rank) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  std::vector<spdlog::sink_ptr> sinks{console};
  if (rank == 0) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(join_path(dir, "train.log"), false));
  auto logger = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  logger->set_pattern(rank == 0 ? "[%Y-%m-%d %H:%M:%S] [%^%l%$] %v"
                                : fmt::format("[%Y-%m-%d %H:%M:%S] [rank {}] [%^%l%$] %v", rank));
  if (rank != 0) logger->set_level(spdlog::level::warn);
  logger->flush_on(spdlog::level::info);  // train.log is readable while the run goes on
  return logger;
}

std::string fmt_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Keeps the metrics file consistent with a resumed run: lines after the checkpoint go.
void truncate_metrics(const std::string& path, int64_t last_step) {
  if (!file_exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t{0}) <= last_step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

// ------------------------------------------------------------------ one stage

class StageRunner {
 public:
  StageRunner(const RunConfig& cfg, std::string dir, const TrainOptions& opts, dist::ProcessGroup& pg,
              torch::Device device)
      : cfg_(cfg), dir_(std::move(dir)), opts_(opts), stage_(make_stage(cfg)), pg_(pg), device_(device) {}

  StageSummary run();

 private:
  void load_data();
  int64_t total_steps() const;
  std::vector<const Sample*> next_micro_batch(std::vector<int64_t>& rates);
  void save_checkpoint(int64_t step);
  int64_t try_resume();
  void export_result();
  nlohmann::json evaluate();
  double step_flops(const std::vector<std::vector<const Sample*>>& micro,
                    const std::vector<std::vector<int64_t>>& rates) const;

  RunConfig cfg_;
  std::string dir_;
  TrainOptions opts_;
  std::unique_ptr<Stage> stage_;
  dist::ProcessGroup& pg_;
  torch::Device device_;
  Setup setup_;
  std::vector<Sample> train_, eval_;
  std::unique_ptr<BatchSampler> sampler_;
  std::unique_ptr<ShuffledStream> stream_;  // data.streaming: documents read as needed
  std::vector<std::unique_ptr<Sample>> streamed_;  // this step's samples from the stream
  std::unique_ptr<RateSampler> rates_;
  NamedTensors trainable_;
  std::unique_ptr<dist::ZeroAdamW> optim_;  // plain AdamW in a single process
  std::unique_ptr<dist::GradSync> sync_;
  std::unique_ptr<CheckpointManager> ckpt_;
  std::shared_ptr<spdlog::logger> log_;
  std::vector<double> losses_;
  int64_t bad_in_row_ = 0, skipped_ = 0;
};

void StageRunner::load_data() {
  GMSA_CHECK(!cfg_.data.train.empty(), "data.train is empty: nothing to train on");
  auto t0 = Clock::now();
  if (!cfg_.data.eval.empty())
    eval_ = tokenize_all(read_examples(cfg_.data.eval, *stage_, cfg_, cfg_.data.eval_samples), *stage_, *setup_.tok);
  rates_ = std::make_unique<RateSampler>(cfg_.data.rates, cfg_.data.rate_weights,
                                         static_cast<uint64_t>(cfg_.run.seed) ^ 0x5eedull);
  if (cfg_.data.streaming) {
    GMSA_CHECK(!stage_->reads_qa(), "data.streaming: stage {} reads QA records; streaming is for corpora (ae, lm)",
               stage_->name());
    GMSA_CHECK(cfg_.stage.epochs == 0, "data.streaming: give stage.steps (a stream has no known length), not stage.epochs");
    stream_ = std::make_unique<ShuffledStream>(cfg_.data.train, corpus_format(cfg_), cfg_.data.stream_buffer,
                                               static_cast<uint64_t>(cfg_.run.seed));
    log_->info("data: streaming {} through a {}-document shuffle buffer, {} held-out", cfg_.data.train,
               cfg_.data.stream_buffer, eval_.size());
    return;
  }
  train_ = tokenize_all(read_examples(cfg_.data.train, *stage_, cfg_), *stage_, *setup_.tok);
  std::vector<int64_t> lengths;
  int64_t tokens = 0;
  for (const auto& s : train_) {
    lengths.push_back(s.length());
    tokens += s.length();
  }
  SamplerOptions so;
  // Every rank draws the same global batch (B per rank) and keeps its own rows, so sampler
  // and rate states stay identical and N ranks of B equal one process of N * B.
  so.batch_size = cfg_.stage.batch_size * pg_.world_size();
  so.seed = static_cast<uint64_t>(cfg_.run.seed);
  so.shuffle = cfg_.data.shuffle;
  so.bucket = cfg_.data.bucket;
  sampler_ = std::make_unique<BatchSampler>(lengths, so);
  log_->info("data: {} training examples ({} tokens), {} held-out; tokenised in {:.1f}s", train_.size(), tokens,
             eval_.size(), std::chrono::duration<double>(Clock::now() - t0).count());
}

int64_t StageRunner::total_steps() const {
  if (cfg_.stage.epochs > 0) {
    const double batches = cfg_.stage.epochs * static_cast<double>(sampler_->batches_per_epoch());
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(batches / cfg_.stage.grad_accum)));
  }
  return cfg_.stage.steps;
}

std::vector<const Sample*> StageRunner::next_micro_batch(std::vector<int64_t>& rates) {
  std::vector<const Sample*> batch;
  rates.clear();
  const int64_t B = cfg_.stage.batch_size, lo = pg_.rank() * B;
  if (stream_) {
    // Every rank reads the same stream and tokenises only its own rows.
    for (int64_t k = 0; k < B * pg_.world_size(); ++k) {
      std::string doc = stream_->next();
      const int64_t rate = stage_->uses_compressor() ? rates_->next() : 1;
      if (k < lo || k >= lo + B) continue;
      QaExample ex;
      ex.id = cfg_.data.train + "#" + std::to_string(stream_->position());
      ex.input = std::move(doc);
      streamed_.push_back(std::make_unique<Sample>(stage_->make_sample(ex, *setup_.tok)));
      batch.push_back(streamed_.back().get());
      rates.push_back(rate);
    }
    return batch;
  }
  const auto global = sampler_->next_batch();
  for (int64_t k = 0; k < static_cast<int64_t>(global.size()); ++k) {
    const int64_t rate = stage_->uses_compressor() ? rates_->next() : 1;
    if (k < lo || k >= lo + B) continue;
    batch.push_back(&train_[static_cast<size_t>(global[static_cast<size_t>(k)])]);
    rates.push_back(rate);
  }
  return batch;
}

void StageRunner::save_checkpoint(int64_t step) {
  auto optimizer_state = optim_->state_tensors();  // a collective under ZeRO-1: every rank calls it
  if (!pg_.is_main()) return;
  auto rng = capture_rng();
  auto path = ckpt_->save(step, [&](const std::string& tmp) {
    NamedTensors params;
    for (auto& [n, t] : trainable_) params.emplace_back(n, t.detach());
    save_safetensors(join_path(tmp, "trainable.safetensors"), params);
    save_safetensors(join_path(tmp, "optimizer.safetensors"), optimizer_state);
    nlohmann::json st = {{"step", step},
                         {"optimizer_steps", optim_->step_count()},
                         {"sampler", sampler_ ? sampler_->state().to_json() : nlohmann::json()},
                         {"stream_position", stream_ ? stream_->position() : 0},
                         {"rates", rates_->state()},
                         {"rng", rng_to_json(rng)},
                         {"skipped_steps", skipped_},
                         {"bad_in_row", bad_in_row_},
                         {"losses", losses_}};
    save_json_atomic(join_path(tmp, "state.json"), st);
  });
  log_->info("checkpoint: {}", path);
}

int64_t StageRunner::try_resume() {
  std::optional<std::string> latest;
  if (!opts_.resume_dir.empty() || cfg_.train.resume == "auto") latest = ckpt_->latest();
  if (!latest) {
    if (!opts_.resume_dir.empty()) fail("{}: --resume given but no complete checkpoint found", dir_);
    return 0;
  }
  const auto& d = *latest;
  SafetensorsFile params(join_path(d, "trainable.safetensors"));
  torch::NoGradGuard g;
  for (auto& [n, t] : trainable_) {
    if (!params.has(n)) fail("{}: checkpoint lacks trained tensor {} (was the config changed?)", d, n);
    auto src = params.tensor(n);
    if (src.sizes() != t.sizes()) fail("{}: tensor {} has another shape than the model's", d, n);
    t.copy_(src);
  }
  SafetensorsFile opt(join_path(d, "optimizer.safetensors"));
  auto st = load_json(join_path(d, "state.json"));
  NamedTensors state;
  for (const auto& k : opt.keys()) state.emplace_back(k, opt.tensor(k));
  optim_->load_state(state, st.at("optimizer_steps").get<int64_t>());
  if (sampler_) sampler_->restore(SamplerState::from_json(st.at("sampler")));
  if (stream_) stream_->skip_to(st.at("stream_position").get<int64_t>());
  rates_->restore(st.at("rates").get<std::string>());
  restore_rng(rng_from_json(st.at("rng")));
  skipped_ = st.at("skipped_steps").get<int64_t>();
  bad_in_row_ = st.at("bad_in_row").get<int64_t>();
  losses_ = st.at("losses").get<std::vector<double>>();
  const int64_t step = st.at("step").get<int64_t>();
  if (pg_.is_main()) truncate_metrics(join_path(dir_, "metrics.jsonl"), step);
  log_->info("resumed from {} at step {}", d, step);
  return step;
}

double StageRunner::step_flops(const std::vector<std::vector<const Sample*>>& micro,
                               const std::vector<std::vector<int64_t>>& rates) const {
  FlopCounter fc(setup_.model->decoder->config(), setup_.model->compressor.is_empty()
                                                        ? nullptr
                                                        : &setup_.model->compressor->config(),
                 stage_->name());
  double total = 0;
  for (size_t i = 0; i < micro.size(); ++i)
    for (size_t j = 0; j < micro[i].size(); ++j) {
      const auto* s = micro[i][j];
      total += fc.sample(static_cast<int64_t>(s->context.size()), rates[i][j],
                         static_cast<int64_t>(s->prompt.size()), static_cast<int64_t>(s->target.size()));
    }
  return total;
}

nlohmann::json StageRunner::evaluate() {
  auto& model = *setup_.model;
  torch::NoGradGuard g;
  model.decoder->eval();
  if (!model.compressor.is_empty()) model.compressor->eval();
  double nll = 0;
  int64_t tokens = 0;
  const int64_t bs = cfg_.stage.batch_size;
  for (size_t i = 0; i < eval_.size(); i += bs) {
    std::vector<const Sample*> batch;
    std::vector<int64_t> rates;
    for (size_t j = i; j < std::min(eval_.size(), i + bs); ++j) {
      batch.push_back(&eval_[j]);
      // Held-out loss at every configured rate in turn: deterministic, covers each rate.
      rates.push_back(cfg_.data.rates[j % cfg_.data.rates.size()]);
    }
    auto sums = model.loss(collate(batch, rates, false).to(setup_.device));
    nll += sums.nll_sum.item<double>();
    tokens += sums.tokens.item<int64_t>();
  }
  nlohmann::json out = {{"eval_loss", tokens ? nll / tokens : 0.0}, {"eval_tokens", tokens}};
  if (stage_->name() == "ae" && !eval_.empty()) {
    // Restoration BLEU on a few held-out samples, at the first configured rate.
    const size_t n = std::min<size_t>(4, eval_.size());
    std::vector<std::string> hyps;
    std::vector<std::vector<std::string>> refs(1);
    for (size_t i = 0; i < n; ++i) {
      const auto& s = eval_[i];
      auto ids = torch::tensor(std::vector<int64_t>(s.context.begin(), s.context.end()), torch::kLong)
                     .unsqueeze(0).to(setup_.device);
      auto soft = model.compress(ids, torch::tensor({ids.size(1)}), torch::tensor({cfg_.data.rates.front()}));
      GenerationConfig gc;
      gc.max_new_tokens = static_cast<int64_t>(s.target.size());
      gc.repetition_penalty = 1.3;
      auto res = generate(model.decoder, {{soft.embeds[0].narrow(0, 0, soft.lengths[0].item<int64_t>()),
                                           std::vector<int64_t>(s.prompt.begin(), s.prompt.end())}}, gc);
      std::vector<int> out_ids(res.tokens[0].begin(), res.tokens[0].end());
      hyps.push_back(setup_.tok->decode(out_ids));
      refs[0].push_back(setup_.tok->decode(s.context));
    }
    out["eval_bleu"] = metrics::corpus_bleu(hyps, refs).score;
    out["eval_sample"] = hyps.front();
  }
  model.decoder->train();
  if (!model.compressor.is_empty()) model.compressor->train();
  return out;
}

void StageRunner::export_result() {
  const auto out = join_path(dir_, "final");
  fs::create_directories(out);
  auto& model = *setup_.model;
  if (stage_->name() == "lm") {
    save_pretrained(out, model.decoder, file_exists(setup_.tokenizer_file) ? setup_.tokenizer_file : "");
  } else {
    save_compressor(out, model.compressor, model.decoder->config(), cfg_.model.path);
    NamedTensors delta;
    for (auto& [n, t] : trainable_)
      if (n.rfind("decoder.", 0) == 0) delta.emplace_back(n.substr(8), t);
    // Earlier stages' decoder changes travel with the compressor directory.
    if (!cfg_.compressor.path.empty() && is_directory(cfg_.compressor.path) &&
        file_exists(join_path(cfg_.compressor.path, kDecoderDeltaFile))) {
      SafetensorsFile prev(join_path(cfg_.compressor.path, kDecoderDeltaFile));
      auto params = model.decoder->named_parameters();
      for (const auto& k : prev.keys()) {
        bool have = std::any_of(delta.begin(), delta.end(), [&](auto& p) { return p.first == k; });
        if (!have) delta.emplace_back(k, params[k]);
      }
    }
    if (!delta.empty()) save_decoder_delta(out, delta);
  }
  write_file_atomic(join_path(out, "DONE"), "complete\n");
}

StageSummary StageRunner::run() {
  if (pg_.is_main()) fs::create_directories(dir_);
  pg_.barrier("run directory creation");
  log_ = stage_logger(dir_, pg_.rank());
  if (pg_.is_main()) write_file_atomic(join_path(dir_, "config.yaml"), dump_config(cfg_));
  StageSummary summary;
  summary.name = stage_->name();
  summary.dir = dir_;
  summary.output = join_path(dir_, "final");
  if (file_exists(join_path(summary.output, "DONE"))) {
    log_->info("stage {} already complete in {}; skipping", stage_->name(), dir_);
    summary.completed = true;
    return summary;
  }
  // Local processes share the cores.
  const int64_t local_world = std::max<int64_t>(1, std::getenv("LOCAL_WORLD_SIZE") ? std::atoll(std::getenv("LOCAL_WORLD_SIZE")) : pg_.world_size());
  const int64_t threads = cfg_.run.threads > 0 ? cfg_.run.threads
                                               : std::max<int64_t>(1, std::thread::hardware_concurrency() / local_world);
  at::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads)));
  torch::manual_seed(cfg_.run.seed);
  setup_ = build(cfg_, *stage_, device_);
  auto& model = *setup_.model;
  log_->info("stage {}: model {} ({} layers, hidden {}), device {}, dtype {}, {} threads", stage_->name(),
             cfg_.model.path.empty() ? "from model.init" : cfg_.model.path,
             model.decoder->config().num_hidden_layers, model.decoder->config().hidden_size,
             setup_.device.str(), cfg_.run.dtype, at::get_num_threads());
  load_data();
  trainable_ = stage_->select_trainable(model);
  GMSA_CHECK(!trainable_.empty(), "stage {} selects no trainable parameters", stage_->name());
  int64_t n_trainable = 0;
  for (auto& [n, t] : trainable_) {
    if (t.scalar_type() != torch::kFloat) t.set_data(t.detach().to(torch::kFloat));  // fp32 master
    n_trainable += t.numel();
  }
  log_->info("trainable: {} tensors, {} parameters", trainable_.size(), n_trainable);
  model.decoder->train();
  model.decoder->set_activation_checkpointing(cfg_.train.activation_checkpointing);
  if (!model.compressor.is_empty()) model.compressor->train();
  std::vector<torch::Tensor> params;
  for (auto& [n, t] : trainable_) params.push_back(t);
  if (pg_.distributed()) {
    std::vector<torch::Tensor> data;
    for (auto& p : params) data.push_back(p.detach());
    pg_.broadcast(data, 0, "initial parameter broadcast");
    sync_ = std::make_unique<dist::GradSync>(pg_, params, cfg_.dist.bucket_mb << 20);
    log_->info("data parallel: rank {} of {} ({}), ZeRO-1 {}", pg_.rank(), pg_.world_size(), pg_.backend(),
               cfg_.dist.zero1 ? "on" : "off");
  }
  optim_ = std::make_unique<dist::ZeroAdamW>(
      pg_, trainable_, AdamWOptions{cfg_.optim.beta1, cfg_.optim.beta2, cfg_.optim.eps, cfg_.optim.weight_decay},
      cfg_.dist.zero1);
  const int64_t total = total_steps();
  LrSchedule sched({cfg_.schedule.type, cfg_.optim.lr, cfg_.schedule.warmup_steps, cfg_.schedule.warmup_ratio,
                    total, cfg_.schedule.min_lr_ratio});
  ckpt_ = std::make_unique<CheckpointManager>(dir_, cfg_.train.keep_last);
  int64_t step = try_resume();
  const std::string metrics_path = join_path(dir_, "metrics.jsonl");
  std::ofstream metrics;
  if (pg_.is_main()) metrics.open(metrics_path, std::ios::app);
  const bool bar = pg_.is_main() &&
                   (cfg_.train.progress == "bar" || (cfg_.train.progress == "auto" && ::isatty(STDERR_FILENO)));
  const bool cuda = setup_.device.is_cuda();
  const double peak_flops = 989e12;  // H100 SXM dense bf16, the MFU denominator (docs/flops.md)
  auto t_start = Clock::now();
  const int64_t first_step = step;
  log_->info("training {} steps from step {} (batch {} x accumulation {})", total, step, cfg_.stage.batch_size,
             cfg_.stage.grad_accum);
  // No host synchronisation inside a step: each step leaves its mean loss, gradient norm and
  // skip flag on the device, and they are read back together at drain points: logging steps,
  // before a checkpoint, evaluation or stop, and after every step on the CPU (where reading is
  // free, so the CPU behaves exactly as with a per-step read). On CUDA, a non-finite step is
  // skipped on the device (AdamW::step(lr, skip)) at once, but it is counted, warned about and
  // the train.max_bad_steps stop happens at the next drain point: at most train.log_every steps
  // late. The reported ms, tokens/s and MFU are averages over the steps since the previous drain.
  struct PendingStep {
    int64_t step;         // 0-based index of the step
    torch::Tensor stats;  // fp32 [mean loss, gradient norm, skip flag] on the device
  };
  std::vector<PendingStep> pending;
  int64_t window_steps = 0, window_tokens = 0;
  double window_flops = 0;
  Clock::time_point window_start;
  double loss = 0, norm = 0, ms = 0, tokens_per_s = 0, mfu = 0;  // as of the last drain
  auto drain = [&] {
    if (pending.empty()) return;
    if (cuda) torch::cuda::synchronize();
    const double window_ms = std::chrono::duration<double, std::milli>(Clock::now() - window_start).count();
    ms = window_ms / static_cast<double>(window_steps);
    tokens_per_s = window_tokens / (window_ms / 1000.0);
    mfu = window_flops / (window_ms / 1000.0) / peak_flops;
    window_steps = window_tokens = 0;
    window_flops = 0;
    std::vector<torch::Tensor> stats;
    for (const auto& p : pending) stats.push_back(p.stats);
    auto host = torch::stack(stats).to(torch::kCPU, torch::kDouble).contiguous();  // the one host read
    auto rows = host.accessor<double, 2>();
    int64_t stop_count = 0;
    bool last_skipped = false;
    for (size_t i = 0; i < pending.size(); ++i) {
      loss = rows[i][0];
      norm = rows[i][1];
      last_skipped = rows[i][2] != 0;
      if (last_skipped) {
        ++skipped_;
        ++bad_in_row_;
        log_->warn("step {}: non-finite loss ({}) or gradient norm ({}); update skipped ({} in a row)",
                   pending[i].step + 1, loss, norm, bad_in_row_);
        if (bad_in_row_ >= cfg_.train.max_bad_steps && stop_count == 0) stop_count = bad_in_row_;
      } else {
        bad_in_row_ = 0;
      }
      losses_.push_back(loss);
    }
    const int64_t last = pending.back().step;
    pending.clear();
    if (stop_count > 0) {
      // The checkpoint holds every step run so far; a skipped last step counts as not done
      // (on the CPU: the checkpoint of the step that reached the limit, as always).
      if (last_skipped) losses_.pop_back();
      save_checkpoint(last_skipped ? last : last + 1);
      fail("stopping: {} non-finite steps in a row (train.max_bad_steps); checkpoint written in {}",
           stop_count, dir_);
    }
  };
  while (step < total) {
    // Every rank stops together (a signal may reach only some of them).
    const bool stop = g_stop_requested || step == opts_.stop_after_step;
    if (pg_.all_reduce_sum_int(stop ? 1 : 0, "stop flag") > 0) break;
    auto t0 = Clock::now();
    if (window_steps == 0) window_start = t0;
    if (cuda) compat::reset_cuda_peak_memory(setup_.device);
    // All micro-batches are drawn first so the loss can be normalised by their target tokens.
    streamed_.clear();
    std::vector<std::vector<const Sample*>> micro(cfg_.stage.grad_accum);
    std::vector<std::vector<int64_t>> micro_rates(cfg_.stage.grad_accum);
    int64_t target_tokens = 0, context_tokens = 0;
    for (int64_t m = 0; m < cfg_.stage.grad_accum; ++m) {
      micro[m] = next_micro_batch(micro_rates[m]);
      target_tokens += count_target_tokens(micro[m]);
      for (auto* s : micro[m]) context_tokens += s->length();
    }
    // The loss is normalised by the target tokens of the whole (global) batch, so the summed
    // gradients of all ranks equal the gradient of one big batch.
    if (pg_.distributed()) {
      auto counts = pg_.all_reduce_sum_ints({target_tokens, context_tokens}, "token counts");
      target_tokens = counts[0];
      context_tokens = counts[1];
    }
    optim_->zero_grad();
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(setup_.device));
    for (int64_t m = 0; m < cfg_.stage.grad_accum; ++m) {
      auto batch = collate(micro[m], micro_rates[m], cuda).to(setup_.device);
      auto sums = model.loss(batch);
      if (sync_ && m + 1 == cfg_.stage.grad_accum) sync_->start();  // all-reduce during the last backward
      (sums.nll_sum / static_cast<double>(target_tokens)).backward();
      loss_sum += sums.nll_sum.detach();
    }
    if (sync_) {
      sync_->finish(1.0);
      pg_.all_reduce_sum({loss_sum}, "loss");
    }
    auto gnorm = clip_grad_norm(params, cfg_.optim.clip).to(loss_sum.device(), torch::kFloat);
    auto mean_loss = loss_sum / static_cast<double>(target_tokens);
    // The update happens unless the loss or the gradient norm is non-finite, decided on the
    // device (no host read): 1 = skip.
    auto skip = torch::isfinite(mean_loss).logical_and(torch::isfinite(gnorm)).logical_not().to(torch::kFloat);
    const double lr = sched.lr_at(step);
    optim_->step(lr, skip);
    pending.push_back({step, torch::stack({mean_loss.to(torch::kFloat), gnorm, skip})});
    ++window_steps;
    window_tokens += context_tokens;
    if (cuda) window_flops += step_flops(micro, micro_rates);
    const int64_t done = step + 1;
    const bool log_now = done % cfg_.train.log_every == 0 || done == total;
    const bool save_now = cfg_.train.save_every > 0 && done % cfg_.train.save_every == 0 && done < total;
    if (!cuda || log_now || save_now) drain();
    step = done;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
    const double eta = elapsed / static_cast<double>(step - first_step) * static_cast<double>(total - step);
    if (log_now) {
      std::vector<int64_t> all_rates;
      for (auto& r : micro_rates) all_rates.insert(all_rates.end(), r.begin(), r.end());
      nlohmann::json line = {{"step", step},          {"loss", loss},
                             {"lr", lr},              {"grad_norm", norm},
                             {"ms", ms},              {"tokens_per_s", tokens_per_s},
                             {"target_tokens", target_tokens}, {"skipped_steps", skipped_}};
      if (stage_->uses_compressor()) line["rates"] = all_rates;
      if (cuda) {
        line["peak_memory_gb"] = compat::cuda_peak_memory(setup_.device) / 1e9;
        line["mfu"] = mfu;
      }
      const bool eval_now = !eval_.empty() && ((cfg_.train.eval_every > 0 && step % cfg_.train.eval_every == 0) || step == total);
      if (eval_now) line.update(evaluate());
      if (pg_.is_main()) metrics << line.dump() << "\n" << std::flush;
      const std::string msg = fmt::format("[{}] step {}/{} loss {:.4f} lr {:.2e} grad {:.3f} {:.0f} ms {:.0f} tok/s ETA {}",
                                          stage_->name(), step, total, loss, lr, norm, ms,
                                          tokens_per_s, fmt_duration(eta));
      if (bar) {
        const int width = 24, filled = static_cast<int>(width * step / std::max<int64_t>(total, 1));
        std::fprintf(stderr, "\r%s |%s%s| %s", msg.c_str(), std::string(filled, '#').c_str(),
                     std::string(width - filled, ' ').c_str(), step == total ? "\n" : "");
        std::fflush(stderr);
        log_->sinks()[1]->log(spdlog::details::log_msg("train", spdlog::level::info, msg));
        if (line.contains("eval_loss")) log_->info("eval: {}", line.dump());
      } else {
        log_->info("{}{}", msg, line.contains("eval_loss") ? " eval " + line["eval_loss"].dump() : "");
      }
    }
    if (save_now) save_checkpoint(step);
  }
  drain();  // steps still on the device (a stop request) before the checkpoint below
  summary.steps = step;
  summary.losses = losses_;
  if (step < total) {
    if (step > 0) save_checkpoint(step);
    log_->warn("stopped at step {} of {}; resume with --resume {}", step, total, effective_run_dir(cfg_));
    return summary;
  }
  save_checkpoint(step);
  if (pg_.is_main()) export_result();
  pg_.barrier("export of the stage result");  // the next stage reads final/
  summary.completed = true;
  log_->info("stage {} done: {} steps, final loss {:.4f}; result in {}", stage_->name(), step,
             losses_.empty() ? 0.0 : losses_.back(), summary.output);
  return summary;
}

}  // namespace

std::vector<StageSummary> train_stages(const std::vector<RunConfig>& stages, const TrainOptions& opts,
                                       dist::ProcessGroup& pg, torch::Device device);

std::vector<StageSummary> train(const std::vector<RunConfig>& stages, const TrainOptions& opts) {
  GMSA_CHECK(!stages.empty(), "no stage to train");
  // One process per device: torchrun / SLURM / scripts/launch.sh set the environment.
  const auto env = dist::detect_dist_env();
  torch::Device device = parse_device(stages.front().run.device);
  if (device.is_cuda() && env.world_size > 1) device = torch::Device(torch::kCUDA, static_cast<int8_t>(env.local_rank));
  auto pg = dist::ProcessGroup::from_env(env, device, std::chrono::seconds(stages.front().dist.timeout_s));
  try {
    return train_stages(stages, opts, *pg, device);
  } catch (const std::exception& e) {
    pg->report_failure(e.what());  // the other ranks stop with this reason instead of hanging
    throw;
  }
}

std::vector<StageSummary> train_stages(const std::vector<RunConfig>& stages, const TrainOptions& opts,
                                       dist::ProcessGroup& pg, torch::Device device) {
  std::vector<StageSummary> out;
  const std::string run_dir = opts.resume_dir.empty() ? effective_run_dir(stages.front()) : opts.resume_dir;
  // What earlier stages produced: the latest decoder (lm) and compressor (ae, keft, ft).
  std::string chained_model, chained_compressor, chained_tokenizer;
  for (size_t i = 0; i < stages.size(); ++i) {
    RunConfig cfg = stages[i];
    if (!chained_model.empty()) {
      cfg.model.path = chained_model;
      cfg.model.tokenizer = chained_tokenizer;
    }
    if (!chained_compressor.empty()) cfg.compressor.path = chained_compressor;
    const std::string dir = stages.size() == 1 ? run_dir
                                               : join_path(run_dir, fmt::format("stage{}-{}", i, cfg.stage.type));
    StageRunner runner(cfg, dir, opts, pg, device);
    out.push_back(runner.run());
    if (!out.back().completed) break;
    if (out.back().name == "lm") {
      chained_model = out.back().output;
      chained_tokenizer.clear();  // the exported model directory holds its tokenizer
    } else {
      chained_compressor = out.back().output;
    }
  }
  return out;
}

}  // namespace gmsa
