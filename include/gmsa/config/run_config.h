#pragma once
// The typed run configuration. Field types and defaults live here; the YAML path, help text
// and validation of every field are declared once, in the option table of
// src/config/options.cpp (GMSA_OPTION(run.name, ...)), which also drives loading, the
// unknown-key check, dump_config and `gmsa config docs`.
//
// Adding an option: add the field with its default below, then one GMSA_OPTION line in the
// table. Enumerations are strings checked against the declared values (see docs/configs.md).
#include <cstdint>
#include <string>
#include <vector>

namespace gmsa {

struct RunConfig {
  struct Run {
    std::string name = "gmsa";
    std::string dir;  // empty: runs/<name>
    int64_t seed = 42;
    std::string device = "auto";
    std::string dtype = "fp32";
    int64_t threads = 0;  // 0: hardware concurrency
  } run;

  struct Model {
    std::string path;       // HF directory or llama2c .bin; empty: build from `init`
    std::string tokenizer;  // empty: the one in the model directory
    struct Init {
      int64_t hidden_size = 64;
      int64_t intermediate_size = 172;
      int64_t num_layers = 4;
      int64_t num_heads = 8;
      int64_t num_kv_heads = 4;
      int64_t max_position_embeddings = 2048;
      double rope_theta = 10000;
      double rms_norm_eps = 1e-5;
      bool tie_word_embeddings = true;
    } init;
  } model;

  struct Compressor {
    std::string method = "gmsa";
    std::string path;  // a trained compressor to start from
    int64_t encoder_layers = 8;
    struct Lora {
      int64_t r = 128;  // 0 disables LoRA
      double alpha = 32;
      double dropout = 0.05;
      std::vector<std::string> targets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                          "gate_proj", "up_proj", "down_proj"};
    } lora;
    struct Lsa {
      std::string type = "blocks";
      int64_t layers = 1;
    } lsa;
    struct Tcp {
      int64_t mlp_hidden = 0;  // 0: the model's hidden size
    } tcp;
  } compressor;

  struct Data {
    std::string train;
    std::string eval;
    std::string format = "auto";
    int64_t max_context_tokens = 512;
    int64_t max_prompt_tokens = 64;
    int64_t max_target_tokens = 512;
    std::string ae_prompt = "Restate the aforementioned Text.";
    std::string prompt_format;  // preset name; empty: raw
    std::string question_template = "{question}";
    std::vector<int64_t> rates = {4, 8};
    std::vector<double> rate_weights;  // empty: uniform
    bool shuffle = true;
    bool bucket = true;
    bool skip_bad_lines = false;
    bool streaming = false;        // corpus stages: read the training file as a stream
    int64_t stream_buffer = 10000; // documents in the streaming shuffle buffer
    int64_t eval_samples = 64;
  } data;

  struct Stage {
    std::string type = "ae";
    int64_t steps = 1000;
    double epochs = 0;  // 0: use steps
    int64_t batch_size = 4;
    int64_t grad_accum = 1;
    std::vector<std::string> train_patterns;  // ft: regexes over parameter names
  } stage;

  struct Optim {
    double lr = 1e-4;
    double weight_decay = 0.0;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double clip = 2.0;  // 0: off
  } optim;

  struct Schedule {
    std::string type = "linear";
    int64_t warmup_steps = 0;
    double warmup_ratio = 0;
    double min_lr_ratio = 0;
  } schedule;

  struct Train {
    int64_t log_every = 10;
    int64_t eval_every = 0;
    int64_t save_every = 0;
    int64_t keep_last = 2;
    int64_t max_bad_steps = 5;
    bool activation_checkpointing = false;
    std::string resume = "auto";
    std::string progress = "auto";
  } train;

  struct Dist {
    int64_t timeout_s = 600;  // a rank that dies or hangs stops the others after this long
    bool zero1 = false;       // shard the optimizer state across ranks (ZeRO stage 1)
    int64_t bucket_mb = 25;   // gradient all-reduce bucket size
  } dist;
};

// Field-by-field equality over every declared option.
bool operator==(const RunConfig& a, const RunConfig& b);
inline bool operator!=(const RunConfig& a, const RunConfig& b) { return !(a == b); }

// run.dir, or runs/<run.name> when it is empty.
std::string effective_run_dir(const RunConfig& cfg);

}  // namespace gmsa
