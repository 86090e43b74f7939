#pragma once
// Building blocks of a LLaMA-family decoder, named like Hugging Face's modules so that
// named_parameters() gives checkpoint names ("self_attn.q_proj.weight").
#include <torch/torch.h>

#include "gmsa/model/config.h"

namespace gmsa {

// Where and in which dtype new modules create their parameters (default: CPU fp32). A 7B
// model built for a GPU benchmark is created on the GPU in bf16 directly, instead of 27 GB of
// fp32 on the host first. Scoped: the previous options come back when the guard dies.
class InitOptionsGuard {
 public:
  explicit InitOptionsGuard(torch::TensorOptions options);
  ~InitOptionsGuard();
  static torch::TensorOptions current();

 private:
  torch::TensorOptions saved_;
};

// torch::nn::Module whose parameters can be re-pointed at other tensors: how the encoder
// shares the decoder's weights, and later takes private copies of them.
class ModuleBase : public torch::nn::Module {
 public:
  // Registers `tensor` under `name`, replacing the tensor already registered there.
  torch::Tensor set_parameter(const std::string& name, torch::Tensor tensor, bool requires_grad);
  void remove_parameter(const std::string& name) { parameters_.erase(name); }
};

// Low-rank adapter (Hu et al. 2021): y += (dropout(x) A^T B^T) * alpha / r.
struct LoraSpec {
  int64_t r = 0;
  double alpha = 32.0;
  double dropout = 0.05;
};

// nn.Linear with an optional LoRA adapter. Parameters are cast to the input's dtype on use,
// so trained parameters can stay fp32 (master weights) while the compute runs in bf16.
class LinearImpl : public ModuleBase {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  // residual + forward(x). For inference (eval mode, no autograd) without LoRA or bias, one GEMM
  // with the residual as its accumulator (beta 1, the sum rounded once): the separate add's
  // passes over the [tokens, out] output go (0.38 ms per residual at 48,000 tokens of the 7B
  // shape). With `reuse` the caller hands the residual over and the sum is written into it.
  torch::Tensor forward_add(const torch::Tensor& x, const torch::Tensor& residual, bool reuse = false);

  void add_lora(const LoraSpec& spec);
  bool has_lora() const { return lora_A.defined(); }
  // Point this layer's base weight (and bias) at another layer's tensors: no copy.
  void share_base_from(LinearImpl& other);
  // Replace shared base tensors by private copies (when the other owner starts training).
  void untie_base();
  // Inference: fold the adapter into a private copy of the weight, W + (alpha / r) B A computed
  // in fp32 and rounded once to W's dtype, and drop lora_A / lora_B: one GEMM instead of three.
  // The shared base tensor is left untouched. Without dropout this is the same function.
  void merge_lora();

  int64_t in_features, out_features;
  torch::Tensor weight, bias, lora_A, lora_B;
  double lora_scaling = 0.0, lora_dropout = 0.0;
};
TORCH_MODULE(Linear);

// Projections that read the same input (q/k/v; gate/up), stored as row blocks of one tensor
// so that inference runs one GEMM (one GEMV when decoding) instead of several. The Linears'
// own weight and bias become views of the packed tensors: parameter names, shapes and
// checkpoints are unchanged, and loading into them (copy_) updates the packed tensor.
struct PackedProjections {
  torch::Tensor weight, bias;  // [sum of out_features, in]; bias undefined if the layers have none
  // Packs `layers` (same input size, dtype and device, no LoRA, all or none with a bias);
  // leaves them untouched and returns an empty pack otherwise.
  static PackedProjections pack(const std::vector<Linear>& layers);
  // Whether every layer's weight (and bias) is still the view made by pack(): a layer whose
  // parameter was replaced (private copy, fp32 master, Module::to, LoRA) breaks the pack, and
  // the caller must run the layers one by one.
  bool intact(const std::vector<Linear>& layers) const;
  bool defined() const { return weight.defined(); }
};

class RMSNormImpl : public ModuleBase {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding tables for one forward pass (shared by every layer).
struct Rope {
  torch::Tensor cos, sin;  // [B, 1, T, head_dim], in the compute dtype
};
// inv_freq [head_dim / 2] with the config's scaling (default, linear, llama3).
torch::Tensor rope_inv_freq(const ModelConfig& cfg);
Rope rope_tables(const torch::Tensor& inv_freq, const torch::Tensor& position_ids,
                 torch::ScalarType dtype);
torch::Tensor apply_rope(const torch::Tensor& x, const Rope& rope);

// Preallocated per-layer keys and values for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // [B, kv_heads, capacity, head_dim] per layer
  int64_t length = 0;               // positions filled
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  // Every layer's keys and values in one buffer. Columns [0, written) are left uninitialised for
  // the caller to fill before anything reads them (generation's prefill writes the prompt's), the
  // rest zeroed (zeroing it all is a pass over 26 GB for a 3,030-token prompt at batch 16 on
  // the 7B shape).
  static KVCache allocate(const ModelConfig& cfg, int64_t batch, int64_t capacity,
                          torch::TensorOptions options, int64_t num_layers = -1, int64_t written = 0);
};

// What an attention call needs besides its input.
struct AttentionContext {
  const Rope* rope = nullptr;
  torch::Tensor mask;  // bool [B, 1, Tq, Tk] (true = may attend) or additive 0/-inf; undefined = causal
  KVCache* cache = nullptr;
  int64_t layer = 0;
  // Fixed-shape decoding (DecodeStep): write this step's keys and values at the cache column
  // held by this [1] device tensor and attend over the whole capacity; the mask hides the
  // columns not written yet. Undefined: append at cache->length and attend over the filled part.
  torch::Tensor cache_slot;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& cfg);
  // o_proj of the attention over x; plus `residual` when given (Linear::forward_add).
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, const torch::Tensor& residual = {});
  // q, k and v of x ([B, T, heads * D] views), from the packed projection when it is intact
  // and no gradient is recorded (training keeps the separate GEMMs and their backward).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> project_qkv(const torch::Tensor& x);
  void pack_projections();
  // The packed q/k/v projection, or undefined when not packed (or no longer intact).
  PackedProjections packed_qkv();
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
  int64_t num_heads, num_kv_heads, head_dim;

 private:
  PackedProjections qkv_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& cfg);
  // down(silu(gate(x)) * up(x)); plus `residual` when given (Linear::forward_add, `reuse` as there).
  // For inference with `reuse` on more than chunk_rows() rows it runs on equal row chunks of at
  // most that many, each summed into its rows of `residual`, which it returns: the gate/up
  // intermediate (2 x intermediate values per row) is allocated a chunk at a time.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual = {}, bool reuse = false);
  void pack_projections();
  // The packed gate/up projection ([2 * intermediate, hidden]), or undefined.
  PackedProjections packed_gate_up();
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

  // Process-wide; 0: never chunk. The default, 65,536 rows, keeps the 7B shape's gate/up product
  // under 2.7 GiB: a prefill of 32 x 3,030 tokens asked for 3.98 GiB in one piece and, with the
  // allocator's default segments, no longer found it (docs/performance.md). Batch 16's prefill
  // and compression (48,480 and 48,000 rows) run whole.
  static void set_chunk_rows(int64_t rows);
  static int64_t chunk_rows();

 private:
  torch::Tensor forward_rows(const torch::Tensor& x, const torch::Tensor& residual, bool reuse);
  PackedProjections gate_up_;
};
TORCH_MODULE(MLP);

// Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx);
  // Every Linear of this block by its short name (q_proj, ..., down_proj).
  std::vector<std::pair<std::string, Linear>> linears();
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

}  // namespace gmsa
