#include "gmsa/eval/bench_infer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>

#include "gmsa/compressor/compressor.h"
#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/model/device_clock.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"

// The CUDA allocator's statistics exist only in CUDA builds of LibTorch (whose CMake package
// puts the CUDA headers on the include path).
#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && __has_include(<cuda_runtime_api.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define GMSA_HAVE_CUDA_ALLOCATOR_STATS 1
#endif

namespace gmsa {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void sync(torch::Device d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index() < 0 ? 0 : d.index());
}

void reset_peak_memory(torch::Device d) {
#ifdef GMSA_HAVE_CUDA_ALLOCATOR_STATS
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index() < 0 ? 0 : d.index());
#else
  (void)d;
#endif
}

// CUDA: the allocator's peak allocated bytes since the last reset. Elsewhere the process's
// maximum resident set size, which never goes down (so it covers every earlier case too).
int64_t peak_memory(torch::Device d) {
#ifdef GMSA_HAVE_CUDA_ALLOCATOR_STATS
  if (d.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(d.index() < 0 ? 0 : d.index())
        .allocated_bytes[0]  // StatType::AGGREGATE
        .peak;
#endif
  if (d.is_cuda()) return -1;  // a CUDA device without the allocator headers at build time
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

BenchSample median_sample(const std::vector<BenchSample>& s) {
  auto field = [&](double BenchSample::*f) {
    std::vector<double> v;
    for (const auto& x : s) v.push_back(x.*f);
    return median(v);
  };
  BenchSample m;
  m.compress_ms = field(&BenchSample::compress_ms);
  m.prefill_ms = field(&BenchSample::prefill_ms);
  m.decode_ms = field(&BenchSample::decode_ms);
  m.total_ms = field(&BenchSample::total_ms);
  m.generated = s.empty() ? 0 : s.front().generated;
  return m;
}

torch::ScalarType resolve_dtype(const std::string& name, torch::Device device) {
  if (name == "auto") return device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  if (name == "fp32" || name == "float32") return torch::kFloat;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  fail("unknown dtype \"{}\" (auto, fp32, bf16)", name);
}

// Random weights (std 0.02, norms left at 1) of the architecture's shape, on the device.
Decoder random_decoder(const ModelConfig& cfg, torch::Device device, torch::ScalarType dtype, uint64_t seed) {
  Decoder dec{nullptr};
  {
    InitOptionsGuard on_device(torch::TensorOptions().device(device).dtype(dtype));  // no host copy
    dec = Decoder(cfg);
  }
  dec->set_compute_dtype(dtype);
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : dec->named_parameters(true))
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0.0, 0.02);
  dec->pack_projections();  // as load_pretrained does
  return dec;
}

struct Bench {
  Decoder decoder;
  Compressor compressor;
  torch::Tensor context;       // [B, L] on the device
  torch::Tensor context_host;  // the same ids on the CPU, for the original prompt
  std::vector<int64_t> prompt;
  const BenchInferOptions& opts;
  torch::Device device;

  // One timed run of a case: compress (rate > 0), then generate exactly new_tokens.
  BenchSample once(int64_t rate, BenchCase& c) {
    torch::NoGradGuard no_grad;
    const int64_t B = context.size(0), L = context.size(1);
    const auto& mc = decoder->config();
    sync(device);
    const auto t0 = Clock::now();
    // Compression is timed on the device, and generation is queued behind it without waiting,
    // as a server would run them (a wait here left the device idle while the host set up the
    // prefill).
    DeviceClock clock(device);
    clock.mark();
    SoftTokens soft;
    BenchSample s;
    if (rate > 0) {
      // Sizes on the host (the compressor reads them there, no device round trip).
      soft = compressor->forward(context, torch::full({B}, L, torch::kLong), torch::full({B}, rate, torch::kLong));
      clock.mark();
    }
    std::vector<GenerationPrompt> prompts(B);
    for (int64_t b = 0; b < B; ++b) {
      auto& p = prompts[b];
      if (rate > 0) {
        p.prefix_embeds = soft.embeds[b].narrow(0, 0, soft.lengths[b].item<int64_t>());
      } else {
        if (mc.bos_token_id >= 0) p.ids.push_back(mc.bos_token_id);
        auto row = context_host[b];
        p.ids.insert(p.ids.end(), row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + L);
      }
      p.ids.insert(p.ids.end(), prompt.begin(), prompt.end());
    }
    c.decoder_tokens = (rate > 0 ? prompts[0].prefix_embeds.size(0) : 0) + prompts[0].ids.size();
    GenerationConfig gen;
    gen.max_new_tokens = opts.new_tokens;
    gen.repetition_penalty = 1.3;  // the evaluation's setting
    gen.eos_ids = {-1};            // never stop early: every run decodes new_tokens
    gen.cuda_graph = opts.cuda_graph;
    auto res = generate(decoder, prompts, gen);
    c.cuda_graph = res.cuda_graph;
    c.decode_kernels = res.decode_kernels;
    c.step_pick = res.step_pick;
    s.total_ms = ms_since(t0);
    if (rate > 0) s.compress_ms = clock.ms(0, 1);
    s.prefill_ms = res.prefill_ms;
    s.decode_ms = res.decode_ms;
    s.generated = res.tokens[0].size();
    return s;
  }

