#pragma once
// The decoder's architecture, read from a Hugging Face config.json. One struct covers the
// LLaMA family we support: llama (2, 3, 3.1, 3.2), mistral, qwen2, qwen3.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gmsa {

struct RopeScaling {
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2 | qwen3
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for llama) biases; qwen2 always has q/k/v biases
  bool o_proj_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;  // qwen3: per-head RMSNorm on q and k before RoPE
  std::optional<int64_t> sliding_window;  // mistral v0.1; applied as a banded causal mask
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;
  std::string torch_dtype = "float32";

  // `where` names the source in error messages (usually the file path).
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where);
  static ModelConfig from_file(const std::string& config_json_path);
  // Hugging Face form (readable by transformers' AutoConfig).
  nlohmann::json to_json() const;

  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  bool has_qkv_bias() const { return attention_bias || model_type == "qwen2"; }
  // Throws gmsa::Error if the numbers do not form a valid model (heads divide, etc.).
  void validate(const std::string& where) const;
  // Parameter count of the full model.
  int64_t num_parameters() const;
};

}  // namespace gmsa
