#pragma once
// What defines a compressor; embedded in every saved compressor file (self-describing).
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "gmsa/model/layers.h"

namespace gmsa {

struct CompressorConfig {
  std::string method = "gmsa";  // gmsa | tcp (the traditional memory-token paradigm)
  int64_t encoder_layers = 8;   // the encoder is the LLM's first k layers
  LoraSpec lora{128, 32.0, 0.05};
  std::vector<std::string> lora_targets{"q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"};
  std::string lsa_type = "blocks";  // blocks | random_blocks | linear | none
  int64_t lsa_layers = 1;
  int64_t tcp_mlp_hidden = 0;   // 0: the model's hidden size
  int64_t tcp_max_memory = 0;   // memory-token table size: ceil(max context / min rate)

  nlohmann::json to_json() const;
  static CompressorConfig from_json(const nlohmann::json& j, const std::string& where);
  void validate(const std::string& where) const;
};

}  // namespace gmsa
