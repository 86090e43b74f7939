#pragma once
// FLOPs of one training sample, for MFU (the convention of docs/flops.md): a matmul costs
// 2 * m * n * k forward; backward costs 1x forward for input gradients, plus 1x for weight
// gradients where the weight trains; attention scores and values count in full (4 * T^2 * d per
// layer, no causal halving), backward 2x; embedding look-ups, norms and elementwise ops are not
// counted.
#include <string>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/model/config.h"

namespace gmsa {

class FlopCounter {
 public:
  // compressor may be null (lm stage). stage: ae | keft | ft | lm.
  FlopCounter(const ModelConfig& model, const CompressorConfig* compressor, std::string stage);
  // One sample: L context tokens compressed at rate r, p prompt and n target tokens.
  double sample(int64_t context, int64_t rate, int64_t prompt, int64_t target) const;
  // Forward FLOPs of `layers` blocks over T tokens (linear + attention), and of the LM head.
  double blocks_forward(int64_t layers, int64_t tokens) const;
  double head_forward(int64_t tokens) const;

 private:
  double lora_forward(int64_t layers, int64_t tokens) const;
  ModelConfig m_;
  bool has_comp_;
  CompressorConfig c_;
  std::string stage_;
};

}  // namespace gmsa
