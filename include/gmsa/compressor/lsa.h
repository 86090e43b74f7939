#pragma once
// Layer Semantic Alignment (GMSA, Sec. 3.2): soft tokens summarise high-level (encoder output)
// semantics; k_LSA transformer blocks initialised from the decoder's first layers, trained,
// then a frozen copy of the decoder's final norm, map them into the decoder's input space.
// Ablations: randomly initialised blocks, one linear projection, or nothing.
#include <torch/torch.h>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/model/decoder.h"

namespace gmsa {

class LSAImpl : public torch::nn::Module {
 public:
  LSAImpl(Decoder& decoder, const CompressorConfig& cfg);
  // soft [B, M, H], right-padded; positions 0..m-1, causal among the soft tokens.
  torch::Tensor forward(const torch::Tensor& soft);

  std::string type;
  torch::nn::ModuleList blocks{nullptr};  // blocks | random_blocks
  Linear proj{nullptr};                   // linear
  RMSNorm norm{nullptr};                  // frozen copy of the decoder's final norm

 private:
  ModelConfig model_cfg_;
  torch::Tensor inv_freq_;
};
TORCH_MODULE(LSA);

}  // namespace gmsa
