#pragma once
// The compressor: context tokens -> soft tokens for the frozen decoder.
//   GMSA: encoder (first k layers + LoRA) -> group merging -> LSA.
//   TCP:  encoder over [context][memory tokens] -> memory states -> MLP.
#include <torch/torch.h>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/compressor/encoder.h"
#include "gmsa/compressor/group_merging.h"
#include "gmsa/compressor/lsa.h"
#include "gmsa/compressor/memory_tokens.h"

namespace gmsa {

class CompressorImpl : public torch::nn::Module {
 public:
  CompressorImpl(Decoder& decoder, const CompressorConfig& cfg);

  // ids [B, L] right-padded context tokens (no BOS), lengths [B] in [0, L], rates [B] >= 1.
  // lengths and rates are read on the host: pass CPU tensors (a device tensor costs one
  // device-to-host copy each). The result's lengths are on the CPU (see SoftTokens).
  SoftTokens forward(const torch::Tensor& ids, const torch::Tensor& lengths,
                     const torch::Tensor& rates);

  const CompressorConfig& config() const { return cfg_; }
  // Parameters that define a trained compressor (saved): LoRA, LSA, memory tokens, MLP.
  std::vector<std::pair<std::string, torch::Tensor>> own_parameters();

  Encoder encoder{nullptr};
  LSA lsa{nullptr};
  MemoryTokens memory{nullptr};

 private:
  CompressorConfig cfg_;
};
TORCH_MODULE(Compressor);

}  // namespace gmsa
