#pragma once
// gmsa bench train: times autoencoder and KEFT steps of a GMSA model with random weights of a
// named shape (speed does not depend on weight values): ms/step, context tokens/s, MFU (the
// FLOP count of docs/flops.md over the datasheet peak) and peak memory.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace gmsa {

struct BenchTrainOptions {
  std::string arch = "llama2-7b";  // see arch_config()
  std::vector<std::string> stages{"ae", "keft"};
  std::vector<int64_t> contexts{512, 3072};
  std::vector<int64_t> batches{4, 1};  // one per context
  std::vector<int64_t> rates{4, 8};    // assigned to samples in turn
  int64_t encoder_layers = 8, lora_r = 128, lsa_layers = 1;
  int64_t prompt_tokens = 9;           // "Restate the aforementioned Text." in LLaMA-2's tokenizer
  int64_t question_tokens = 30, answer_tokens = 20;  // KEFT
  int64_t steps = 10, warmup = 3;
  std::string device = "auto";
  std::string dtype = "bf16";
  bool activation_checkpointing = false;
  double peak_flops = 989e12;          // H100 SXM dense bf16
  uint64_t seed = 0;
};

struct BenchTrainCase {
  std::string stage;
  int64_t context = 0, batch = 0;
  std::vector<double> ms;  // every timed step
  double median_ms = 0, tokens_per_s = 0, mfu = 0, flops_per_step = 0, peak_memory_gb = 0;
};

struct BenchTrainReport {
  nlohmann::json environment;
  std::vector<BenchTrainCase> cases;
  nlohmann::json to_json() const;
  std::string table() const;
};

BenchTrainReport run_bench_train(const BenchTrainOptions& opts);

}  // namespace gmsa
