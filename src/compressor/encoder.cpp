#include "gmsa/compressor/encoder.h"

#include <algorithm>

#include "gmsa/util/error.h"

namespace gmsa {

EncoderImpl::EncoderImpl(Decoder& decoder, const CompressorConfig& cfg) : decoder_(decoder) {
  const auto& mc = decoder->config();
  GMSA_CHECK(cfg.encoder_layers <= mc.num_hidden_layers,
             "encoder_layers ({}) exceeds the model's {} layers", cfg.encoder_layers, mc.num_hidden_layers);
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.encoder_layers; ++i) {
    // A fresh block whose parameters are then pointed at the decoder's tensors.
    DecoderLayer layer(mc);
    auto src = decoder->model->layer(i);
    auto mine = layer->linears();
    auto theirs = src->linears();
    for (size_t j = 0; j < mine.size(); ++j) mine[j].second->share_base_from(*theirs[j].second);
    layer->input_layernorm->weight = layer->input_layernorm->set_parameter(
        "weight", src->input_layernorm->weight, false);
    layer->post_attention_layernorm->weight = layer->post_attention_layernorm->set_parameter(
        "weight", src->post_attention_layernorm->weight, false);
    if (!src->self_attn->q_norm.is_empty()) {
      auto& a = *layer->self_attn;
      a.q_norm->weight = a.q_norm->set_parameter("weight", src->self_attn->q_norm->weight, false);
      a.k_norm->weight = a.k_norm->set_parameter("weight", src->self_attn->k_norm->weight, false);
    }
    if (cfg.lora.r > 0)
      for (auto& [name, lin] : mine)
        if (std::find(cfg.lora_targets.begin(), cfg.lora_targets.end(), name) != cfg.lora_targets.end())
          lin->add_lora(cfg.lora);
    list->push_back(layer);
    layers.push_back(layer);
  }
  norm = register_module("norm", RMSNorm(mc.hidden_size, mc.rms_norm_eps));
  norm->weight = norm->set_parameter("weight", decoder->model->norm->weight, false);
  embed_tokens = register_module("embed_tokens", Embedding(1, 1));
  embed_tokens->weight = embed_tokens->set_parameter("weight", decoder->model->embed_tokens->weight, false);
  // Move LoRA tensors (created fp32 on CPU) next to the base weights.
  to(decoder->model->embed_tokens->weight.device());
}

torch::Tensor EncoderImpl::embed(const torch::Tensor& ids) {
  return embed_tokens(ids).to(decoder_->compute_dtype());
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& embeds) {
  const int64_t B = embeds.size(0), T = embeds.size(1);
  auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(embeds.device()))
                 .unsqueeze(0).expand({B, T});
  Rope rope = rope_tables(decoder_->inv_freq, pos, embeds.scalar_type());
  auto x = embeds.to(decoder_->compute_dtype());
  AttentionContext ctx{&rope, {}, nullptr, 0, {}};
  for (auto& layer : layers) x = layer->forward(x, ctx);
  return norm(x);
}

void EncoderImpl::merge_lora() {
  for (auto& layer : layers) {
    for (auto& [name, lin] : layer->linears()) lin->merge_lora();
    layer->self_attn->pack_projections();
    layer->mlp->pack_projections();
  }
  merged_ = true;
}

int64_t EncoderImpl::untie_trained() {
  torch::NoGradGuard g;
  int64_t n = 0;
  auto private_copy = [&](ModuleBase& owner, torch::Tensor& member) {
    if (!member.requires_grad()) return;
    member = owner.set_parameter("weight", member.detach().clone(), false);
    ++n;
  };
  for (auto& layer : layers) {
    for (auto& [name, lin] : layer->linears())
      if (lin->weight.requires_grad() || (lin->bias.defined() && lin->bias.requires_grad())) {
        lin->untie_base();
        ++n;
      }
    private_copy(*layer->input_layernorm, layer->input_layernorm->weight);
    private_copy(*layer->post_attention_layernorm, layer->post_attention_layernorm->weight);
    if (!layer->self_attn->q_norm.is_empty()) {
      private_copy(*layer->self_attn->q_norm, layer->self_attn->q_norm->weight);
      private_copy(*layer->self_attn->k_norm, layer->self_attn->k_norm->weight);
    }
  }
  private_copy(*norm, norm->weight);
  private_copy(*embed_tokens, embed_tokens->weight);
  return n;
}

}  // namespace gmsa
