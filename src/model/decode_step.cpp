#include "gmsa/model/decode_step.h"

#include <cmath>
#include <cstdint>

#include "gmsa/model/compat.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/util/error.h"

// CUDA graphs exist in CUDA builds of LibTorch 2.x (whose CMake package puts the CUDA headers
// on the include path); the CPU build of the development machine runs the same step eagerly.
#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>) && GMSA_TORCH_AT_LEAST(2, 1)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define GMSA_HAVE_CUDA_GRAPHS 1
#endif

namespace gmsa {

#ifdef GMSA_HAVE_CUDA_GRAPHS
struct DecodeStep::Graph {
  at::cuda::CUDAGraph graph;
};
#else
struct DecodeStep::Graph {};
#endif

bool DecodeStep::graphs_available() {
#ifdef GMSA_HAVE_CUDA_GRAPHS
  return true;
#else
  return false;
#endif
}

DecodeStep::DecodeStep(Decoder decoder, KVCache& cache, const torch::Tensor& prompt_mask,
                       const torch::Tensor& next_positions, bool use_graph)
    : dec_(std::move(decoder)), cache_(cache), want_graph_(use_graph) {
  const int64_t B = prompt_mask.size(0), filled = cache.length, capacity = cache.capacity();
  GMSA_CHECK(prompt_mask.size(1) == filled, "decode step: prompt mask covers {} columns, the cache holds {}",
             prompt_mask.size(1), filled);
  GMSA_CHECK(filled < capacity, "decode step: the KV cache is full ({} columns)", capacity);
  auto device = cache.k.at(0).device();
  GMSA_CHECK(!use_graph || (device.is_cuda() && graphs_available()),
             "decode step: CUDA graphs need a CUDA device and a CUDA build of LibTorch >= 2.1 (device {})",
             device.str());
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  tokens_ = torch::zeros({B}, longs);
  slot_ = torch::full({1}, filled, longs);
  positions_ = next_positions.to(device, torch::kLong).reshape({B, 1}).clone();
  key_mask_ = torch::zeros({B, capacity}, longs.dtype(torch::kBool));
  key_mask_.narrow(1, 0, filled).copy_(prompt_mask.to(device, torch::kBool));
  columns_ = torch::arange(capacity, longs);
  auto& inv_freq = dec_->inv_freq;
  if (inv_freq.device() != device) inv_freq = inv_freq.to(device);
  fast_ = kernels_apply();
  fuse_norms_ = fast_ && norm_fusion_applies();
  if (fast_) arrivals_ = torch::zeros({B * dec_->config().num_attention_heads}, longs.dtype(torch::kInt));
  first_slot_ = filled;
}

bool DecodeStep::pick_greedily(GreedyPick pick) {
  GMSA_CHECK(calls_ == 0, "decode step: pick_greedily must come before the first run");
  if (!fast_ || !decode_ops::step_pick()) return false;
  const int64_t B = tokens_.size(0), V = dec_->config().vocab_size;
  const auto device = tokens_.device();
  auto on_device = [&](const torch::Tensor& t, torch::ScalarType dtype) {
    return t.defined() && t.device() == device && t.scalar_type() == dtype && t.is_contiguous();
  };
  GMSA_CHECK(on_device(pick.eos, torch::kLong) && pick.eos.dim() == 1 && on_device(pick.finished, torch::kBool) &&
                 pick.finished.numel() == B && pick.out.defined() && pick.out.device() == device &&
                 pick.out.scalar_type() == torch::kLong && pick.out.dim() == 2 && pick.out.size(0) == B &&
                 pick.out.stride(1) == 1 &&
                 (!pick.seen.defined() || (on_device(pick.seen, torch::kBool) &&
                                           pick.seen.sizes() == torch::IntArrayRef({B, V}))),
             "decode step: the greedy pick's tensors do not match the step ({} rows, vocabulary {}, {})", B, V,
             device.str());
  pick_ = std::move(pick);
  ticket_ = torch::zeros({1}, tokens_.options().dtype(torch::kInt));
  return true;
}

bool DecodeStep::kernels_apply() const {
  const auto& mc = dec_->config();
  const auto bf16 = torch::kBFloat16;
  const auto& k0 = cache_.k.at(0);
  if (!decode_ops::enabled() || dec_->compute_dtype() != bf16 || mc.qk_norm || !k0.is_cuda() ||
      k0.scalar_type() != bf16 || static_cast<int64_t>(cache_.k.size()) != mc.num_hidden_layers ||
      !decode_ops::attention_supports(mc.head_dim) || mc.num_attention_heads % mc.num_key_value_heads != 0)
    return false;
  auto body = dec_->model;
  if (body->norm->weight.scalar_type() != bf16) return false;
  for (int64_t i = 0; i < mc.num_hidden_layers; ++i) {
    auto layer = body->layer(i);
    auto& attn = layer->self_attn;
    auto& mlp = layer->mlp;
    auto qkv = attn->packed_qkv(), gate_up = mlp->packed_gate_up();
    if (!qkv.defined() || !gate_up.defined() || attn->o_proj->has_lora() || mlp->down_proj->has_lora()) return false;
    for (const auto& w : {qkv.weight, gate_up.weight, attn->o_proj->weight,
                          mlp->down_proj->weight, layer->input_layernorm->weight,
                          layer->post_attention_layernorm->weight})
      if (w.scalar_type() != bf16) return false;
  }
  return true;
}

bool DecodeStep::norm_fusion_applies() const {
  const auto& mc = dec_->config();
  const int64_t B = tokens_.size(0);
  if (!decode_ops::norm_fusion() || !decode_ops::tma_fed_rows(B) || mc.hidden_size % 32 != 0 || mc.intermediate_size % 32 != 0 ||
      mc.q_dim() % 32 != 0 || !decode_ops::norm_fusion_fits(mc.hidden_size))
    return false;
  // Every tensor the fused projections read, as their kernels take them (16-byte accesses):
  // otherwise a call would find its kernel inapplicable in the middle of the step.
  auto usable = [](const torch::Tensor& w) {
    return !w.defined() || (w.is_contiguous() && reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 == 0);
  };
  auto body = dec_->model;
  const auto& head = dec_->lm_head.is_empty() ? body->embed_tokens->weight : dec_->lm_head->weight;
  if (!usable(body->norm->weight) || !usable(head)) return false;
  for (int64_t i = 0; i < mc.num_hidden_layers; ++i) {
    auto layer = body->layer(i);
    auto qkv = layer->self_attn->packed_qkv(), gate_up = layer->mlp->packed_gate_up();
    const auto& o = layer->self_attn->o_proj;
    const auto& down = layer->mlp->down_proj;
    for (const auto& t : {layer->input_layernorm->weight, layer->post_attention_layernorm->weight, qkv.weight,
                          qkv.bias, gate_up.weight, o->weight, o->bias, down->weight, down->bias})
      if (!usable(t)) return false;
    if (gate_up.bias.defined()) return false;  // no bias in the SwiGLU epilogue
  }
  return true;
}

// The kernels' preconditions were checked when the step was built; an undefined result here
// means something changed since.
template <typename T>
static T checked(T t, const char* what) {
  GMSA_CHECK(t.defined(), "decode step: the {} kernel no longer applies to this model", what);
  return t;
}

torch::Tensor DecodeStep::forward_kernels() {
  const auto& mc = dec_->config();
  const int64_t B = tokens_.size(0), D = mc.head_dim;
  auto body = dec_->model;
  // The rows' embeddings, their RoPE tables and the new key column: made by the previous step's
  // pick (chained_), or one launch, or the ops.
  if (!chained_)
    begun_ = decode_ops::step_begin(tokens_, body->embed_tokens->weight, positions_, dec_->inv_freq, slot_, key_mask_,
                                    D);
  torch::Tensor resid = begun_.embeds, cos = begun_.cos, sin = begun_.sin;
  if (!resid.defined()) {
    key_mask_.index_fill_(1, slot_, true);
    Rope rope = rope_tables(dec_->inv_freq, positions_, dec_->compute_dtype());
    cos = rope.cos.reshape({B, D});
    sin = rope.sin.reshape({B, D});
    resid = dec_->embed(tokens_);
  }
  auto allowed = key_mask_;
  if (mc.sliding_window) allowed = allowed.logical_and(columns_ > slot_ - *mc.sliding_window);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // Each sub-block starts with an RMSNorm and ends with an add into the residual stream. Unfused,
  // the add is one launch with the next RMSNorm (add_norm); fused, the projections around them
  // carry both (decode_ops::norm_fusion) and `in` is the next RMSNorm's input in their form.
  torch::Tensor delta, normed;
  decode_ops::NormedInput in;
  auto layer0_norm = body->layer(0)->input_layernorm;
  if (fuse_norms_)
    in = checked(decode_ops::rms_partials(resid, layer0_norm->weight, layer0_norm->eps), "RMSNorm partials");
  else
    normed = layer0_norm(resid);
  auto add_norm = [&](const RMSNorm& norm) {
    auto [h, n] = decode_ops::add_rms_norm(resid, delta, norm->weight, norm->eps);
    resid = checked(h, "add + RMSNorm");
    normed = n;
  };
  // x W^T + bias into the residual stream, then the next RMSNorm (weight of `next`).
  auto end_block = [&](const torch::Tensor& x, const Linear& proj, const RMSNorm& next, const torch::Tensor& warm) {
    if (fuse_norms_) {
      in = checked(decode_ops::residual_linear(x, proj->weight, proj->bias, resid, next->weight, next->eps, warm),
                   "residual projection");
      return;
    }
    delta = decode_ops::linear(x, proj->weight, proj->bias, warm);
    add_norm(next);
  };
  // The normed rows times w (+ bias).
  auto start_block = [&](const torch::Tensor& w, const torch::Tensor& bias, const torch::Tensor& warm) {
    if (fuse_norms_)
      return checked(decode_ops::normed_linear(in, w, bias, /*swiglu=*/false, warm), "normed projection");
    return decode_ops::linear(normed, w, bias, warm);
  };
  const auto& head_w = dec_->lm_head.is_empty() ? body->embed_tokens->weight : dec_->lm_head->weight;
  const auto head = head_w.to(resid.scalar_type());
  // Each weight-reading kernel warms the next weights in L2 where decode_ops::warms_l2: attention
  // o_proj's, o_proj gate/up's, gate/up down's, down the next layer's q/k/v (the last one the
  // LM head's) and the LM head layer 0's, for the next step. The q/k/v projection warms
  // nothing: attention, which streams the cache, comes between it and o_proj.
  const auto first_qkv = body->layer(0)->self_attn->packed_qkv();
  auto qkv_w = first_qkv;
  for (int64_t i = 0; i < mc.num_hidden_layers; ++i) {
    auto layer = body->layer(i);
    auto& attn = layer->self_attn;
    auto& mlp = layer->mlp;
    auto gu_w = mlp->packed_gate_up();
    const bool last = i + 1 == mc.num_hidden_layers;
    const auto next_qkv = last ? PackedProjections{} : body->layer(i + 1)->self_attn->packed_qkv();
    auto qkv = start_block(qkv_w.weight, qkv_w.bias, {});
    auto a = checked(decode_ops::rope_attention(qkv, cos, sin, cache_.k[i], cache_.v[i], allowed, slot_,
                                                mc.num_attention_heads, scale, arrivals_, attn->o_proj->weight),
                     "RoPE + KV store + attention");
    end_block(a, attn->o_proj, layer->post_attention_layernorm, gu_w.weight);
    const auto& down = mlp->down_proj;
    torch::Tensor h;
    if (fuse_norms_)
      h = checked(decode_ops::normed_linear(in, gu_w.weight, {}, /*swiglu=*/true, down->weight), "normed SwiGLU");
    else if (!gu_w.bias.defined())
      h = decode_ops::swiglu_linear(normed, gu_w.weight, down->weight);
    if (!h.defined()) {  // cuBLAS (or a bias): the product, then the fused SwiGLU
      auto gu = decode_ops::linear(normed, gu_w.weight, gu_w.bias);
      const int64_t I = gu.size(-1) / 2;
      h = checked(fused::silu_mul(gu.narrow(-1, 0, I), gu.narrow(-1, I, I)), "SwiGLU");
    }
    end_block(h, down, last ? body->norm : body->layer(i + 1)->input_layernorm, last ? head : next_qkv.weight);
    qkv_w = next_qkv;
  }
  auto logits = start_block(head, {}, first_qkv.weight);
  if (picks()) {  // the pick feeds tokens_, advances positions_ and slot_, and begins the next step
    const bool chain = begun_.embeds.defined();
    const decode_ops::NextBegin next{begun_, body->embed_tokens->weight, dec_->inv_freq, key_mask_};
    GMSA_CHECK(decode_ops::greedy_step_pick(logits, pick_.seen, pick_.penalty, pick_.eos, tokens_, pick_.out,
                                            first_slot_ - 1, pick_.finished, positions_, slot_, ticket_,
                                            chain ? &next : nullptr),
               "decode step: the greedy pick kernel no longer applies");
    chained_ = chain;
    return {};
  }
  logits = logits.to(torch::kFloat);
  if (!decode_ops::step_end(positions_, slot_)) {
    positions_.add_(1);
    slot_.add_(1);
  }
  return logits;
}

DecodeStep::~DecodeStep() = default;

torch::Tensor DecodeStep::forward() {
  if (fast_) return forward_kernels();
  const auto& mc = dec_->config();
  key_mask_.index_fill_(1, slot_, true);
  auto allowed = key_mask_;
  if (mc.sliding_window) allowed = allowed.logical_and(columns_ > slot_ - *mc.sliding_window);
  // Additive (0 / -inf) rather than boolean: SDPA would convert a boolean mask in every layer.
  auto mask = torch::zeros(allowed.sizes(), allowed.options().dtype(dec_->compute_dtype()))
                  .masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity())
                  .unsqueeze(1).unsqueeze(1);  // [B, 1, 1, capacity]
  auto x = dec_->embed(tokens_.unsqueeze(1));
  Rope rope = rope_tables(dec_->inv_freq, positions_, x.scalar_type());
  const int64_t layers = static_cast<int64_t>(cache_.k.size());
  for (int64_t i = 0; i < layers; ++i) {
    AttentionContext ctx{&rope, mask, &cache_, i, slot_};
    x = dec_->model->layer(i)->forward(x, ctx);
  }
  auto logits = dec_->logits(dec_->model->norm(x).select(1, 0));
  positions_.add_(1);
  slot_.add_(1);
  return logits;
}

