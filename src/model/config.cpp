#include "gmsa/model/config.h"

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace {

using nlohmann::json;

const char* json_type_name(const json& v) { return v.type_name(); }

template <typename T>
T required(const json& j, const char* key, const std::string& where);

template <>
int64_t required<int64_t>(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail("{}: missing required key \"{}\" (an integer)", where, key);
  const auto& v = j.at(key);
  if (!v.is_number_integer())
    fail("{}: key \"{}\" must be an integer, got {}", where, key, json_type_name(v));
  return v.get<int64_t>();
}

int64_t opt_int(const json& j, const char* key, int64_t def, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  return required<int64_t>(j, key, where);
}

double opt_num(const json& j, const char* key, double def, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  if (!v.is_number()) fail("{}: key \"{}\" must be a number, got {}", where, key, json_type_name(v));
  return v.get<double>();
}

bool opt_bool(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  if (!v.is_boolean()) fail("{}: key \"{}\" must be true or false, got {}", where, key, json_type_name(v));
  return v.get<bool>();
}

std::string opt_str(const json& j, const char* key, const std::string& def, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  if (!v.is_string()) fail("{}: key \"{}\" must be a string, got {}", where, key, json_type_name(v));
  return v.get<std::string>();
}

// rope_scaling sits at the top level in Hub checkpoints; transformers 5 writes it, together
// with rope_theta, into rope_parameters. Both forms are read.
RopeScaling parse_rope_scaling(const json& rs, const std::string& where) {
  RopeScaling out;
  if (rs.is_null()) return out;
  if (!rs.is_object()) fail("{}: rope_scaling must be an object, got {}", where, json_type_name(rs));
  std::string type = opt_str(rs, "rope_type", opt_str(rs, "type", "default", where), where);
  if (type != "default" && type != "linear" && type != "llama3")
    fail("{}: unsupported rope scaling type \"{}\" (supported: default, linear, llama3)", where, type);
  out.type = type;
  out.factor = opt_num(rs, "factor", 1.0, where);
  out.low_freq_factor = opt_num(rs, "low_freq_factor", 1.0, where);
  out.high_freq_factor = opt_num(rs, "high_freq_factor", 4.0, where);
  out.original_max_position_embeddings =
      opt_int(rs, "original_max_position_embeddings", 8192, where);
  return out;
}

std::vector<int64_t> parse_eos(const json& j, const std::string& where) {
  if (!j.contains("eos_token_id") || j.at("eos_token_id").is_null()) return {};
  const auto& v = j.at("eos_token_id");
  if (v.is_number_integer()) return {v.get<int64_t>()};
  if (v.is_array()) {
    std::vector<int64_t> out;
    for (const auto& e : v) {
      if (!e.is_number_integer()) fail("{}: eos_token_id list must hold integers", where);
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
  fail("{}: eos_token_id must be an integer or a list of integers, got {}", where, json_type_name(v));
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: config must be a JSON object", where);
  ModelConfig c;
  c.model_type = opt_str(j, "model_type", "", where);
  if (c.model_type.empty()) fail("{}: missing required key \"model_type\"", where);
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" &&
      c.model_type != "qwen3")
    fail("{}: unknown architecture model_type \"{}\" (supported: llama, mistral, qwen2, qwen3)",
         where, c.model_type);
  c.vocab_size = required<int64_t>(j, "vocab_size", where);
  c.hidden_size = required<int64_t>(j, "hidden_size", where);
  c.intermediate_size = required<int64_t>(j, "intermediate_size", where);
  c.num_hidden_layers = required<int64_t>(j, "num_hidden_layers", where);
  c.num_attention_heads = required<int64_t>(j, "num_attention_heads", where);
  c.num_key_value_heads = opt_int(j, "num_key_value_heads", c.num_attention_heads, where);
  c.head_dim = opt_int(j, "head_dim", c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0, where);
  c.max_position_embeddings = opt_int(j, "max_position_embeddings", 2048, where);
  c.rms_norm_eps = opt_num(j, "rms_norm_eps", 1e-6, where);
  const json rope_params = j.contains("rope_parameters") ? j.at("rope_parameters") : json();
  if (!rope_params.is_null() && !rope_params.is_object())
    fail("{}: rope_parameters must be an object", where);
  c.rope_theta = opt_num(j, "rope_theta", rope_params.is_object() ? opt_num(rope_params, "rope_theta", 10000.0, where) : 10000.0, where);
  if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null())
    c.rope_scaling = parse_rope_scaling(j.at("rope_scaling"), where + " (rope_scaling)");
  else if (rope_params.is_object())
    c.rope_scaling = parse_rope_scaling(rope_params, where + " (rope_parameters)");
  c.tie_word_embeddings = opt_bool(j, "tie_word_embeddings", false, where);
  c.attention_bias = opt_bool(j, "attention_bias", false, where);
  // LLaMA's attention_bias covers o_proj too; Qwen2's q/k/v biases never do.
  c.o_proj_bias = (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen3") && c.attention_bias;
  c.mlp_bias = opt_bool(j, "mlp_bias", false, where);
  c.qk_norm = c.model_type == "qwen3";
  std::string act = opt_str(j, "hidden_act", "silu", where);
  if (act != "silu") fail("{}: unsupported hidden_act \"{}\" (only silu)", where, act);
  if (c.model_type == "mistral" || c.model_type == "qwen2" || c.model_type == "qwen3") {
    bool use_sw = opt_bool(j, "use_sliding_window", c.model_type == "mistral", where);
    int64_t sw = opt_int(j, "sliding_window", -1, where);
    if (use_sw && sw > 0) c.sliding_window = sw;
  }
  c.bos_token_id = opt_int(j, "bos_token_id", -1, where);
  c.eos_token_ids = parse_eos(j, where);
  c.pad_token_id = opt_int(j, "pad_token_id", -1, where);
  c.torch_dtype = opt_str(j, "torch_dtype", opt_str(j, "dtype", "float32", where), where);
  c.validate(where);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  return from_json(j, path);
}

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail("{}: {} must be positive, got {}", where, name, v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (num_attention_heads % num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", where,
         num_attention_heads, num_key_value_heads);
  if (head_dim % 2 != 0) fail("{}: head_dim ({}) must be even for RoPE", where, head_dim);
  if (rms_norm_eps <= 0) fail("{}: rms_norm_eps must be positive", where);
  if (rope_theta <= 0) fail("{}: rope_theta must be positive", where);
}

int64_t ModelConfig::num_parameters() const {
  int64_t h = hidden_size;
  int64_t attn = h * q_dim() + 2 * h * kv_dim() + q_dim() * h;
  if (has_qkv_bias()) attn += q_dim() + 2 * kv_dim();
  if (o_proj_bias) attn += h;
  if (qk_norm) attn += 2 * head_dim;
  int64_t mlp = 3 * h * intermediate_size + (mlp_bias ? 2 * intermediate_size + h : 0);
  int64_t layer = attn + mlp + 2 * h;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + h;
}

nlohmann::json ModelConfig::to_json() const {
  static const std::map<std::string, std::string> arch = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  json j;
  j["architectures"] = {arch.at(model_type)};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    json rs = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  j["hidden_act"] = "silu";
  if (model_type != "llama") {
    j["use_sliding_window"] = sliding_window.has_value();
    j["sliding_window"] = sliding_window ? json(*sliding_window) : json(nullptr);
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  j["torch_dtype"] = torch_dtype;
  return j;
}

}  // namespace gmsa
