// THE option table: every RunConfig field's YAML path, help text and checks, declared once.
// Loading, the unknown-key check, dump_config and the docs table are all driven by it.
// GMSA_OPTION(a.b, help) binds the path "a.b" to the field RunConfig::a.b, so the two cannot
// drift apart. Keep sections contiguous (checked at startup): the dump nests them in this order.
#include <map>
#include <set>
#include <stdexcept>

#include "gmsa/config/options.h"
#include "gmsa/util/error.h"

namespace gmsa::config {

#define GMSA_OPTION(member, help) \
  t.emplace_back(#member, [](RunConfig& c) -> FieldPtr { return &c.member; }, help)

static std::vector<Option> declare() {
  std::vector<Option> t;
  GMSA_OPTION(run.name, "Run name; names the default run directory");
  GMSA_OPTION(run.dir, "Run directory (empty: runs/<run.name>)");
  GMSA_OPTION(run.seed, "Random seed");
  GMSA_OPTION(run.device, "Device").matches(R"(auto|cpu|cuda(:\d+)?)", "auto | cpu | cuda | cuda:N");
  GMSA_OPTION(run.dtype, "Compute dtype").one_of({"fp32", "bf16"});
  GMSA_OPTION(run.threads, "CPU threads (0: hardware concurrency)").ge(0);

  GMSA_OPTION(model.path, "HF model directory or llama2c .bin (empty: build from model.init, stage lm)");
  GMSA_OPTION(model.tokenizer, "Tokenizer file (empty: the one in the model directory)");
  GMSA_OPTION(model.init.hidden_size, "New model: hidden size").ge(1);
  GMSA_OPTION(model.init.intermediate_size, "New model: MLP intermediate size").ge(1);
  GMSA_OPTION(model.init.num_layers, "New model: decoder layers").ge(1);
  GMSA_OPTION(model.init.num_heads, "New model: attention heads").ge(1);
  GMSA_OPTION(model.init.num_kv_heads, "New model: key/value heads (GQA)").ge(1);
  GMSA_OPTION(model.init.max_position_embeddings, "New model: maximum positions").ge(1);
  GMSA_OPTION(model.init.rope_theta, "New model: RoPE base").gt(0);
  GMSA_OPTION(model.init.rms_norm_eps, "New model: RMSNorm epsilon").gt(0);
  GMSA_OPTION(model.init.tie_word_embeddings, "New model: share input and output embeddings");

  GMSA_OPTION(compressor.method, "Compressor architecture").one_of({"gmsa", "tcp"});
  GMSA_OPTION(compressor.path, "A trained compressor to start from (empty: fresh)");
  GMSA_OPTION(compressor.encoder_layers, "Encoder layers taken from the model").ge(1);
  GMSA_OPTION(compressor.lora.r, "LoRA rank (0 disables LoRA)").ge(0);
  GMSA_OPTION(compressor.lora.alpha, "LoRA alpha (scale alpha/r)");
  GMSA_OPTION(compressor.lora.dropout, "LoRA dropout").ge(0).lt(1);
  GMSA_OPTION(compressor.lora.targets, "Linear layers that get LoRA adapters");
  GMSA_OPTION(compressor.lsa.type, "Layer semantic alignment module")
      .one_of({"blocks", "random_blocks", "linear", "none"});
  GMSA_OPTION(compressor.lsa.layers, "Layer semantic alignment depth").ge(0);
  GMSA_OPTION(compressor.tcp.mlp_hidden, "TCP: MLP hidden size (0: the model's hidden size)").ge(0);

  GMSA_OPTION(data.train, "Training data file");
  GMSA_OPTION(data.eval, "Evaluation data file");
  GMSA_OPTION(data.format, "Data file format").one_of({"auto", "text", "jsonl", "qa"});
  GMSA_OPTION(data.max_context_tokens, "Context tokens kept per sample").ge(1);
  GMSA_OPTION(data.max_prompt_tokens, "Prompt/question tokens kept per sample").ge(1);
  GMSA_OPTION(data.max_target_tokens, "Target tokens kept per sample").ge(1);
  GMSA_OPTION(data.ae_prompt, "Instruction of the autoencoding stage");
  GMSA_OPTION(data.prompt_format, "Prompt format preset (empty: raw)");
  GMSA_OPTION(data.question_template, "Question template; {question} is replaced");
  GMSA_OPTION(data.rates, "Compression rates sampled during training").ge(1);
  GMSA_OPTION(data.rate_weights, "Sampling weights of data.rates (empty: uniform)").ge(0);
  GMSA_OPTION(data.shuffle, "Shuffle training samples");
  GMSA_OPTION(data.bucket, "Batch samples of similar length");
  GMSA_OPTION(data.skip_bad_lines, "Skip malformed data lines instead of failing");
  GMSA_OPTION(data.streaming, "Stream the training corpus (larger than memory) through a shuffle buffer");
  GMSA_OPTION(data.stream_buffer, "Documents held in the streaming shuffle buffer").ge(1);
  GMSA_OPTION(data.eval_samples, "Evaluation samples (0: all)").ge(0);

  GMSA_OPTION(stage.type, "Training stage").one_of({"ae", "keft", "ft", "lm"});
  GMSA_OPTION(stage.steps, "Optimizer steps").ge(0);
  GMSA_OPTION(stage.epochs, "Epochs (0: use stage.steps)").ge(0);
  GMSA_OPTION(stage.batch_size, "Samples per micro-batch").ge(1);
  GMSA_OPTION(stage.grad_accum, "Micro-batches per optimizer step").ge(1);
  GMSA_OPTION(stage.train_patterns, "ft: regexes over parameter names to train (empty: whole decoder)");

  GMSA_OPTION(optim.lr, "Peak learning rate (AdamW)").gt(0);
  GMSA_OPTION(optim.weight_decay, "Decoupled weight decay").ge(0);
  GMSA_OPTION(optim.beta1, "AdamW beta1").ge(0).lt(1);
  GMSA_OPTION(optim.beta2, "AdamW beta2").ge(0).lt(1);
  GMSA_OPTION(optim.eps, "AdamW epsilon").gt(0);
  GMSA_OPTION(optim.clip, "Gradient norm clipping (0: off)").ge(0);

  GMSA_OPTION(schedule.type, "Learning rate schedule after warmup").one_of({"constant", "linear", "cosine"});
  GMSA_OPTION(schedule.warmup_steps, "Warmup steps").ge(0);
  GMSA_OPTION(schedule.warmup_ratio, "Warmup as a fraction of all steps (if warmup_steps is 0)").ge(0).le(1);
  GMSA_OPTION(schedule.min_lr_ratio, "Final learning rate as a fraction of optim.lr").ge(0).le(1);

  GMSA_OPTION(train.log_every, "Log every N steps").ge(1);
  GMSA_OPTION(train.eval_every, "Evaluate held-out data every N steps (0: only at the end)").ge(0);
  GMSA_OPTION(train.save_every, "Checkpoint every N steps (0: at the end only)").ge(0);
  GMSA_OPTION(train.keep_last, "Checkpoints kept").ge(1);
  GMSA_OPTION(train.max_bad_steps, "Consecutive non-finite losses before aborting").ge(1);
  GMSA_OPTION(train.activation_checkpointing, "Recompute activations in the backward pass");
  GMSA_OPTION(train.resume, "Resume from the run directory's last checkpoint").one_of({"auto", "never"});
  GMSA_OPTION(train.progress, "Progress display").one_of({"auto", "bar", "lines"});
  GMSA_OPTION(dist.timeout_s, "Seconds after which a dead or hung rank stops the others").ge(1);
  GMSA_OPTION(dist.zero1, "Shard the optimizer state across ranks (ZeRO stage 1)");
  GMSA_OPTION(dist.bucket_mb, "Gradient all-reduce bucket size in MiB").ge(1);
  return t;
}

#undef GMSA_OPTION

// Checks between options, after each was checked alone. `at(path)` is where the option was
// set (or the file when it kept its default).
void check_relations(const RunConfig& c, const std::function<std::string(const char*)>& at) {
  const auto& w = c.data.rate_weights;
  if (w.empty()) return;
  GMSA_CHECK(w.size() == c.data.rates.size(),
             "{}: `data.rate_weights` has {} weights for {} rates in `data.rates`",
             at("data.rate_weights"), w.size(), c.data.rates.size());
  double sum = 0;
  for (double x : w) sum += x;
  GMSA_CHECK(sum > 0, "{}: `data.rate_weights` must not be all zero", at("data.rate_weights"));
}

// Sections must be contiguous in the table, or a dump would repeat a mapping key.
static void check_grouping(const std::vector<Option>& t) {
  std::set<std::string> closed;
  std::string prev;
  for (const auto& o : t) {
    for (size_t dot = prev.find('.'); dot != std::string::npos; dot = prev.find('.', dot + 1)) {
      std::string sec = prev.substr(0, dot);
      if (o.path.compare(0, sec.size() + 1, sec + ".") != 0) closed.insert(sec);
    }
    for (size_t dot = o.path.find('.'); dot != std::string::npos; dot = o.path.find('.', dot + 1))
      if (closed.count(o.path.substr(0, dot)))
        throw std::logic_error("config option table: section of " + o.path + " is split");
    prev = o.path;
  }
}

const std::vector<Option>& options() {
  static const std::vector<Option> table = [] {
    auto t = declare();
    check_grouping(t);
    return t;
  }();
  return table;
}

const Option* find_option(const std::string& path) {
  static const std::map<std::string, const Option*> index = [] {
    std::map<std::string, const Option*> m;
    for (const auto& o : options()) m[o.path] = &o;
    return m;
  }();
  auto it = index.find(path);
  return it == index.end() ? nullptr : it->second;
}

}  // namespace gmsa::config
