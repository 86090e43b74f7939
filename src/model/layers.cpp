#include "gmsa/model/layers.h"

#include <atomic>
#include <cmath>

#include "gmsa/model/compat.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace F = torch::nn::functional;

static torch::Tensor cast_like(const torch::Tensor& t, const torch::Tensor& like) {
  return t.scalar_type() == like.scalar_type() ? t : t.to(like.scalar_type());
}

static thread_local torch::TensorOptions g_init_options = torch::TensorOptions().dtype(torch::kFloat);

InitOptionsGuard::InitOptionsGuard(torch::TensorOptions options) : saved_(g_init_options) {
  g_init_options = options;
}
InitOptionsGuard::~InitOptionsGuard() { g_init_options = saved_; }
torch::TensorOptions InitOptionsGuard::current() { return g_init_options; }

torch::Tensor ModuleBase::set_parameter(const std::string& name, torch::Tensor tensor, bool requires_grad) {
  if (!parameters_.contains(name)) return register_parameter(name, tensor, requires_grad);
  tensor.set_requires_grad(requires_grad);
  parameters_[name] = tensor;
  return tensor;
}

// ---------------------------------------------------------------- Linear (+ LoRA)

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}, InitOptionsGuard::current()));
  // Kaiming-uniform like nn.Linear; checkpoints overwrite it.
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (has_bias) {
    double bound = 1.0 / std::sqrt(static_cast<double>(in));
    bias = register_parameter("bias", torch::empty({out}, InitOptionsGuard::current()).uniform_(-bound, bound));
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  auto y = torch::linear(x, cast_like(weight, x), bias.defined() ? cast_like(bias, x) : torch::Tensor());
  if (!lora_A.defined()) return y;
  auto h = lora_dropout > 0 && is_training() ? F::dropout(x, F::DropoutFuncOptions().p(lora_dropout).training(true)) : x;
  auto t = torch::linear(h, cast_like(lora_A, x)).reshape({-1, lora_A.size(0)});
  // y + scaling * t B^T as one GEMM with y as its accumulator (beta 1, alpha scaling): no
  // separate scale and add passes over the [tokens, out] output.
  return torch::addmm(y.reshape({-1, out_features}), t, cast_like(lora_B, x).t(), 1.0, lora_scaling)
      .view(y.sizes());
}

torch::Tensor LinearImpl::forward_add(const torch::Tensor& x, const torch::Tensor& residual, bool reuse) {
  // Inference only: a checkpointed layer's first pass (no autograd, training mode) must round
  // exactly as its recomputation with autograd does.
  const bool inference = !is_training() && !torch::GradMode::is_enabled();
  const bool rows_match = residual.dim() == x.dim() && residual.size(-1) == out_features &&
                          residual.sizes().slice(0, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1);
  const bool one_gemm = inference && !lora_A.defined() && !bias.defined() && rows_match &&
                        residual.is_contiguous() && residual.scalar_type() == x.scalar_type();
  if (!one_gemm) return residual + forward(x);
  auto x2 = x.reshape({-1, in_features});
  auto w = cast_like(weight, x).t();
  auto r2 = residual.view({-1, out_features});
  return (reuse ? r2.addmm_(x2, w) : torch::addmm(r2, x2, w)).view(residual.sizes());
}

void LinearImpl::add_lora(const LoraSpec& spec) {
  GMSA_CHECK(spec.r > 0, "LoRA rank must be positive, got {}", spec.r);
  auto opts = torch::TensorOptions().dtype(torch::kFloat).device(weight.device());
  // PEFT's initialisation: A Kaiming-uniform, B zero, so training starts from the base model.
  auto a = torch::empty({spec.r, in_features}, opts);
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_parameter("lora_A", a);
  lora_B = register_parameter("lora_B", torch::zeros({out_features, spec.r}, opts));
  lora_scaling = spec.alpha / static_cast<double>(spec.r);
  lora_dropout = spec.dropout;
}

void LinearImpl::share_base_from(LinearImpl& other) {
  GMSA_CHECK(other.in_features == in_features && other.out_features == out_features,
             "cannot share weights between linear layers of different shapes");
  weight = set_parameter("weight", other.weight, other.weight.requires_grad());
  if (other.bias.defined()) bias = set_parameter("bias", other.bias, other.bias.requires_grad());
}

void LinearImpl::untie_base() {
  torch::NoGradGuard guard;
  weight = set_parameter("weight", weight.detach().clone(), false);
  if (bias.defined()) bias = set_parameter("bias", bias.detach().clone(), false);
}