  BenchCase run_case(int64_t rate) {
    BenchCase c;
    c.rate = rate;
    c.name = rate > 0 ? fmt::format("{}@{}x", compressor->config().method, rate) : "original";
    reset_peak_memory(device);
    for (int64_t i = 0; i < opts.warmup; ++i) once(rate, c);
    for (int64_t i = 0; i < opts.repeats; ++i) c.samples.push_back(once(rate, c));
    c.peak_bytes = peak_memory(device);
    c.median = median_sample(c.samples);
    c.tokens_per_s = opts.batch * opts.new_tokens / (c.median.total_ms / 1000.0);
    c.answers_per_s = opts.batch / (c.median.total_ms / 1000.0);
    spdlog::info("bench {}: end-to-end {:.1f} ms (compress {:.1f}, prefill {:.1f}, decode {:.1f})",
                 c.name, c.median.total_ms, c.median.compress_ms, c.median.prefill_ms, c.median.decode_ms);
    return c;
  }
};

void validate(const BenchInferOptions& o) {
  GMSA_CHECK(o.model.empty() != o.arch.empty(), "bench infer: give exactly one of --model and --arch");
  GMSA_CHECK(o.context_tokens >= 1, "bench infer: --context-tokens must be >= 1");
  GMSA_CHECK(o.prompt_tokens >= 0, "bench infer: --prompt-tokens must be >= 0");
  GMSA_CHECK(o.new_tokens >= 1, "bench infer: --new-tokens must be >= 1");
  GMSA_CHECK(o.batch >= 1, "bench infer: --batch must be >= 1");
  GMSA_CHECK(o.repeats >= 1, "bench infer: --repeats must be >= 1");
  GMSA_CHECK(o.warmup >= 0, "bench infer: --warmup must be >= 0");
  for (int64_t r : o.rates) GMSA_CHECK(r >= 1, "bench infer: rates must be >= 1, got {}", r);
}

nlohmann::json sample_json(const BenchSample& s) {
  return {{"compress_ms", s.compress_ms}, {"prefill_ms", s.prefill_ms}, {"decode_ms", s.decode_ms},
          {"total_ms", s.total_ms}, {"generated", s.generated}};
}

}  // namespace

