#include "gmsa/compressor/compressor_config.h"

#include <algorithm>

#include "gmsa/util/error.h"

namespace gmsa {

nlohmann::json CompressorConfig::to_json() const {
  return {{"method", method},
          {"encoder_layers", encoder_layers},
          {"lora", {{"r", lora.r}, {"alpha", lora.alpha}, {"dropout", lora.dropout}, {"targets", lora_targets}}},
          {"lsa", {{"type", lsa_type}, {"layers", lsa_layers}}},
          {"tcp", {{"mlp_hidden", tcp_mlp_hidden}, {"max_memory", tcp_max_memory}}}};
}

CompressorConfig CompressorConfig::from_json(const nlohmann::json& j, const std::string& where) {
  CompressorConfig c;
  try {
    c.method = j.at("method").get<std::string>();
    c.encoder_layers = j.at("encoder_layers").get<int64_t>();
    const auto& l = j.at("lora");
    c.lora.r = l.at("r").get<int64_t>();
    c.lora.alpha = l.at("alpha").get<double>();
    c.lora.dropout = l.at("dropout").get<double>();
    c.lora_targets = l.at("targets").get<std::vector<std::string>>();
    c.lsa_type = j.at("lsa").at("type").get<std::string>();
    c.lsa_layers = j.at("lsa").at("layers").get<int64_t>();
    c.tcp_mlp_hidden = j.at("tcp").at("mlp_hidden").get<int64_t>();
    c.tcp_max_memory = j.at("tcp").at("max_memory").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed compressor configuration: {}", where, e.what());
  }
  c.validate(where);
  return c;
}

void CompressorConfig::validate(const std::string& where) const {
  if (method != "gmsa" && method != "tcp")
    fail("{}: compressor method must be gmsa or tcp, got \"{}\"", where, method);
  if (encoder_layers < 1) fail("{}: encoder_layers must be >= 1, got {}", where, encoder_layers);
  if (lora.r < 0) fail("{}: LoRA rank must be >= 0, got {}", where, lora.r);
  static const std::vector<std::string> known{"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  for (const auto& t : lora_targets)
    if (std::find(known.begin(), known.end(), t) == known.end())
      fail("{}: unknown LoRA target \"{}\" (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)", where, t);
  if (lsa_type != "blocks" && lsa_type != "random_blocks" && lsa_type != "linear" && lsa_type != "none")
    fail("{}: lsa type must be blocks, random_blocks, linear or none, got \"{}\"", where, lsa_type);
  if ((lsa_type == "blocks" || lsa_type == "random_blocks") && lsa_layers < 1)
    fail("{}: lsa layers must be >= 1 for type {}", where, lsa_type);
  if (method == "tcp" && tcp_max_memory < 1)
    fail("{}: tcp needs max_memory >= 1 (ceil(max context / min rate))", where);
}

}  // namespace gmsa