void LinearImpl::merge_lora() {
  if (!has_lora()) return;
  torch::NoGradGuard guard;
  auto delta = torch::matmul(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat)) * lora_scaling;
  weight = set_parameter("weight", (weight.to(torch::kFloat) + delta.to(weight.device())).to(weight.scalar_type()),
                         false);
  remove_parameter("lora_A");
  remove_parameter("lora_B");
  lora_A = lora_B = torch::Tensor();
  lora_scaling = lora_dropout = 0.0;
}

// ---------------------------------------------------------------- packed projections

PackedProjections PackedProjections::pack(const std::vector<Linear>& layers) {
  GMSA_CHECK(!layers.empty(), "pack: no layers");
  const auto& first = layers.front()->weight;
  const bool with_bias = layers.front()->bias.defined();
  for (const auto& l : layers) {
    const auto& w = l->weight;
    if (l->has_lora() || l->bias.defined() != with_bias || w.size(1) != first.size(1) ||
        w.scalar_type() != first.scalar_type() || w.device() != first.device())
      return {};
  }
  torch::NoGradGuard no_grad;
  PackedProjections p;
  std::vector<torch::Tensor> ws, bs;
  for (const auto& l : layers) {
    ws.push_back(l->weight);
    if (with_bias) bs.push_back(l->bias);
  }
  p.weight = torch::cat(ws, 0);
  if (with_bias) p.bias = torch::cat(bs, 0);
  int64_t row = 0;
  for (auto l : layers) {
    const int64_t n = l->out_features;
    l->weight = l->set_parameter("weight", p.weight.narrow(0, row, n), l->weight.requires_grad());
    if (with_bias) l->bias = l->set_parameter("bias", p.bias.narrow(0, row, n), l->bias.requires_grad());
    row += n;
  }
  return p;
}

bool PackedProjections::intact(const std::vector<Linear>& layers) const {
  if (!weight.defined()) return false;
  int64_t row = 0;
  for (const auto& l : layers) {
    const int64_t n = l->out_features;
    auto view_of = [&](const torch::Tensor& t, const torch::Tensor& packed) {
      return t.defined() && t.scalar_type() == packed.scalar_type() && t.device() == packed.device() &&
             t.is_contiguous() && t.data_ptr() == packed.narrow(0, row, n).data_ptr();
    };
    if (l->has_lora() || !view_of(l->weight, weight) || (bias.defined() && !view_of(l->bias, bias))) return false;
    row += n;
  }
  return row == weight.size(0);
}

// ---------------------------------------------------------------- RMSNorm

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, InitOptionsGuard::current()));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (fused::enabled() && x.is_cuda())
    if (auto y = fused::rms_norm(x, cast_like(weight, x), eps); y.defined()) return y;
  // As transformers: normalise in fp32, cast back, then scale in the input dtype.
  auto xf = x.to(torch::kFloat);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return cast_like(weight, x) * normed.to(x.scalar_type());
}

// ---------------------------------------------------------------- RoPE

torch::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t dim = cfg.head_dim;
  auto exponent = torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat) / static_cast<double>(dim);
  auto inv_freq = 1.0 / torch::pow(torch::tensor(cfg.rope_theta, torch::kFloat), exponent);
  const auto& rs = cfg.rope_scaling;
  if (rs.type == "linear") return inv_freq / rs.factor;
  if (rs.type != "llama3") return inv_freq;
  // LLaMA-3.1 frequency-dependent scaling: long wavelengths are divided by `factor`, short
  // ones kept, and the band between is interpolated smoothly.
  const double old_len = static_cast<double>(rs.original_max_position_embeddings);
  const double low_wavelen = old_len / rs.low_freq_factor;
  const double high_wavelen = old_len / rs.high_freq_factor;
  auto wavelen = 2 * M_PI / inv_freq;
  auto scaled = torch::where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq);
  auto smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, smoothed, scaled);
}

