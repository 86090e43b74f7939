#include "gmsa/model/generation.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "gmsa/model/compat.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/model/decode_step.h"
#include "gmsa/model/device_clock.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace {

// Left-padded batch: prompts end at the same column so that decoding appends in lockstep.
struct PaddedBatch {
  torch::Tensor embeds;  // [B, T, H]
  torch::Tensor mask;    // [B, T] int64
  bool padded = false;   // prompts of different lengths
};

PaddedBatch pad_left(Decoder& dec, const std::vector<GenerationPrompt>& prompts) {
  const int64_t B = prompts.size(), H = dec->config().hidden_size, V = dec->config().vocab_size;
  auto device = dec->model->embed_tokens->weight.device();
  std::vector<int64_t> lens(B);
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    if (p.prefix_embeds.defined())
      GMSA_CHECK(p.prefix_embeds.dim() == 2 && p.prefix_embeds.size(1) == H,
                 "generate: prompt {} prefix must be [m, {}]", b, H);
    for (int64_t id : p.ids)
      GMSA_CHECK(id >= 0 && id < V, "generate: prompt {} has token id {} outside the vocabulary [0, {})", b, id, V);
    lens[b] = (p.prefix_embeds.defined() ? p.prefix_embeds.size(0) : 0) + p.ids.size();
    GMSA_CHECK(lens[b] > 0, "generate: prompt {} is empty", b);
    T = std::max(T, lens[b]);
  }
  const bool padded = std::any_of(lens.begin(), lens.end(), [&](int64_t n) { return n != T; });
  // Every row's ids in place (0 in its padding and prefix columns), embedded in one lookup: one
  // copy to the device for the batch, where a copy and a lookup per row left the device idle
  // while the host issued them (2.8 ms for 16 prompts of 3,030 tokens). The prefixes then
  // overwrite their columns; the padding columns hold token 0's embedding, masked. The ids and
  // the mask are written by plain loops into pinned memory: LibTorch's own fills run a batch of
  // this size on its CPU thread pool, which took 0.5-13 ms of host time per batch of 16 x 3,030
  // ids on the GPU machine (0.1-0.2 ms as loops).
  const auto host = torch::TensorOptions().dtype(torch::kLong).pinned_memory(device.is_cuda());
  auto ids = torch::empty({B, T}, host), mask = torch::empty({B, T}, host);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t n = p.ids.size();
    int64_t* id = ids.data_ptr<int64_t>() + b * T;
    int64_t* real = mask.data_ptr<int64_t>() + b * T;
    std::fill(id, id + T - n, 0);
    std::copy(p.ids.begin(), p.ids.end(), id + T - n);
    std::fill(real, real + T - lens[b], 0);
    std::fill(real + T - lens[b], real + T, 1);
  }
  auto ids_dev = compat::to_device_async(ids, device);
  auto embeds = dec->embed(ids_dev);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    if (p.prefix_embeds.defined()) embeds[b].narrow(0, T - lens[b], p.prefix_embeds.size(0)).copy_(p.prefix_embeds);
  }
  return {embeds, compat::to_device_async(mask, device), padded};
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

// The host looks at whether every row has finished every this many steps (FinishedFlag).
constexpr int64_t kEosCheckEvery = 4;

// Whether every row has finished, as the host learns it without draining the device's queue:
// post() queues the reduction and its copy into pinned host memory behind the steps already
// queued; read() waits only for that copy, by when the host has queued kEosCheckEvery further
// steps, so the device never idles at a check (a synchronous check left it idle while the host
// launched the next step). Generation may then stop up to kEosCheckEvery steps later than a
// synchronous check would; those tokens follow every row's EOS and are cut (cut_at_eos).
class FinishedFlag {
 public:
  explicit FinishedFlag(const torch::Device& device)
      : marks_(device),
        host_(torch::empty({}, torch::TensorOptions().dtype(torch::kBool).pinned_memory(device.is_cuda()))) {}
  void post(const torch::Tensor& finished) {
    host_.copy_(finished.all(), /*non_blocking=*/true);
    mark_ = marks_.mark();
    pending_ = true;
  }
  bool pending() const { return pending_; }
  bool read() {
    marks_.wait(mark_);
    pending_ = false;
    return *host_.data_ptr<bool>();
  }

 private:
  DeviceClock marks_;  // only its marks: the copy is done once the device has passed one
  torch::Tensor host_;  // bool, pinned on a CUDA device
  size_t mark_ = 0;
  bool pending_ = false;
};

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

  DeviceClock clock(device);
  clock.mark();  // 0: start
  auto batch = pad_left(dec, prompts);
  const int64_t T = batch.embeds.size(1);
  // Columns rounded up to a multiple of 16, the key alignment of the fused attention kernels
  // (they would pad the mask on every step otherwise); the extra columns stay masked.
  const int64_t capacity = (T + N + 15) / 16 * 16;
  auto cache = KVCache::allocate(mc, B, capacity, batch.embeds.options(), -1, /*written=*/T);

  torch::Tensor seen;
  if (cfg.repetition_penalty != 1.0) {
    seen = torch::zeros({B, mc.vocab_size}, torch::TensorOptions().dtype(torch::kBool).device(device));
    if (cfg.penalize_prompt) {  // one scatter for the batch: flat index b * V + id
      int64_t n = 0;
      for (const auto& p : prompts) n += p.ids.size();
      auto flat = torch::empty({n}, torch::TensorOptions().dtype(torch::kLong).pinned_memory(device.is_cuda()));
      int64_t* at = flat.data_ptr<int64_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t id : prompts[b].ids) *at++ = b * mc.vocab_size + id;
      if (n > 0) seen.view(-1).index_fill_(0, compat::to_device_async(flat, device), true);
    }
  }
  at::Generator gen = at::detail::createCPUGenerator(cfg.seed);
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto eos_t = compat::to_device_async(torch::tensor(eos, torch::kLong), device);
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
  clock.mark();  // 1: the first token
  FinishedFlag flag(device);
  flag.post(finished);
  int64_t produced = 1;
  if (N > 1) {
    // Built, and its first step queued (and recorded as a graph), while the device runs the
    // prefill: nothing here waits for it.
    res.cuda_graph = cfg.cuda_graph && device.is_cuda();
    DecodeStep step(dec, cache, batch.mask, positions.select(1, T - 1) + 1, res.cuda_graph);
    res.decode_kernels = step.uses_decode_kernels();
    // Greedy: the step picks and feeds itself where it can, so that the host only replays it.
    res.step_pick = !cfg.do_sample && step.pick_greedily({seen, cfg.repetition_penalty, eos_t, out, finished});
    for (; produced < N; ++produced) {
      if (res.step_pick)
        step.run(produced == 1 ? next : torch::Tensor());
      else
        next = pick(step.run(next), produced);
      // The prefill's flag right after the first step (a batch that ended at its first token
      // wastes one step), then every kEosCheckEvery steps the flag posted at the previous check.
      if (produced > 1 && (produced + 1) % kEosCheckEvery != 0) continue;
      if (flag.pending() && flag.read()) {
        ++produced;
        break;
      }
      flag.post(finished);
    }
  }
  clock.mark();  // 2: the end
  res.steps = produced - 1;
  res.prefill_ms = clock.ms(0, 1);
  res.decode_ms = clock.ms(1, 2);
  res.tokens = cut_at_eos(out, produced, eos);
  if (was_training) dec->train();
  return res;
}

}  // namespace gmsa
