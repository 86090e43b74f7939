// `gmsa compress --compressor DIR [--model PATH] --context FILE --rate R --out FILE`: the
// context's soft tokens, as the decoder would receive them, written to a safetensors file
// ("soft_tokens" [m, H] fp32, metadata: rate, context_tokens, soft_tokens, compressor, model).
// Also home of the steps `gmsa generate --compressor` shares (declared there).
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "command.h"
#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa::cli {

void check_rate(int64_t rate) {
  GMSA_CHECK(rate >= 1, "--rate {}: the compression rate must be an integer >= 1", rate);
}

std::string compressor_model_path(const std::string& model, const std::string& compressor_dir) {
  if (!model.empty()) return model;
  std::string base = compressor_base_model(compressor_dir);
  GMSA_CHECK(!base.empty(), "{}: the compressor records no base model path; give --model", compressor_dir);
  return base;
}

torch::Tensor compress_context(Decoder& decoder, const Tokenizer& tokenizer,
                               const std::string& compressor_dir, const std::string& context_file,
                               int64_t rate, int64_t* context_tokens) {
  check_rate(rate);
  auto ids = tokenizer.encode(read_file(context_file), /*add_bos=*/false, /*add_eos=*/false);
  GMSA_CHECK(!ids.empty(), "{}: the context is empty (no tokens)", context_file);
  auto compressor = load_compressor(compressor_dir, decoder);
  const auto device = decoder->model->embed_tokens->weight.device();
  compressor->to(device);  // the parameters of its own (LoRA, ...) are created on the CPU
  compressor->eval();
  torch::NoGradGuard no_grad;
  const int64_t L = static_cast<int64_t>(ids.size());
  auto id_tensor = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).view({1, L}).to(device);
  auto soft = compressor->forward(id_tensor, torch::tensor({L}), torch::tensor({rate}));
  if (context_tokens) *context_tokens = L;
  return soft.embeds[0].narrow(0, 0, soft.lengths[0].item<int64_t>());
}

}  // namespace gmsa::cli

namespace {

struct CompressArgs {
  std::string compressor, model, tokenizer, context, out, device = "auto";
  int64_t rate = 0;
};

void run_compress(const CompressArgs& a) {
  gmsa::cli::check_rate(a.rate);
  const std::string model = gmsa::cli::compressor_model_path(a.model, a.compressor);
  gmsa::LoadOptions opts;
  opts.device = gmsa::parse_device(a.device);
  opts.tokenizer = a.tokenizer;
  opts.require_tokenizer = true;
  auto pm = gmsa::load_pretrained(model, opts);
  int64_t context_tokens = 0;
  auto soft = gmsa::cli::compress_context(pm.decoder, *pm.tokenizer, a.compressor, a.context, a.rate, &context_tokens);
  gmsa::save_safetensors(a.out, {{"soft_tokens", soft.to(torch::kCPU, torch::kFloat)}},
                         {{"rate", std::to_string(a.rate)},
                          {"context_tokens", std::to_string(context_tokens)},
                          {"soft_tokens", std::to_string(soft.size(0))},
                          {"compressor", a.compressor},
                          {"model", model}});
  std::cerr << fmt::format("{}: {} tokens -> {} soft tokens (rate {}) written to {}\n", a.context,
                           context_tokens, soft.size(0), a.rate, a.out);
}

}  // namespace

static gmsa::cli::CommandRegistrar reg(30, [](CLI::App& app) {
  auto a = std::make_shared<CompressArgs>();
  auto* cmd = app.add_subcommand("compress", "Compress a context file into soft tokens (safetensors)");
  cmd->add_option("--compressor", a->compressor, "Trained compressor directory (or compressor.safetensors)")->required();
  cmd->add_option("--model", a->model, "Base model (default: the path the compressor records)");
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer file (default: the model directory's)");
  cmd->add_option("--context", a->context, "Text file to compress")->required();
  cmd->add_option("--rate", a->rate, "Compression rate: tokens per soft token (integer >= 1)")->required();
  cmd->add_option("--out", a->out, "Output .safetensors with \"soft_tokens\" [m, H] fp32")->required();
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N");
  cmd->callback([a] { run_compress(*a); });
});