torch::Tensor DecodeStep::run(const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  GMSA_CHECK(tokens.defined() || (picks() && calls_ > 0), "decode step: no tokens to consume");
  if (tokens.defined()) tokens_.copy_(tokens, /*non_blocking=*/true);
  ++calls_;
  ++cache_.length;  // host bookkeeping only; the step itself reads slot_
  GMSA_CHECK(cache_.length <= cache_.capacity(), "decode step: KV cache overflow (capacity {})", cache_.capacity());
  if (!want_graph_) return forward();
#ifdef GMSA_HAVE_CUDA_GRAPHS
  if (graph_) {
    graph_->graph.replay();
    return logits_;
  }
  // First call: run the step for real on a side stream (this also initialises cuBLAS there),
  // then record it. Recording does not execute, so the state advanced exactly once.
  const auto device_index = tokens_.device().index();
  auto main = c10::cuda::getCurrentCUDAStream(device_index);
  auto side = c10::cuda::getStreamFromPool(false, device_index);
  at::cuda::CUDAEvent ready;
  ready.record(main);
  ready.block(side);
  torch::Tensor first;
  graph_ = std::make_unique<Graph>();
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    first = forward();
    graph_->graph.capture_begin();
    logits_ = forward();
    graph_->graph.capture_end();
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(main);
  // `first` was allocated on the side stream and is read on the main one.
  if (first.defined()) c10::cuda::CUDACachingAllocator::recordStream(first.storage().data_ptr(), main);
  return first;
#else
  fail("decode step: CUDA graphs are not available in this build");
#endif
}

}  // namespace gmsa
