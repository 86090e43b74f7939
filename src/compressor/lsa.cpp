#include "gmsa/compressor/lsa.h"

#include "gmsa/util/error.h"

namespace gmsa {

// A trainable copy of a decoder block (the decoder's own stays frozen and untouched).
static DecoderLayer clone_layer(Decoder& decoder, int64_t i) {
  const auto& mc = decoder->config();
  DecoderLayer copy(mc);
  auto src = decoder->model->layer(i);
  auto dst_params = copy->named_parameters();
  torch::NoGradGuard g;
  for (auto& p : src->named_parameters()) dst_params[p.key()].copy_(p.value());
  return copy;
}

LSAImpl::LSAImpl(Decoder& decoder, const CompressorConfig& cfg)
    : type(cfg.lsa_type), model_cfg_(decoder->config()) {
  const auto device = decoder->model->embed_tokens->weight.device();
  const int64_t H = model_cfg_.hidden_size;
  if (type == "blocks" || type == "random_blocks") {
    GMSA_CHECK(cfg.lsa_layers <= model_cfg_.num_hidden_layers,
               "lsa layers ({}) exceeds the model's {} layers", cfg.lsa_layers, model_cfg_.num_hidden_layers);
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < cfg.lsa_layers; ++i) {
      if (type == "blocks") {
        blocks->push_back(clone_layer(decoder, i));
      } else {
        DecoderLayer fresh(model_cfg_);
        torch::NoGradGuard g;
        for (auto& p : fresh->named_parameters())
          if (p.key().find("norm") == std::string::npos) p.value().normal_(0.0, 0.02);
        blocks->push_back(fresh);
      }
    }
  } else if (type == "linear") {
    proj = register_module("proj", Linear(H, H, true));
    torch::NoGradGuard g;
    proj->weight.copy_(torch::eye(H));  // start as the identity: soft tokens pass unchanged
    proj->bias.zero_();
  }
  if (type != "none") {
    norm = register_module("norm", RMSNorm(H, model_cfg_.rms_norm_eps));
    torch::NoGradGuard g;
    norm->weight.copy_(decoder->model->norm->weight);
    norm->weight.set_requires_grad(false);
  }
  inv_freq_ = decoder->inv_freq;  // fp32, not a buffer (see DecoderImpl)
  to(device);
}

torch::Tensor LSAImpl::forward(const torch::Tensor& soft) {
  if (type == "none") return soft;
  torch::Tensor x = soft;
  if (type == "linear") {
    x = proj(x);
  } else {
    const int64_t B = x.size(0), M = x.size(1);
    auto pos = torch::arange(M, torch::TensorOptions().dtype(torch::kLong).device(x.device()))
                   .unsqueeze(0).expand({B, M});
    Rope rope = rope_tables(inv_freq_, pos, x.scalar_type());
    AttentionContext ctx{&rope, {}, nullptr, 0, {}};
    for (size_t i = 0; i < blocks->size(); ++i) x = blocks->ptr<DecoderLayerImpl>(i)->forward(x, ctx);
  }
  return norm(x);
}

}  // namespace gmsa
