#include "gmsa/model/generation.h"

#include <chrono>

#include "gmsa/model/decode_ops.h"
#include "gmsa/model/decode_step.h"
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
  bool padded = false;   // prompts of different lengths
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
  const bool padded = std::any_of(lens.begin(), lens.end(), [&](int64_t n) { return n != T; });
  return {embeds, mask.to(device), padded};
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

// EOS is checked on the host every this many steps: each check waits for the device, which
// would otherwise run ahead of the host through the queued steps.
constexpr int64_t kEosCheckEvery = 4;

// Each row's new tokens up to (excluding) its first EOS.
std::vector<std::vector<int64_t>> cut_at_eos(const torch::Tensor& out, int64_t steps,
                                             const std::vector<int64_t>& eos) {
  auto host = out.narrow(1, 0, steps).to(torch::kCPU).contiguous();
  auto acc = host.accessor<int64_t, 2>();
  std::vector<std::vector<int64_t>> rows(host.size(0));
  for (int64_t b = 0; b < host.size(0); ++b)
    for (int64_t t = 0; t < steps; ++t) {
      if (std::find(eos.begin(), eos.end(), acc[b][t]) != eos.end()) break;
      rows[b].push_back(acc[b][t]);
    }
  return rows;
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
  const int64_t B = prompts.size(), N = cfg.max_new_tokens;
  GenerationResult res;
  res.tokens.assign(B, {});
  if (N == 0) {
    if (was_training) dec->train();
    return res;
  }

  auto t0 = std::chrono::steady_clock::now();
  auto batch = pad_left(dec, prompts);
  const int64_t T = batch.embeds.size(1);
  // Columns rounded up to a multiple of 16, the key alignment of the fused attention kernels
  // (they would pad the mask on every step otherwise); the extra columns stay masked.
  const int64_t capacity = (T + N + 15) / 16 * 16;
  auto cache = KVCache::allocate(mc, B, capacity, batch.embeds.options());

  torch::Tensor seen;
  if (cfg.repetition_penalty != 1.0) {
    seen = torch::zeros({B, mc.vocab_size}, torch::TensorOptions().dtype(torch::kBool).device(device));
    if (cfg.penalize_prompt)
      for (int64_t b = 0; b < B; ++b)
        if (!prompts[b].ids.empty())
          seen[b].index_fill_(0, torch::tensor(prompts[b].ids, torch::kLong).to(device), true);
  }
  at::Generator gen = at::detail::createCPUGenerator(cfg.seed);
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto eos_t = torch::tensor(eos, torch::kLong).to(device);
  auto out = torch::empty({B, N}, longs);  // new tokens, EOS and what follows included
  auto finished = torch::zeros({B}, longs.dtype(torch::kBool));
  auto pick = [&](torch::Tensor logits, int64_t step) {
    if (!cfg.do_sample) {  // one kernel where it applies (decode_ops::greedy_pick)
      auto column = out.select(1, step);
      auto next = decode_ops::greedy_pick(logits, seen, cfg.repetition_penalty, eos_t, column, finished);
      if (next.defined()) return next;
    }
    if (seen.defined()) logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty);
    auto next = cfg.do_sample ? sample(logits, cfg, gen).to(device) : logits.argmax(-1);
    if (seen.defined()) seen.scatter_(1, next.unsqueeze(1), true);
    out.select(1, step).copy_(next);
    finished.logical_or_(torch::isin(next, eos_t));
    return next;
  };
  auto all_finished = [&] { return finished.all().item<bool>(); };

  // Prefill. Without padding the plain causal mask applies, which lets the flash kernel run.
  auto positions = positions_from_mask(batch.mask);
  DecoderInput in;
  in.inputs_embeds = batch.embeds;
  in.position_ids = positions;
  if (batch.padded) in.attention_mask = batch.mask;
  in.cache = &cache;
  in.compute_logits = false;
  auto hidden = dec->forward(in).last_hidden;
  auto next = pick(dec->logits(hidden.select(1, T - 1)), 0);
  int64_t produced = 1;
  const bool stop = all_finished();  // also waits for the device: prefill time is honest
  res.prefill_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();

  if (!stop && N > 1) {
    res.cuda_graph = cfg.cuda_graph && device.is_cuda();
    DecodeStep step(dec, cache, batch.mask, positions.select(1, T - 1) + 1, res.cuda_graph);
    res.decode_kernels = step.uses_decode_kernels();
    for (; produced < N; ++produced) {
      next = pick(step.run(next), produced);
      if ((produced + 1) % kEosCheckEvery == 0 && all_finished()) {
        ++produced;
        break;
      }
    }
    sync(device);
    res.steps = produced - 1;
    res.decode_ms = ms_since(t0);
  }
  res.tokens = cut_at_eos(out, produced, eos);
  if (was_training) dec->train();
  return res;
}

}  // namespace gmsa