Rope rope_tables(const torch::Tensor& inv_freq, const torch::Tensor& position_ids,
                 torch::ScalarType dtype) {
  auto freqs = position_ids.to(torch::kFloat).unsqueeze(-1) *
               inv_freq.to(position_ids.device(), torch::kFloat).view({1, 1, -1});
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [B, 1, T, D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

torch::Tensor apply_rope(const torch::Tensor& x, const Rope& rope) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * rope.cos + rotated * rope.sin;
}

KVCache KVCache::allocate(const ModelConfig& cfg, int64_t batch, int64_t capacity,
                          torch::TensorOptions options, int64_t num_layers, int64_t written) {
  GMSA_CHECK(written >= 0 && written <= capacity, "KV cache: {} prefilled columns for a capacity of {}", written,
             capacity);
  KVCache c;
  const int64_t n = num_layers < 0 ? cfg.num_hidden_layers : num_layers;
  auto all = torch::empty({n, 2, batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, options);
  // Masked columns are still read (times a zero weight): they must hold finite values.
  if (written < capacity) all.narrow(4, written, capacity - written).zero_();
  for (int64_t i = 0; i < n; ++i) {
    c.k.push_back(all[i][0]);
    c.v.push_back(all[i][1]);
  }
  return c;
}

// ---------------------------------------------------------------- Attention

AttentionImpl::AttentionImpl(const ModelConfig& cfg)
    : num_heads(cfg.num_attention_heads), num_kv_heads(cfg.num_key_value_heads), head_dim(cfg.head_dim) {
  const bool qkv_bias = cfg.has_qkv_bias();
  q_proj = register_module("q_proj", Linear(cfg.hidden_size, cfg.q_dim(), qkv_bias));
  k_proj = register_module("k_proj", Linear(cfg.hidden_size, cfg.kv_dim(), qkv_bias));
  v_proj = register_module("v_proj", Linear(cfg.hidden_size, cfg.kv_dim(), qkv_bias));
  o_proj = register_module("o_proj", Linear(cfg.q_dim(), cfg.hidden_size, cfg.o_proj_bias));
  if (cfg.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(cfg.head_dim, cfg.rms_norm_eps));
    k_norm = register_module("k_norm", RMSNorm(cfg.head_dim, cfg.rms_norm_eps));
  }
}

// [B, Hkv, T, D] -> [B, Hkv * groups, T, D], each kv head serving `groups` query heads.
static torch::Tensor repeat_kv(const torch::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], groups, s[2], s[3]}).reshape({s[0], s[1] * groups, s[2], s[3]});
}

void AttentionImpl::pack_projections() { qkv_ = PackedProjections::pack({q_proj, k_proj, v_proj}); }

PackedProjections AttentionImpl::packed_qkv() {
  if (qkv_.defined() && !qkv_.intact({q_proj, k_proj, v_proj})) qkv_ = {};  // frees the stale copy
  return qkv_;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> AttentionImpl::project_qkv(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled()) {
    if (auto p = packed_qkv(); p.defined() && p.weight.scalar_type() == x.scalar_type()) {
      auto parts = torch::linear(x, p.weight, p.bias)
                       .split_with_sizes({q_proj->out_features, k_proj->out_features, v_proj->out_features}, -1);
      return {parts[0], parts[1], parts[2]};
    }
  }
  return {q_proj(x), k_proj(x), v_proj(x)};
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                     const torch::Tensor& residual) {
  const int64_t B = x.size(0), T = x.size(1);
  auto [q_all, k_all, v_all] = project_qkv(x);
  auto q = q_all.view({B, T, num_heads, head_dim});
  auto k = k_all.view({B, T, num_kv_heads, head_dim});
  auto v_rows = v_all.view({B, T, num_kv_heads, head_dim});
  auto v = v_rows.transpose(1, 2);
  if (!q_norm.is_empty()) {
    q = q_norm(q);
    k = k_norm(k);
  }
  // [B, T, heads, D] -> [B, heads, T, D], rotated (one fused kernel when it applies).
  auto rotate = [&](const torch::Tensor& t) {
    auto r = fused::rope(t, ctx.rope->cos, ctx.rope->sin);
    return r.defined() ? r : apply_rope(t.transpose(1, 2), *ctx.rope);
  };
  q = rotate(q);
  if (ctx.cache && ctx.cache_slot.defined()) {
    auto& ck = ctx.cache->k[ctx.layer];
    auto& cv = ctx.cache->v[ctx.layer];
    ck.index_copy_(2, ctx.cache_slot, rotate(k));
    cv.index_copy_(2, ctx.cache_slot, v);
    k = ck;
    v = cv;
  } else if (ctx.cache) {
    auto& ck = ctx.cache->k[ctx.layer];
    auto& cv = ctx.cache->v[ctx.layer];
    const int64_t start = ctx.cache->length, end = start + T;
    GMSA_CHECK(end <= ck.size(2), "KV cache overflow: {} positions needed, capacity {}", end, ck.size(2));
    // The rotated keys and the values go straight into the cache where the kernel applies.
    auto k_cols = ck.narrow(2, start, T), v_cols = cv.narrow(2, start, T);
    if (!fused::rope_into(k, ctx.rope->cos, ctx.rope->sin, k_cols, v_rows, v_cols)) {
      k_cols.copy_(rotate(k));
      v_cols.copy_(v);
    }
    k = ck.narrow(2, 0, end);
    v = cv.narrow(2, 0, end);
  } else {
    k = rotate(k);
  }
  const int64_t groups = num_heads / num_kv_heads;
  auto out = compat::attention(q, repeat_kv(k, groups), repeat_kv(v, groups), ctx.mask,
                               /*causal=*/true, 1.0 / std::sqrt(static_cast<double>(head_dim)));
  auto heads = out.transpose(1, 2).reshape({B, T, num_heads * head_dim});
  return residual.defined() ? o_proj->forward_add(heads, residual) : o_proj(heads);
}

