#include "gmsa/model/generation.h"

#include <chrono>

#include "gmsa/util/error.h"

namespace gmsa {
namespace {

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index() < 0 ? 0 : d.index());
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Left-padded batch: prompts end at the same column so that decoding appends in lockstep.
struct PaddedBatch {
  torch::Tensor embeds;  // [B, T, H]
  torch::Tensor mask;    // [B, T] int64
};

PaddedBatch pad_left(Decoder& dec, const std::vector<GenerationPrompt>& prompts) {
  const int64_t B = prompts.size(), H = dec->config().hidden_size;
  auto device = dec->model->embed_tokens->weight.device();
  std::vector<int64_t> lens(B);
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    if (p.prefix_embeds.defined())
      GMSA_CHECK(p.prefix_embeds.dim() == 2 && p.prefix_embeds.size(1) == H,
                 "generate: prompt {} prefix must be [m, {}]", b, H);
    lens[b] = (p.prefix_embeds.defined() ? p.prefix_embeds.size(0) : 0) + p.ids.size();
    GMSA_CHECK(lens[b] > 0, "generate: prompt {} is empty", b);
    T = std::max(T, lens[b]);
  }
  auto embeds = torch::zeros({B, T, H}, torch::TensorOptions().dtype(dec->compute_dtype()).device(device));
  auto mask = torch::zeros({B, T}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    int64_t col = T - lens[b];
    mask[b].narrow(0, col, lens[b]).fill_(1);
    if (p.prefix_embeds.defined()) {
      const int64_t m = p.prefix_embeds.size(0);
      embeds[b].narrow(0, col, m).copy_(p.prefix_embeds);
      col += m;
    }
    if (!p.ids.empty()) {
      auto ids = torch::tensor(p.ids, torch::kLong).to(device);
      embeds[b].narrow(0, col, ids.size(0)).copy_(dec->embed(ids));
    }
  }
  return {embeds, mask.to(device)};
}

torch::Tensor apply_repetition_penalty(const torch::Tensor& logits, const torch::Tensor& seen, double p) {
  auto penalised = torch::where(logits < 0, logits * p, logits / p);
  return torch::where(seen, penalised, logits);
}

// Sampling runs on the CPU with its own generator: reproducible for a seed on any device.
torch::Tensor sample(torch::Tensor logits, const GenerationConfig& cfg, at::Generator& gen) {
  logits = logits.to(torch::kCPU, torch::kFloat) / cfg.temperature;
  const int64_t V = logits.size(-1);
  if (cfg.top_k > 0 && cfg.top_k < V) {
    auto kth = std::get<0>(logits.topk(cfg.top_k, -1)).narrow(-1, cfg.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  if (cfg.top_p < 1.0) {
    // Keep the smallest set of top tokens whose probability reaches top_p (at least one).
    auto sorted = logits.sort(-1, /*descending=*/false);
    auto cum = torch::softmax(std::get<0>(sorted), -1).cumsum(-1);
    auto drop_sorted = cum <= (1.0 - cfg.top_p);
    drop_sorted.narrow(-1, V - 1, 1).fill_(false);
    auto drop = torch::zeros_like(drop_sorted).scatter(-1, std::get<1>(sorted), drop_sorted);
    logits = logits.masked_fill(drop, -std::numeric_limits<float>::infinity());
  }
  return torch::multinomial(torch::softmax(logits, -1), 1, false, gen).squeeze(-1);
}

}  // namespace

GenerationResult generate(Decoder& dec, const std::vector<GenerationPrompt>& prompts,
                          const GenerationConfig& cfg) {
  GMSA_CHECK(!prompts.empty(), "generate: no prompts");
  GMSA_CHECK(cfg.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");
  GMSA_CHECK(!cfg.do_sample || cfg.temperature > 0, "generate: temperature must be positive");
  torch::NoGradGuard no_grad;
  const bool was_training = dec->is_training();
  dec->eval();
  const auto& mc = dec->config();
  const auto eos = cfg.eos_ids.empty() ? mc.eos_token_ids : cfg.eos_ids;
  auto device = dec->model->embed_tokens->weight.device();
  const int64_t B = prompts.size();

  auto t0 = std::chrono::steady_clock::now();
  auto batch = pad_left(dec, prompts);
  const int64_t T = batch.embeds.size(1);
  auto cache = KVCache::allocate(mc, B, T + std::max<int64_t>(cfg.max_new_tokens, 1),
                                 batch.embeds.options());
  auto full_mask = torch::cat({batch.mask, torch::ones({B, cfg.max_new_tokens}, batch.mask.options())}, 1);

  torch::Tensor seen;
  if (cfg.repetition_penalty != 1.0) {
    seen = torch::zeros({B, mc.vocab_size}, torch::TensorOptions().dtype(torch::kBool).device(device));
    if (cfg.penalize_prompt)
      for (int64_t b = 0; b < B; ++b)
        if (!prompts[b].ids.empty())
          seen[b].index_fill_(0, torch::tensor(prompts[b].ids, torch::kLong).to(device), true);
  }
  at::Generator gen = at::detail::createCPUGenerator(cfg.seed);

  GenerationResult res;
  res.tokens.assign(B, {});
  std::vector<bool> done(B, false);
  auto positions = positions_from_mask(batch.mask);
  DecoderInput in;
  in.inputs_embeds = batch.embeds;
  in.position_ids = positions;
  in.attention_mask = batch.mask;
  in.cache = &cache;
  in.compute_logits = false;
  auto next_pos = positions.select(1, T - 1).unsqueeze(1) + 1;
  for (int64_t step = 0; step < cfg.max_new_tokens; ++step) {
    auto hidden = dec->forward(in).last_hidden;
    auto logits = dec->logits(hidden.select(1, hidden.size(1) - 1));
    if (seen.defined()) logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty);
    auto next = cfg.do_sample ? sample(logits, cfg, gen).to(device) : logits.argmax(-1);
    if (seen.defined()) seen.scatter_(1, next.unsqueeze(1), true);
    auto host = next.to(torch::kCPU);
    auto acc = host.accessor<int64_t, 1>();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      if (std::find(eos.begin(), eos.end(), acc[b]) != eos.end()) done[b] = true;
      else res.tokens[b].push_back(acc[b]);
      all_done = all_done && done[b];
    }
    if (step == 0) {
      sync(device);
      res.prefill_ms = ms_since(t0);
      t0 = std::chrono::steady_clock::now();
    } else {
      ++res.steps;
    }
    if (all_done) break;
    in.inputs_embeds = dec->embed(next.unsqueeze(1));
    in.position_ids = next_pos;
    next_pos = next_pos + 1;
    in.attention_mask = full_mask.narrow(1, 0, cache.length + 1);
  }
  sync(device);
  if (res.steps > 0 || cfg.max_new_tokens > 0) res.decode_ms = cfg.max_new_tokens > 0 ? ms_since(t0) : 0;
  if (was_training) dec->train();
  return res;
}

}  // namespace gmsa
