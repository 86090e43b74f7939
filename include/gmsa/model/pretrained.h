#pragma once
// Loading and saving whole models as researchers have them: a Hugging Face directory
// (config.json, model.safetensors or sharded, tokenizer.model / tokenizer.json) or a llama2.c
// .bin checkpoint (whose sentencepiece tokenizer is given separately).
#include <torch/torch.h>

#include <memory>
#include <string>

#include "gmsa/model/decoder.h"
#include "gmsa/text/tokenizer.h"

namespace gmsa {

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;  // parameter and compute dtype
  std::string tokenizer;  // a tokenizer file or directory; empty: the model directory's
  bool require_tokenizer = false;
};

struct PretrainedModel {
  Decoder decoder{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;  // null when none was found and none required
  std::string source;
};

PretrainedModel load_pretrained(const std::string& path, const LoadOptions& opts = {});

// Writes an HF-format directory: config.json, generation_config.json, model.safetensors
// (sharded above shard_bytes) and, when given, a copy of the sentencepiece tokenizer.model.
void save_pretrained(const std::string& dir, Decoder& decoder,
                     const std::string& tokenizer_model_file = "",
                     uint64_t shard_bytes = 5ull << 30);

// Name -> tensor of every parameter, in HF naming (the tied lm_head is omitted as in HF).
std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& module);

// "cuda" -> cuda:0 when available, "auto" -> cuda if available else cpu.
torch::Device parse_device(const std::string& spec);

}  // namespace gmsa