// ---------------------------------------------------------------- MLP and block

MLPImpl::MLPImpl(const ModelConfig& cfg) {
  gate_proj = register_module("gate_proj", Linear(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias));
  up_proj = register_module("up_proj", Linear(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias));
  down_proj = register_module("down_proj", Linear(cfg.intermediate_size, cfg.hidden_size, cfg.mlp_bias));
}

void MLPImpl::pack_projections() { gate_up_ = PackedProjections::pack({gate_proj, up_proj}); }

PackedProjections MLPImpl::packed_gate_up() {
  if (gate_up_.defined() && !gate_up_.intact({gate_proj, up_proj})) gate_up_ = {};
  return gate_up_;
}

namespace {
std::atomic<int64_t> g_mlp_chunk_rows{65536};
}  // namespace

void MLPImpl::set_chunk_rows(int64_t rows) {
  GMSA_CHECK(rows >= 0, "MLP chunk rows must be >= 0 (0: never chunk), got {}", rows);
  g_mlp_chunk_rows = rows;
}
int64_t MLPImpl::chunk_rows() { return g_mlp_chunk_rows; }

torch::Tensor MLPImpl::forward(const torch::Tensor& x, const torch::Tensor& residual, bool reuse) {
  const int64_t limit = chunk_rows(), width = x.dim() > 0 ? x.size(-1) : 0;
  const int64_t rows = width > 0 ? x.numel() / width : 0;
  const bool chunked = reuse && residual.defined() && limit > 0 && rows > limit && !is_training() &&
                       !torch::GradMode::is_enabled() && x.is_contiguous() && residual.is_contiguous() &&
                       residual.dim() > 0 && residual.numel() == rows * residual.size(-1);
  if (!chunked) return forward_rows(x, residual, reuse);
  auto x2 = x.view({rows, width}), r2 = residual.view({rows, residual.size(-1)});
  const int64_t chunks = (rows + limit - 1) / limit, step = (rows + chunks - 1) / chunks;
  for (int64_t first = 0; first < rows; first += step) {
    auto r = r2.narrow(0, first, std::min(step, rows - first));
    auto out = forward_rows(x2.narrow(0, first, r.size(0)), r, /*reuse=*/true);
    if (out.data_ptr() != r.data_ptr()) r.copy_(out);  // a path that did not sum in place
  }
  return residual;
}

torch::Tensor MLPImpl::forward_rows(const torch::Tensor& x, const torch::Tensor& residual, bool reuse) {
  torch::Tensor gate, up;
  auto p = torch::GradMode::is_enabled() ? PackedProjections() : packed_gate_up();
  if (p.defined() && p.weight.scalar_type() == x.scalar_type()) {
    auto parts = torch::linear(x, p.weight, p.bias).chunk(2, -1);
    gate = parts[0];
    up = parts[1];
  } else {
    gate = gate_proj(x);
    up = up_proj(x);
  }
  auto h = fused::silu_mul(gate, up);
  if (!h.defined()) h = torch::silu(gate) * up;
  return residual.defined() ? down_proj->forward_add(h, residual, reuse) : down_proj(h);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg) {
  self_attn = register_module("self_attn", Attention(cfg));
  mlp = register_module("mlp", MLP(cfg));
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  // The residual adds ride on o_proj's and down's GEMMs where they can (Linear::forward_add);
  // h is this block's own tensor, so the second sum may overwrite it.
  auto h = self_attn->forward(input_layernorm(x), ctx, /*residual=*/x);
  return mlp->forward(post_attention_layernorm(h), /*residual=*/h, /*reuse=*/true);
}

std::vector<std::pair<std::string, Linear>> DecoderLayerImpl::linears() {
  return {{"q_proj", self_attn->q_proj}, {"k_proj", self_attn->k_proj},
          {"v_proj", self_attn->v_proj}, {"o_proj", self_attn->o_proj},
          {"gate_proj", mlp->gate_proj}, {"up_proj", mlp->up_proj},
          {"down_proj", mlp->down_proj}};
}

}  // namespace gmsa
