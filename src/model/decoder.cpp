#include "gmsa/model/decoder.h"

#include <map>
#include <set>

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa {

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim) {
  weight = register_parameter("weight", torch::randn({vocab, dim}, InitOptionsGuard::current()) * 0.02);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(weight, ids);
}

DecoderBodyImpl::DecoderBodyImpl(const ModelConfig& cfg) {
  embed_tokens = register_module("embed_tokens", Embedding(cfg.vocab_size, cfg.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) layers->push_back(DecoderLayer(cfg));
  norm = register_module("norm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
}

DecoderImpl::DecoderImpl(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate("model config");
  model = register_module("model", DecoderBody(cfg_));
  if (!cfg_.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(cfg_.hidden_size, cfg_.vocab_size, false));
  // Not a registered buffer: Module::to(dtype) would round it to bf16.
  inv_freq = rope_inv_freq(cfg_);
}

void DecoderImpl::pack_projections() {
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    auto layer = model->layer(i);
    layer->self_attn->pack_projections();
    layer->mlp->pack_projections();
  }
}

torch::Tensor DecoderImpl::embed(const torch::Tensor& ids) {
  return model->embed_tokens(ids).to(compute_dtype_);
}

torch::Tensor DecoderImpl::logits(const torch::Tensor& hidden) {
  const auto& w = lm_head.is_empty() ? model->embed_tokens->weight : lm_head->weight;
  return torch::linear(hidden, w.to(hidden.scalar_type())).to(torch::kFloat);
}

torch::Tensor positions_from_mask(const torch::Tensor& mask) {
  return (mask.to(torch::kLong).cumsum(-1) - 1).clamp_min(0);
}

torch::Tensor build_attention_mask(const torch::Tensor& key_mask, int64_t tq, int64_t tk,
                                   std::optional<int64_t> sliding_window, torch::Device device) {
  const bool window_bites = sliding_window && tk > *sliding_window;
  if (!key_mask.defined() && !window_bites) return {};
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto qpos = torch::arange(tk - tq, tk, opts).view({1, 1, tq, 1});
  auto kpos = torch::arange(tk, opts).view({1, 1, 1, tk});
  auto allowed = kpos <= qpos;
  if (window_bites) allowed = allowed.logical_and(qpos - kpos < *sliding_window);
  if (key_mask.defined()) {
    GMSA_CHECK(key_mask.size(-1) == tk, "attention_mask covers {} positions, expected {}",
               key_mask.size(-1), tk);
    allowed = allowed.logical_and(key_mask.to(device).to(torch::kBool).view({-1, 1, 1, tk}));
  }
  return allowed.logical_or(kpos == qpos);
}

namespace {

// Recomputes a decoder layer in backward instead of storing its activations (reentrant, as
// torch.utils.checkpoint with use_reentrant=True). The RNG state of the forward is replayed so
// that dropout masks (LoRA dropout) are the same in the recomputation.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor anchor, DecoderLayerImpl* layer, const Rope* rope,
                               const torch::Tensor* mask_ptr) {
    // The mask travels by pointer: an undefined tensor cannot be a Function input.
    const torch::Tensor mask = *mask_ptr;
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["cos"] = rope->cos;
    ctx->saved_data["sin"] = rope->sin;
    ctx->saved_data["mask"] = mask.defined() ? c10::IValue(mask) : c10::IValue();
    ctx->saved_data["x"] = x;
    ctx->saved_data["rng"] = compat::rng_state(x.device());
    ctx->saved_data["cpu_rng"] = compat::rng_state(torch::kCPU);
    torch::NoGradGuard no_grad;
    AttentionContext actx{rope, mask, nullptr, 0, {}};
    return layer->forward(x, actx);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    Rope rope{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor()};
    auto mask_iv = ctx->saved_data["mask"];
    torch::Tensor mask = mask_iv.isNone() ? torch::Tensor() : mask_iv.toTensor();
    auto x = ctx->saved_data["x"].toTensor().detach().requires_grad_(true);
    // Fork the RNG: replay the forward's draws, then restore the current state.
    auto rng_now = compat::rng_state(x.device());
    auto cpu_rng_now = compat::rng_state(torch::kCPU);
    compat::set_rng_state(ctx->saved_data["rng"].toTensor(), x.device());
    compat::set_rng_state(ctx->saved_data["cpu_rng"].toTensor(), torch::kCPU);
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      AttentionContext actx{&rope, mask, nullptr, 0, {}};
      out = layer->forward(x, actx);
    }
    compat::set_rng_state(rng_now, x.device());
    compat::set_rng_state(cpu_rng_now, torch::kCPU);
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor DecoderImpl::run_layers(torch::Tensor x, const torch::Tensor& position_ids,
                                      const torch::Tensor& key_mask, KVCache* cache,
                                      int64_t first, int64_t last) {
  const int64_t T = x.size(1);
  const int64_t past = cache ? cache->length : 0;
  if (inv_freq.device() != x.device()) inv_freq = inv_freq.to(x.device());
  Rope rope = rope_tables(inv_freq, position_ids, x.scalar_type());
  auto mask = build_attention_mask(key_mask, T, past + T, cfg_.sliding_window, x.device());
  const bool checkpoint = checkpointing_ && is_training() && torch::GradMode::is_enabled() && !cache;
  // The anchor makes the checkpointed output require grad even when x does not (only the
  // layer's own parameters, e.g. LoRA, are trained).
  auto anchor = checkpoint ? torch::zeros({1}, x.options().dtype(torch::kFloat)).requires_grad_(true)
                           : torch::Tensor();
  for (int64_t i = first; i < last; ++i) {
    auto layer = model->layer(i);
    if (checkpoint) {
      x = CheckpointedLayer::apply(x, anchor, layer.get(), &rope, &mask);
    } else {
      AttentionContext actx{&rope, mask, cache, i - first, {}};
      x = layer->forward(x, actx);
    }
  }
  if (cache) cache->length += T;
  return x;
}

DecoderOutput DecoderImpl::forward(const DecoderInput& in) {
  GMSA_CHECK(in.input_ids.defined() != in.inputs_embeds.defined(),
             "decoder: give exactly one of input_ids and inputs_embeds");
  auto x = in.inputs_embeds.defined() ? in.inputs_embeds.to(compute_dtype_) : embed(in.input_ids);
  GMSA_CHECK(x.dim() == 3 && x.size(2) == cfg_.hidden_size,
             "decoder: inputs must be [batch, tokens, {}], got {}", cfg_.hidden_size, compat::shape_str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t past = in.cache ? in.cache->length : 0;
  torch::Tensor pos = in.position_ids;
  if (!pos.defined())
    pos = torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kLong).device(x.device()))
              .unsqueeze(0).expand({B, T});
  const int64_t n = in.num_layers < 0 ? cfg_.num_hidden_layers : in.num_layers;
  GMSA_CHECK(n <= cfg_.num_hidden_layers, "decoder: asked for {} layers, the model has {}", n,
             cfg_.num_hidden_layers);
  DecoderOutput out;
  const int64_t split = in.hidden_after_layer;
  if (split >= 0 && split < n) {
    KVCache* cache = in.cache;
    GMSA_CHECK(!cache, "decoder: hidden_after_layer cannot be combined with a KV cache");
    x = run_layers(x, pos, in.attention_mask, nullptr, 0, split);
    out.hidden_at = x;
    x = run_layers(x, pos, in.attention_mask, nullptr, split, n);
  } else {
    x = run_layers(x, pos, in.attention_mask, in.cache, 0, n);
    if (split == n) out.hidden_at = x;
  }
  if (in.final_norm) x = model->norm(x);
  out.last_hidden = x;
  if (in.compute_logits) out.logits = logits(x);
  return out;
}

