// gmsa bench train: autoencoder and KEFT step timings (docs/performance.md).
#include <iostream>

#include "command.h"
#include "gmsa/bench/bench_train.h"
#include "gmsa/util/io.h"

namespace {


gmsa::cli::CommandRegistrar reg(71, [](CLI::App& app) {
  auto o = std::make_shared<gmsa::BenchTrainOptions>();
  auto json_out = std::make_shared<std::string>();
  auto* sub = gmsa::cli::subcommand_group(app, "bench", "Benchmarks")->add_subcommand("train", "Time autoencoder and KEFT training steps");
  sub->add_option("--arch", o->arch, "Model shape (random weights): llama2-7b, llama3-8b, qwen2-7b, tiny");
  sub->add_option("--stages", o->stages, "Stages to time")->delimiter(',');
  sub->add_option("--contexts", o->contexts, "Context lengths")->delimiter(',');
  sub->add_option("--batches", o->batches, "Batch size per context")->delimiter(',');
  sub->add_option("--rates", o->rates, "Compression rates, assigned to samples in turn")->delimiter(',');
  sub->add_option("--encoder-layers", o->encoder_layers, "Encoder layers");
  sub->add_option("--lora-r", o->lora_r, "LoRA rank");
  sub->add_option("--steps", o->steps, "Timed steps");
  sub->add_option("--warmup", o->warmup, "Untimed warm-up steps");
  sub->add_option("--device", o->device, "auto, cpu, cuda");
  sub->add_option("--dtype", o->dtype, "bf16 or fp32 compute (trained parameters stay fp32)");
  sub->add_flag("--activation-checkpointing", o->activation_checkpointing, "Recompute decoder layers in backward");
  sub->add_option("--peak-flops", o->peak_flops, "MFU denominator (default: H100 SXM dense bf16, 989e12)");
  sub->add_option("--json", *json_out, "Also write the report as JSON");
  sub->callback([o, json_out] {
    auto report = gmsa::run_bench_train(*o);
    std::cout << report.table();
    std::cout << report.to_json().dump() << "\n";
    if (!json_out->empty()) gmsa::write_file_atomic(*json_out, report.to_json().dump(2) + "\n");
  });
});

}  // namespace
