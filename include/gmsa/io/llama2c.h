#pragma once
// llama2.c "v0" checkpoints (Karpathy's tinyllamas, e.g. stories260K): a 7-int32 header
// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
// vocab_size means an untied classifier follows), then float32 tensors in a fixed order.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "gmsa/model/config.h"

namespace gmsa {

struct Llama2cCheckpoint {
  ModelConfig config;
  // Hugging Face names and layout: q/k rows are permuted from llama2.c's interleaved RoPE
  // pairs to transformers' rotate-half halves, exactly as HF's conversion script does.
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
};

Llama2cCheckpoint read_llama2c(const std::string& path);

// True when the file starts like a llama2.c v0 checkpoint of consistent size.
bool looks_like_llama2c(const std::string& path);

}  // namespace gmsa