void load_parameters(torch::nn::Module& module,
                     const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     const std::string& where, bool strict) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : tensors) by_name[name] = &t;
  std::set<std::string> used;
  std::vector<std::string> missing;
  torch::NoGradGuard no_grad;
  for (auto& item : module.named_parameters(true)) {
    auto it = by_name.find(item.key());
    if (it == by_name.end()) {
      missing.push_back(item.key());
      continue;
    }
    auto& dst = item.value();
    const auto& src = *it->second;
    if (src.sizes() != dst.sizes())
      fail("{}: tensor {} has shape {}, the model expects {}", where, item.key(), compat::shape_str(src.sizes()), compat::shape_str(dst.sizes()));
    dst.copy_(src);
    used.insert(item.key());
  }
  if (!missing.empty())
    fail("{}: {} parameter(s) missing, first: {}", where, missing.size(), missing.front());
  if (strict) {
    for (const auto& [name, t] : tensors) {
      // Old checkpoints store the RoPE table (derived from the config here); some tied
      // checkpoints also ship lm_head.weight, a copy of the embeddings.
      if (used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
      if (name == "lm_head.weight" && module.named_parameters().find("lm_head.weight") == nullptr) continue;
      fail("{}: unexpected tensor {} (not a parameter of this model)", where, name);
    }
  }
}

}  // namespace gmsa
