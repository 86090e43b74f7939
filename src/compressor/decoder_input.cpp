#include "gmsa/compressor/decoder_input.h"

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

namespace gmsa {

TextBatch TextBatch::to(torch::Device d) const {
  return {compat::to_device_async(ids, d), prompt_lengths, target_lengths};  // lengths stay on the host
}

PackedInput pack_decoder_input(Decoder& decoder, const SoftTokens& soft, const TextBatch& text) {
  const int64_t B = text.ids.size(0), P = text.ids.size(1);
  auto device = text.ids.device();
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  const bool has_soft = soft.embeds.defined();
  if (has_soft)
    GMSA_CHECK(soft.embeds.size(0) == B, "decoder input: {} soft rows for {} text rows",
               soft.embeds.size(0), B);
  // Sizes on the host (free for host lengths; a device tensor costs one copy), then one
  // host-to-device copy of the length vectors.
  auto m_host = has_soft ? soft.lengths.to(torch::kCPU, torch::kLong) : torch::zeros({B}, torch::kLong);
  auto p_host = text.prompt_lengths.to(torch::kCPU, torch::kLong);
  auto n_host = text.target_lengths.to(torch::kCPU, torch::kLong);
  GMSA_CHECK(m_host.numel() == B && p_host.numel() == B && n_host.numel() == B,
             "decoder input: {} rows but {} soft, {} prompt and {} target lengths", B, m_host.numel(),
             p_host.numel(), n_host.numel());
  auto lengths_host = m_host + p_host + n_host;
  const int64_t T = B == 0 ? 0 : lengths_host.max().item<int64_t>();
  auto lens = compat::to_device_async(torch::stack({m_host, p_host, n_host, lengths_host}), device);
  auto m = lens[0], p = lens[1], n = lens[2], lengths = lens[3];
  auto t = torch::arange(T, opts).unsqueeze(0);  // [1, T]
  auto rel = t - m.unsqueeze(1);                 // position inside the text part
  auto text_at = text.ids.gather(1, rel.clamp(0, std::max<int64_t>(P - 1, 0)));
  auto embeds = decoder->embed(text_at);
  if (has_soft) {
    const int64_t M = soft.embeds.size(1), H = soft.embeds.size(2);
    auto soft_at = soft.embeds.to(embeds.scalar_type())
                       .gather(1, t.clamp_max(M - 1).expand({B, T}).unsqueeze(-1).expand({B, T, H}));
    embeds = torch::where((t < m.unsqueeze(1)).unsqueeze(-1), soft_at, embeds);
  }
  auto pad = (t >= lengths.unsqueeze(1)).unsqueeze(-1);
  embeds = embeds.masked_fill(pad, 0);
  // Position t predicts position t + 1; only target positions carry a label.
  auto next = rel + 1;
  auto is_target = (next >= p.unsqueeze(1)).logical_and(next < (p + n).unsqueeze(1));
  auto next_tok = text.ids.gather(1, next.clamp(0, std::max<int64_t>(P - 1, 0)));
  auto labels = torch::where(is_target, next_tok, torch::full_like(next_tok, -100));
  return {embeds, labels, lengths_host};
}

LossSums target_loss(Decoder& decoder, const PackedInput& input) {
  DecoderInput in;
  in.inputs_embeds = input.embeds;
  auto logits = decoder->forward(in).logits;  // right padding: plain causal attention
  const int64_t V = logits.size(-1);
  auto nll = torch::nn::functional::cross_entropy(
      logits.view({-1, V}), input.labels.view({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  return {nll, input.labels.ne(-100).sum()};
}

}  // namespace gmsa
