#include "gmsa/bench/bench_train.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/eval/bench_infer.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/train/batching.h"
#include "gmsa/train/flops.h"
#include "gmsa/train/optimizer.h"
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"

namespace gmsa {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

void sync(torch::Device d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

std::vector<int> random_ids(int64_t n, int64_t vocab, std::mt19937_64& rng) {
  std::vector<int> ids(static_cast<size_t>(n));
  for (auto& x : ids) x = static_cast<int>(3 + rng() % static_cast<uint64_t>(vocab - 3));
  return ids;
}

}  // namespace

nlohmann::json BenchTrainReport::to_json() const {
  nlohmann::json cs = nlohmann::json::array();
  for (const auto& c : cases)
    cs.push_back({{"stage", c.stage}, {"context", c.context}, {"batch", c.batch}, {"ms", c.ms},
                  {"median_ms", c.median_ms}, {"context_tokens_per_s", c.tokens_per_s}, {"mfu", c.mfu},
                  {"flops_per_step", c.flops_per_step}, {"peak_memory_gb", c.peak_memory_gb}});
  return {{"environment", environment}, {"cases", cs}};
}

std::string BenchTrainReport::table() const {
  std::string t = "| stage | context | batch | ms/step (median) | context tok/s | TFLOP/step | MFU | peak GB |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& c : cases)
    t += fmt::format("| {} | {} | {} | {:.1f} | {:.0f} | {:.2f} | {:.1f}% | {:.1f} |\n", c.stage, c.context, c.batch,
                     c.median_ms, c.tokens_per_s, c.flops_per_step / 1e12, 100 * c.mfu, c.peak_memory_gb);
  return t;
}

BenchTrainReport run_bench_train(const BenchTrainOptions& o) {
  GMSA_CHECK(o.contexts.size() == o.batches.size(), "bench train: give one batch size per context");
  GMSA_CHECK(o.steps > 0 && o.warmup >= 0, "bench train: steps must be > 0");
  const auto device = parse_device(o.device);
  const auto dtype = o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  auto mc = arch_config(o.arch);
  BenchTrainReport report;
  report.environment = {{"arch", o.arch},     {"device", device.str()},  {"dtype", o.dtype},
                        {"torch", compat::torch_version_string()}, {"encoder_layers", o.encoder_layers},
                        {"lora_r", o.lora_r}, {"lsa_layers", o.lsa_layers}, {"rates", o.rates},
                        {"activation_checkpointing", o.activation_checkpointing},
                        {"peak_flops", o.peak_flops}, {"steps", o.steps}, {"warmup", o.warmup},
                        {"fused_kernels", fused::enabled()}};
  for (const auto& stage_name : o.stages) {
    // A fresh model per stage: KEFT unties the encoder's q/k/v from the decoder.
    torch::manual_seed(o.seed);
    Decoder decoder{nullptr};
    {
      InitOptionsGuard on_device(torch::TensorOptions().device(device).dtype(dtype));
      decoder = Decoder(mc);
    }
    decoder->set_compute_dtype(dtype);
    {
      torch::NoGradGuard g;
      for (auto& p : decoder->parameters()) {
        p.normal_(0.0, 0.02);
        p.set_requires_grad(false);
      }
    }
    CompressorConfig cc;
    cc.encoder_layers = o.encoder_layers;
    cc.lora.r = o.lora_r;
    cc.lsa_layers = o.lsa_layers;
    Compressor comp{nullptr};
    {
      InitOptionsGuard on_device(torch::TensorOptions().device(device).dtype(dtype));
      comp = Compressor(decoder, cc);
    }
    GmsaModel model(decoder, comp);
    RunConfig rc;
    rc.stage.type = stage_name;
    auto stage = make_stage(rc);
    auto trainable = stage->select_trainable(model);
    std::vector<torch::Tensor> params;
    for (auto& [n, t] : trainable) {
      if (t.scalar_type() != torch::kFloat) t.set_data(t.detach().to(torch::kFloat));  // fp32 master
      params.push_back(t);
    }
    model.decoder->train();
    model.decoder->set_activation_checkpointing(o.activation_checkpointing);
    model.compressor->train();
    AdamW optim(trainable, AdamWOptions{});
    FlopCounter fc(mc, &model.compressor->config(), stage_name);
    for (size_t ci = 0; ci < o.contexts.size(); ++ci) {
      const int64_t L = o.contexts[ci], B = o.batches[ci];
      std::mt19937_64 rng(o.seed + ci);
      std::vector<Sample> samples(static_cast<size_t>(B));
      std::vector<int64_t> rates;
      double flops = 0;
      for (int64_t b = 0; b < B; ++b) {
        auto& s = samples[static_cast<size_t>(b)];
        s.context = random_ids(L, mc.vocab_size, rng);
        if (stage_name == "ae") {
          s.prompt = random_ids(o.prompt_tokens, mc.vocab_size, rng);
          s.target = s.context;
          s.target.push_back(2);
        } else {
          s.prompt = random_ids(o.question_tokens, mc.vocab_size, rng);
          s.target = random_ids(o.answer_tokens, mc.vocab_size, rng);
        }
        rates.push_back(o.rates[static_cast<size_t>(b) % o.rates.size()]);
        flops += fc.sample(L, rates.back(), static_cast<int64_t>(s.prompt.size()), static_cast<int64_t>(s.target.size()));
      }
      std::vector<const Sample*> ptrs;
      for (auto& s : samples) ptrs.push_back(&s);
      const double target_tokens = static_cast<double>(count_target_tokens(ptrs));
      auto host = collate(ptrs, rates, device.is_cuda());
      BenchTrainCase c;
      c.stage = stage_name;
      c.context = L;
      c.batch = B;
      c.flops_per_step = flops;
      compat::reset_cuda_peak_memory(device);
      for (int64_t step = 0; step < o.warmup + o.steps; ++step) {
        sync(device);
        auto t0 = std::chrono::steady_clock::now();
        optim.zero_grad();
        auto batch = host.to(device);
        auto sums = model.loss(batch);
        (sums.nll_sum / target_tokens).backward();
        clip_grad_norm(params, 2.0);
        optim.step(1e-5);
        sync(device);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (step >= o.warmup) c.ms.push_back(ms);
      }
      c.median_ms = median(c.ms);
      c.tokens_per_s = static_cast<double>(B * L) / (c.median_ms / 1000.0);
      c.mfu = device.is_cuda() ? flops / (c.median_ms / 1000.0) / o.peak_flops : 0.0;
      c.peak_memory_gb = (device.is_cuda() ? compat::cuda_peak_memory(device) : compat::cpu_peak_rss()) / 1e9;
      report.cases.push_back(c);
    }
  }
  return report;
}

}  // namespace gmsa
