#pragma once
// A LLaMA-family decoder-only LM (llama, mistral, qwen2, qwen3) with Hugging Face parameter
// names. GMSA uses it three ways: the frozen decoder, the encoder (its first k layers, with
// LoRA), and the source of the LSA blocks.
#include <torch/torch.h>

#include "gmsa/model/config.h"
#include "gmsa/model/layers.h"

namespace gmsa {

struct DecoderInput {
  torch::Tensor input_ids;       // [B, T] int64, or undefined when inputs_embeds is given
  torch::Tensor inputs_embeds;   // [B, T, H]: soft tokens enter here
  torch::Tensor position_ids;    // [B, T]; default: cache length + 0..T-1
  torch::Tensor attention_mask;  // [B, past + T], 1 = real token; undefined = all real
  KVCache* cache = nullptr;      // appended to and advanced when given
  int64_t num_layers = -1;       // run only the first k layers (-1: all)
  bool final_norm = true;        // apply the final RMSNorm to the last hidden state
  bool compute_logits = true;
  int64_t hidden_after_layer = -1;  // also return the hidden state after this many layers
};

struct DecoderOutput {
  torch::Tensor logits;        // [B, T, V] (fp32), if computed
  torch::Tensor last_hidden;   // [B, T, H] after the layers run (and the final norm if asked)
  torch::Tensor hidden_at;     // after `hidden_after_layer` layers, if asked
};

class EmbeddingImpl : public ModuleBase {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// Holds the "model." part of the checkpoint: embed_tokens, layers, norm.
class DecoderBodyImpl : public torch::nn::Module {
 public:
  explicit DecoderBodyImpl(const ModelConfig& cfg);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  DecoderLayer layer(int64_t i) { return layers->ptr<DecoderLayerImpl>(i); }
};
TORCH_MODULE(DecoderBody);

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& cfg);
  DecoderOutput forward(const DecoderInput& in);

  // Token embeddings in the compute dtype.
  torch::Tensor embed(const torch::Tensor& ids);
  // Vocabulary logits (fp32) of hidden states that already went through the final norm.
  torch::Tensor logits(const torch::Tensor& hidden);
  // Runs layers [first, last) on x; the building block of forward, the encoder and LSA.
  torch::Tensor run_layers(torch::Tensor x, const torch::Tensor& position_ids,
                           const torch::Tensor& key_mask, KVCache* cache, int64_t first,
                           int64_t last);

  // The dtype activations are computed in (parameters are cast on use).
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  void set_compute_dtype(torch::ScalarType t) { compute_dtype_ = t; }
  // Inference: each block's q/k/v and gate/up weights become views of one packed tensor per
  // group (PackedProjections), so no-grad forwards and decoding run one GEMM per group. Call
  // once the weights are on their final device and dtype (load_pretrained does).
  void pack_projections();
  // Recompute each layer in backward instead of keeping its activations.
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }

  const ModelConfig& config() const { return cfg_; }
  DecoderBody model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings
  torch::Tensor inv_freq;  // fp32 RoPE frequencies, moved to the input's device on use

 private:
  ModelConfig cfg_;
  torch::ScalarType compute_dtype_ = torch::kFloat;
  bool checkpointing_ = false;
};
TORCH_MODULE(Decoder);

// bool [B, 1, Tq, Tk] mask (true = may attend) for queries at the last Tq of Tk positions:
// causal, within the sliding window if any, over real keys only. Each query may always attend
// to itself so that padding rows never produce NaN. Undefined when plain causal suffices.
torch::Tensor build_attention_mask(const torch::Tensor& key_mask, int64_t tq, int64_t tk,
                                   std::optional<int64_t> sliding_window, torch::Device device);

// Positions 0.. over the real tokens of each row (left padding gets position 0).
torch::Tensor positions_from_mask(const torch::Tensor& mask);

// Copies `tensors` (HF names) into `module`'s parameters (shapes must match, dtypes are
// converted). Every parameter must be found; unknown names are an error unless `strict`
// is false. `where` names the source in errors.
void load_parameters(torch::nn::Module& module,
                     const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     const std::string& where, bool strict = true);

}  // namespace gmsa
