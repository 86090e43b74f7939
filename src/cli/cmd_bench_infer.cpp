// gmsa bench infer: inference latency of the original prompt vs compressed ones
// (docs/evaluation.md). This file may create the `bench` parent (order 70); other `bench`
// children (e.g. `bench train`) attach to it the same way.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "command.h"
#include "gmsa/eval/bench_infer.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/util/io.h"

namespace {

struct BenchArgs {
  gmsa::BenchInferOptions opts;
  std::string json;
};

void run(const BenchArgs& a) {
  const auto report = gmsa::run_bench_infer(a.opts);
  const auto& s = report.setup;
  fmt::print("{}, LibTorch {}, {} ({}), batch {}, context {} + prompt {} tokens, {} new tokens, "
             "medians of {} runs after {} warm-up\n\n{}",
             s["device"].get<std::string>(), s["torch"].get<std::string>(), s["model"].get<std::string>(),
             s["dtype"].get<std::string>(), a.opts.batch, a.opts.context_tokens, a.opts.prompt_tokens,
             a.opts.new_tokens, a.opts.repeats, a.opts.warmup, report.table());
  if (!a.json.empty()) {
    gmsa::write_file_atomic(a.json, report.to_json().dump(2) + "\n");
    spdlog::info("wrote {}", a.json);
  }
}


gmsa::cli::CommandRegistrar reg(70, [](CLI::App& app) {
  auto* sub = gmsa::cli::subcommand_group(app, "bench", "Benchmarks")->add_subcommand(
      "infer", "Latency of compression, prefill and decoding: original prompt vs each rate");
  auto a = std::make_shared<BenchArgs>();
  auto& o = a->opts;
  auto* model = sub->add_option("--model", o.model, "HF directory or llama2.c .bin");
  auto* arch = sub->add_option("--arch", o.arch, "Random weights of a shape: llama2-7b | llama3-8b | qwen2-7b | tiny");
  model->excludes(arch);
  arch->excludes(model);
  sub->add_option("--compressor", o.compressor, "Compressor directory (default: a random GMSA compressor)");
  sub->add_option("--context-tokens", o.context_tokens, "Context length (random ids)")->capture_default_str();
  sub->add_option("--prompt-tokens", o.prompt_tokens, "Question tokens after the context")->capture_default_str();
  sub->add_option("--new-tokens", o.new_tokens, "Tokens decoded per run (no EOS stop)")->capture_default_str();
  sub->add_option("--batch", o.batch, "Rows per run")->capture_default_str();
  sub->add_option("--rates", o.rates, "Compression rates (comma list)")->delimiter(',')->capture_default_str();
  sub->add_option("--repeats", o.repeats, "Timed runs per case (medians reported)")->capture_default_str();
  sub->add_option("--warmup", o.warmup, "Untimed runs per case first")->capture_default_str();
  sub->add_option("--device", o.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  sub->add_option("--dtype", o.dtype, "auto (bf16 on CUDA, else fp32) | fp32 | bf16")->capture_default_str();
  sub->add_option("--seed", o.seed, "Seed of the random weights and ids")->capture_default_str();
  sub->add_flag("!--no-cuda-graph", o.cuda_graph, "Decode eagerly instead of replaying a CUDA graph");
  sub->add_flag("--skip-original", o.skip_original, "Time only the compressed cases");
  sub->add_flag("!--no-fused-kernels", o.fused_kernels, "Run the plain LibTorch ops instead of the fused CUDA kernels");
  sub->add_flag("!--no-decode-kernels", o.decode_kernels,
                "Decode through the layers' forward instead of the decoding kernels (split-KV attention, ...)");
  sub->add_flag("!--no-merge-lora", o.merge_lora,
                "Compress with the LoRA adapters as trained instead of merged into private encoder weights");
  sub->add_option("--gemv", o.gemv,
                  "Kernels of the decoding step's projections: auto (ours where they win), cublas, tc (our "
                  "tensor-core skinny GEMM for 1-16 rows); default: GMSA_DECODE_GEMV or auto")
      ->check(CLI::IsMember({"auto", "cublas", "tc"}));
  sub->add_flag("!--no-pdl", o.pdl, "Launch the decoding kernels without programmatic dependent launch");
  sub->add_flag("!--no-norm-fusion", o.norm_fusion,
                "At 9-16 rows, launch each residual add + RMSNorm on its own instead of inside the projections "
                "around it (also GMSA_DECODE_NORM_FUSION=0)");
  sub->add_flag("!--no-step-pick", o.step_pick,
                "Pick each greedy token after the decoding step (its logits converted to fp32, one more launch "
                "and a copy per token) instead of inside it (also GMSA_DECODE_STEP_PICK=0)");
  sub->add_option("--warm-mib", o.warm_mib,
                  "MiB of the next projection's weights each decoding kernel fetches into L2 when done (0: off); "
                  "not at 9-16 rows, where the TMA-fed projections fetch their own first weights "
                  "(decode_ops::warms_l2); default: GMSA_DECODE_WARM_MIB or 8")
      ->check(CLI::Range(int64_t{0}, gmsa::decode_ops::kMaxWarmMiB));
  sub->add_option("--json", a->json, "Write the full report (every sample) here");
  sub->callback([a] { run(*a); });
});

}  // namespace
