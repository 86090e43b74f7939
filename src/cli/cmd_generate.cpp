// `gmsa generate --model PATH --prompt TEXT [...]`: text generation from a Hugging Face model
// directory or a llama2.c .bin. Prints the prompt and its continuation (as llama2.c's `run`
// does) and the generation speed on stderr. With --compressor, the --context file is
// compressed into soft tokens that precede the prompt ([soft tokens][prompt], no BOS, as
// GMSA's decoder sees them in training), and only the answer is printed.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "command.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"

namespace gmsa::cli {
// Defined in cmd_compress.cpp.
void check_rate(int64_t rate);
std::string compressor_model_path(const std::string& model, const std::string& compressor_dir);
torch::Tensor compress_context(Decoder& decoder, const Tokenizer& tokenizer,
                               const std::string& compressor_dir, const std::string& context_file,
                               int64_t rate, int64_t* context_tokens);
}  // namespace gmsa::cli

namespace {

struct GenerateArgs {
  std::string model, tokenizer, prompt, device = "auto", dtype = "fp32";
  int64_t max_new_tokens = 100;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  double repetition_penalty = 1.0;
  bool no_bos = false;
  std::string compressor, context;
  int64_t rate = 0;
};

gmsa::GenerationConfig generation_config(const GenerateArgs& a) {
  GMSA_CHECK(a.temperature >= 0, "--temperature {}: must be >= 0 (0 = greedy)", a.temperature);
  GMSA_CHECK(a.top_p > 0 && a.top_p <= 1, "--top-p {}: must lie in (0, 1]", a.top_p);
  GMSA_CHECK(a.top_k >= 0, "--top-k {}: must be >= 0 (0 = off)", a.top_k);
  GMSA_CHECK(a.repetition_penalty > 0, "--repetition-penalty {}: must be positive", a.repetition_penalty);
  GMSA_CHECK(a.max_new_tokens >= 0, "--max-new-tokens {}: must be >= 0", a.max_new_tokens);
  gmsa::GenerationConfig g;
  g.max_new_tokens = a.max_new_tokens;
  g.do_sample = a.temperature > 0;
  if (g.do_sample) g.temperature = a.temperature;
  g.top_k = a.top_k;
  g.top_p = a.top_p;
  g.seed = a.seed;
  g.repetition_penalty = a.repetition_penalty;
  return g;
}

// Generation speed from the timings generate() measures (prefill includes the first token).
void report_speed(const gmsa::GenerationResult& r, size_t new_tokens) {
  const double total_ms = r.prefill_ms + r.decode_ms;
  const double overall = total_ms > 0 ? 1000.0 * new_tokens / total_ms : 0.0;
  const double decode = r.decode_ms > 0 ? 1000.0 * r.steps / r.decode_ms : 0.0;
  std::cerr << fmt::format("{} tokens in {:.1f} ms: {:.1f} tokens/s (prefill {:.1f} ms, decode {:.1f} tokens/s)\n",
                           new_tokens, total_ms, overall, r.prefill_ms, decode);
}

void run_generate(const GenerateArgs& a) {
  const bool compressed = !a.compressor.empty();
  GMSA_CHECK(compressed || !a.model.empty(), "--model is required (or --compressor, whose base model is used)");
  GMSA_CHECK(compressed == !a.context.empty(), "--compressor and --context go together");
  if (compressed) gmsa::cli::check_rate(a.rate);
  else GMSA_CHECK(a.rate == 0, "--rate needs --compressor and --context");
  auto cfg = generation_config(a);

  gmsa::LoadOptions opts;
  opts.device = gmsa::parse_device(a.device);
  opts.dtype = a.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  opts.tokenizer = a.tokenizer;
  opts.require_tokenizer = true;
  const std::string model = compressed ? gmsa::cli::compressor_model_path(a.model, a.compressor) : a.model;
  auto pm = gmsa::load_pretrained(model, opts);
  const auto& tok = *pm.tokenizer;

  gmsa::GenerationPrompt prompt;
  std::vector<int> prompt_ids;
  if (compressed) {
    prompt.prefix_embeds = gmsa::cli::compress_context(pm.decoder, tok, a.compressor, a.context, a.rate, nullptr);
    prompt_ids = tok.encode(a.prompt, /*add_bos=*/false, false);
  } else {
    prompt_ids = tok.encode(a.prompt, /*add_bos=*/!a.no_bos, false);
    GMSA_CHECK(!prompt_ids.empty(), "--prompt: empty prompt and no BOS: nothing to continue");
  }
  prompt.ids.assign(prompt_ids.begin(), prompt_ids.end());

  auto res = gmsa::generate(pm.decoder, {prompt}, cfg);
  const auto& new_tokens = res.tokens[0];
  // Decoding prompt and continuation together keeps sentencepiece's spacing at the seam.
  std::vector<int> shown = compressed ? std::vector<int>() : prompt_ids;
  shown.insert(shown.end(), new_tokens.begin(), new_tokens.end());
  std::cout << tok.decode(shown) << std::endl;
  report_speed(res, new_tokens.size());
}

}  // namespace

static gmsa::cli::CommandRegistrar reg(10, [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (optionally after a compressed context)");
  cmd->add_option("--model", a->model, "Hugging Face model directory or llama2.c .bin");
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer file (required for a llama2.c .bin)");
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate at most (default 100)");
  cmd->add_option("--temperature", a->temperature, "Sampling temperature; 0 = greedy (default)");
  cmd->add_option("--top-k", a->top_k, "Sample from the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling threshold (1 = off)");
  cmd->add_option("--seed", a->seed, "Sampling seed");
  cmd->add_option("--repetition-penalty", a->repetition_penalty, "HF-style repetition penalty (1 = off)");
  cmd->add_flag("--no-bos", a->no_bos, "Do not start the prompt with BOS");
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N");
  cmd->add_option("--dtype", a->dtype, "fp32 | bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--compressor", a->compressor, "Trained compressor directory: compress --context first");
  cmd->add_option("--context", a->context, "Context text file to compress (with --compressor)");
  cmd->add_option("--rate", a->rate, "Compression rate (integer >= 1, with --compressor)");
  cmd->callback([a] { run_generate(*a); });
});
