#pragma once
// The GMSA encoder: the decoder LLM's first k layers (and its final norm), adapted with LoRA.
// Its base weights are the decoder's own tensors, not a copy, while both stay frozen; when a
// later stage trains decoder weights, untie_trained() gives the encoder private copies so it
// keeps computing with the weights it was trained with.
#include <torch/torch.h>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/model/decoder.h"

namespace gmsa {

class EncoderImpl : public torch::nn::Module {
 public:
  EncoderImpl(Decoder& decoder, const CompressorConfig& cfg);

  // Context embeddings [B, T, H] (right-padded, no BOS) -> last hidden state after the final
  // norm, with causal attention. Right padding needs no mask under causal attention.
  torch::Tensor forward(const torch::Tensor& embeds);
  // Token embeddings through the (shared) embedding table, in the decoder's compute dtype.
  torch::Tensor embed(const torch::Tensor& ids);

  // Replace every shared base tensor that now requires grad (because a decoder stage trains
  // it) with a private frozen copy. Returns how many tensors were untied.
  int64_t untie_trained();

  // Inference only: fold every LoRA adapter into private weights (Linear::merge_lora) and pack
  // each block's projections. Costs the k layers' weights once more (3.2 GB for 8 layers of the
  // 7B shape) and saves the adapters' extra GEMMs and passes over the activations. A merged
  // compressor can no longer be trained or saved.
  void merge_lora();
  bool lora_merged() const { return merged_; }

  int64_t num_layers() const { return static_cast<int64_t>(layers.size()); }
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};
  Embedding embed_tokens{nullptr};

 private:
  Decoder decoder_;  // for the RoPE table, compute dtype and layer runner
  bool merged_ = false;
};
TORCH_MODULE(Encoder);

}  // namespace gmsa