ModelConfig arch_config(const std::string& name) {
  ModelConfig c;
  c.rms_norm_eps = 1e-5;
  if (name == "llama2-7b") {  // meta-llama/Llama-2-7b-hf
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008;
    c.num_hidden_layers = 32, c.num_attention_heads = 32, c.num_key_value_heads = 32;
    c.max_position_embeddings = 4096, c.rope_theta = 10000;
    c.bos_token_id = 1, c.eos_token_ids = {2};
  } else if (name == "llama3-8b") {  // meta-llama/Meta-Llama-3-8B
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336;
    c.num_hidden_layers = 32, c.num_attention_heads = 32, c.num_key_value_heads = 8;
    c.max_position_embeddings = 8192, c.rope_theta = 500000;
    c.bos_token_id = 128000, c.eos_token_ids = {128001};
  } else if (name == "qwen2-7b") {  // Qwen/Qwen2-7B
    c.model_type = "qwen2";
    c.vocab_size = 152064, c.hidden_size = 3584, c.intermediate_size = 18944;
    c.num_hidden_layers = 28, c.num_attention_heads = 28, c.num_key_value_heads = 4;
    c.max_position_embeddings = 131072, c.rope_theta = 1000000, c.rms_norm_eps = 1e-6;
    c.bos_token_id = -1, c.eos_token_ids = {151643};  // Qwen prepends no BOS
  } else if (name == "tiny") {  // for tests: 8 layers so the default 8-layer encoder fits
    c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 128;
    c.num_hidden_layers = 8, c.num_attention_heads = 4, c.num_key_value_heads = 2;
    c.max_position_embeddings = 8192, c.rope_theta = 10000;
    c.bos_token_id = 1, c.eos_token_ids = {2};
  } else {
    fail("unknown architecture \"{}\" (llama2-7b, llama3-8b, qwen2-7b, tiny)", name);
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.validate("--arch " + name);
  return c;
}

BenchInferReport run_bench_infer(const BenchInferOptions& opts) {
  validate(opts);
  fused::set_enabled(opts.fused_kernels);
  decode_ops::set_enabled(opts.decode_kernels);
  if (!opts.gemv.empty()) decode_ops::set_projection(decode_ops::parse_projection(opts.gemv));
  // Switched off only: the environment's GMSA_DECODE_PDL / _NORM_FUSION / _STEP_PICK stand otherwise.
  if (!opts.pdl) decode_ops::set_programmatic_launch(false);
  if (!opts.norm_fusion) decode_ops::set_norm_fusion(false);
  if (!opts.step_pick) decode_ops::set_step_pick(false);
  // (warm_bytes() reads GMSA_DECODE_WARM_MIB: a bad value fails here, before any timing.)
  if (opts.warm_mib >= 0) decode_ops::set_warm_bytes(opts.warm_mib << 20);
  else decode_ops::warm_bytes();
  const auto device = parse_device(opts.device);
  const auto dtype = resolve_dtype(opts.dtype, device);
  Decoder decoder{nullptr};
  if (!opts.model.empty()) {
    LoadOptions load;
    load.device = device;
    load.dtype = dtype;
    decoder = load_pretrained(opts.model, load).decoder;
  } else {
    decoder = random_decoder(arch_config(opts.arch), device, dtype, opts.seed);
  }
  decoder->eval();
  for (auto& p : decoder->parameters()) p.set_requires_grad(false);
  const auto& mc = decoder->config();
  GMSA_CHECK(opts.context_tokens + opts.prompt_tokens + opts.new_tokens + 1 <= mc.max_position_embeddings,
             "bench infer: {} context + {} prompt + {} new tokens exceed the model's {} positions",
             opts.context_tokens, opts.prompt_tokens, opts.new_tokens, mc.max_position_embeddings);

  CompressorConfig random_cfg;  // the paper's defaults, capped for models under 8 layers
  random_cfg.encoder_layers = std::min(random_cfg.encoder_layers, mc.num_hidden_layers);
  Compressor compressor{nullptr};
  {
    InitOptionsGuard on_device(torch::TensorOptions().device(device).dtype(dtype));
    compressor = opts.compressor.empty() ? Compressor(decoder, random_cfg) : load_compressor(opts.compressor, decoder);
  }
  compressor->eval();
  for (auto& p : compressor->parameters()) p.set_requires_grad(false);
  if (opts.merge_lora) compressor->encoder->merge_lora();

  // Random ids above the usual special tokens (0..2); values do not affect latency.
  torch::manual_seed(opts.seed);
  const int64_t low = std::min<int64_t>(3, mc.vocab_size - 1);
  auto context = torch::randint(low, mc.vocab_size, {opts.batch, opts.context_tokens}, torch::kLong).to(device);
  auto prompt_t = torch::randint(low, mc.vocab_size, {opts.prompt_tokens}, torch::kLong);
  std::vector<int64_t> prompt(prompt_t.data_ptr<int64_t>(), prompt_t.data_ptr<int64_t>() + opts.prompt_tokens);

  Bench bench{decoder, compressor, context, context.to(torch::kCPU), prompt, opts, device};
  BenchInferReport report;
  GMSA_CHECK(!opts.skip_original || !opts.rates.empty(), "bench infer: --skip-original leaves no case to time");
  if (!opts.skip_original) report.cases.push_back(bench.run_case(0));
  for (int64_t r : opts.rates) report.cases.push_back(bench.run_case(r));

  report.setup = {
      {"device", device.str()},
      {"torch", compat::torch_version_string()},
      {"threads", torch::get_num_threads()},
      {"model", opts.model.empty() ? "random " + opts.arch : opts.model},
      {"model_config", mc.to_json()},
      {"compressor", opts.compressor.empty() ? "random" : opts.compressor},
      {"compressor_config", compressor->config().to_json()},
      {"dtype", dtype == torch::kBFloat16 ? "bf16" : "fp32"},
      {"fused_kernels", fused::enabled()},
      {"decode_kernels", decode_ops::enabled()},
      {"gemv", decode_ops::projection_name(decode_ops::projection())},
      {"tma_projection", decode_ops::tma_projection()},
      {"programmatic_launch", decode_ops::programmatic_launch()},
      {"norm_fusion", decode_ops::norm_fusion()},
      {"step_pick", decode_ops::step_pick()},
      {"warm_bytes", decode_ops::warm_bytes()},
      {"l2_warming", device.is_cuda() && decode_ops::enabled() && decode_ops::warms_l2(opts.batch)},
      {"merge_lora", opts.merge_lora},
      {"batch", opts.batch},
      {"context_tokens", opts.context_tokens},
      {"prompt_tokens", opts.prompt_tokens},
      {"new_tokens", opts.new_tokens},
      {"repeats", opts.repeats},
      {"warmup", opts.warmup},
      {"timing", "total_ms: host wall clock from an idle device to the last token; compress_ms, prefill_ms "
                 "(from the compression's end to the first token) and decode_ms: the device's clock, the stages "
                 "queued one behind the other without waits"},
      {"peak_memory", device.is_cuda() ? "CUDA allocator peak allocated bytes per case"
                                       : "process max RSS (cumulative over cases)"}};
  return report;
}

nlohmann::json BenchInferReport::to_json() const {
  auto cases_json = nlohmann::json::array();
  for (const auto& c : cases) {
    auto samples = nlohmann::json::array();
    for (const auto& s : c.samples) samples.push_back(sample_json(s));
    cases_json.push_back({{"name", c.name}, {"rate", c.rate}, {"decoder_tokens", c.decoder_tokens},
                          {"median", sample_json(c.median)}, {"tokens_per_s", c.tokens_per_s},
                          {"answers_per_s", c.answers_per_s}, {"cuda_graph", c.cuda_graph},
                          {"decode_kernels", c.decode_kernels}, {"step_pick", c.step_pick},
                          {"peak_bytes", c.peak_bytes}, {"samples", samples}});
  }
  return {{"setup", setup}, {"cases", cases_json}};
}

std::string BenchInferReport::table() const {
  std::string out =
      "| Case | Decoder input | Compress ms | Prefill ms | TTFT ms | Decode ms/token | End-to-end ms | Speedup | "
      "Answers/s | New tok/s | Peak MiB |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  // Speedup over the original prompt, when it was timed.
  const double base = !cases.empty() && cases.front().rate == 0 ? cases.front().median.total_ms : 0;
  for (const auto& c : cases) {
    const auto& m = c.median;
    const double per_token = m.generated > 1 ? m.decode_ms / (m.generated - 1) : 0;
    out += fmt::format("| {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.2f} | {:.1f} | {} | {:.2f} | {:.1f} | {} |\n",
                       c.name, c.decoder_tokens, m.compress_ms, m.prefill_ms, m.compress_ms + m.prefill_ms,
                       per_token, m.total_ms, base > 0 ? fmt::format("{:.2f}x", base / m.total_ms) : "-",
                       c.answers_per_s, c.tokens_per_s,
                       c.peak_bytes < 0 ? std::string("-") : fmt::format("{:.0f}", c.peak_bytes / 1048576.0));
  }
  return out;
}

}  // namespace gmsa
