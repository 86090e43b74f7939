#include "gmsa/train/flops.h"

#include <algorithm>

namespace gmsa {

FlopCounter::FlopCounter(const ModelConfig& model, const CompressorConfig* compressor, std::string stage)
    : m_(model), has_comp_(compressor != nullptr), c_(compressor ? *compressor : CompressorConfig{}),
      stage_(std::move(stage)) {}

static double layer_linear_params(const ModelConfig& m) {
  const double H = m.hidden_size;
  return H * m.q_dim() + 2 * H * m.kv_dim() + m.q_dim() * H + 3 * H * m.intermediate_size;
}

double FlopCounter::blocks_forward(int64_t layers, int64_t tokens) const {
  const double T = static_cast<double>(tokens);
  return layers * (2.0 * layer_linear_params(m_) * T + 4.0 * T * T * m_.q_dim());
}

double FlopCounter::head_forward(int64_t tokens) const {
  return 2.0 * m_.hidden_size * static_cast<double>(m_.vocab_size) * tokens;
}

double FlopCounter::lora_forward(int64_t layers, int64_t tokens) const {
  if (c_.lora.r <= 0) return 0;
  const double H = m_.hidden_size, I = m_.intermediate_size, r = c_.lora.r;
  double per_token = 0;
  for (const auto& t : c_.lora_targets) {
    double in = H, out = H;
    if (t == "q_proj" || t == "o_proj") out = m_.q_dim(), in = (t == "o_proj" ? m_.q_dim() : H);
    if (t == "k_proj" || t == "v_proj") out = m_.kv_dim();
    if (t == "gate_proj" || t == "up_proj") out = I;
    if (t == "down_proj") in = I;
    if (t == "o_proj") out = H;
    per_token += 2.0 * r * (in + out);
  }
  return layers * per_token * tokens;
}

double FlopCounter::sample(int64_t context, int64_t rate, int64_t prompt, int64_t target) const {
  const int64_t soft = has_comp_ && context > 0 ? (context + rate - 1) / std::max<int64_t>(rate, 1) : 0;
  const int64_t dec_tokens = soft + prompt + target;
  const int64_t L = m_.num_hidden_layers;
  const double dec_fwd = blocks_forward(L, dec_tokens) + head_forward(dec_tokens);
  if (stage_ == "lm") return 3.0 * dec_fwd;  // every weight trains
  // Encoder (and the TCP memory tokens) and LSA.
  const int64_t enc_tokens = context + (c_.method == "tcp" ? soft : 0);
  const double enc_fwd = context > 0 ? blocks_forward(c_.encoder_layers, enc_tokens) + lora_forward(c_.encoder_layers, enc_tokens) : 0;
  const double lsa_fwd = (c_.method == "gmsa" && (c_.lsa_type == "blocks" || c_.lsa_type == "random_blocks"))
                             ? blocks_forward(c_.lsa_layers, soft)
                             : 0;
  if (stage_ == "ae") {
    // Decoder frozen: forward + input gradients. Encoder: input gradients through frozen base
    // weights, plus LoRA weight gradients. LSA trains fully.
    const double enc_bwd = enc_fwd + lora_forward(c_.encoder_layers, enc_tokens);
    return 2.0 * dec_fwd + enc_fwd + enc_bwd + 3.0 * lsa_fwd;
  }
  // keft / ft: compressor forward only; decoder forward + input gradients + weight gradients
  // of the trained matrices (q/k/v for keft, all for ft).
  double trained_weight_grads = 0;
  if (stage_ == "keft") {
    const double H = m_.hidden_size;
    trained_weight_grads = L * 2.0 * (H * m_.q_dim() + 2 * H * m_.kv_dim()) * dec_tokens;
  } else {
    trained_weight_grads = dec_fwd - L * 4.0 * double(dec_tokens) * dec_tokens * m_.q_dim();
  }
  return enc_fwd + lsa_fwd + 2.0 * dec_fwd + trained_weight_grads;
}

}  // namespace gmsa
