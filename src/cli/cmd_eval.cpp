// gmsa eval: context restoration or QA for the original prompt, closed-book, GMSA and TCP
// (docs/evaluation.md).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "command.h"
#include "gmsa/eval/evaluate.h"

namespace {

struct EvalArgs {
  gmsa::EvalFiles files;
  gmsa::EvalOptions opts;
  std::string out;
};

void run(const EvalArgs& a) {
  const auto results = gmsa::run_eval(a.files, a.opts);
  gmsa::write_eval_outputs(a.out, results, a.opts);
  fmt::print("{}", gmsa::render_table(results));
  spdlog::info("wrote {}/predictions.jsonl, metrics.json, table.md", a.out);
}

gmsa::cli::CommandRegistrar reg(60, [](CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "Evaluate context restoration or QA (original, closed-book, GMSA, TCP)");
  auto a = std::make_shared<EvalArgs>();
  auto& o = a->opts;
  auto& f = a->files;
  sub->add_option("--task", o.task, "restore | qa")->required()->check(CLI::IsMember({"restore", "qa"}));
  sub->add_option("--model", f.model, "Base model: HF directory or llama2.c .bin")->required();
  sub->add_option("--tokenizer", f.tokenizer, "Tokenizer file or directory (default: the model's)");
  sub->add_option("--data", f.data,
                  "restore: text corpus or JSONL; qa: GMSA QA JSONL (repeatable: one table column group per file)")
      ->required();
  sub->add_option("--compressor", f.compressors,
                  "Trained compressor directory; its method (gmsa or tcp) is read from it (repeatable)");
  sub->add_option("--methods", o.methods,
                  "Comma list of original, closed-book, gmsa, tcp (default: original, closed-book and "
                  "each compressor's method)")
      ->delimiter(',');
  sub->add_option("--rates", o.rates, "Compression rates of gmsa / tcp (comma list)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--out", a->out, "Output directory")->required();
  sub->add_option("--max-samples", o.max_samples, "First N examples per data file (-1: all)")->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "Examples per generation batch")->capture_default_str();
  sub->add_option("--max-new-tokens", o.max_new_tokens, "Greedy decoding length")->capture_default_str();
  sub->add_option("--repetition-penalty", o.repetition_penalty, "On generated tokens (HF semantics)")
      ->capture_default_str();
  sub->add_option("--max-context-tokens", o.max_context_tokens, "Context tokens kept (head)")
      ->capture_default_str();
  sub->add_option("--question-template", o.question_template, "qa prompt; {question} = the example's prompt")
      ->capture_default_str();
  sub->add_option("--prompt-format", o.prompt_format, "Chat preset around the prompt (llama2-chat, llama3, chatml, ...)");
  sub->add_option("--device", f.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  sub->add_option("--dtype", f.dtype, "fp32 | bf16")->capture_default_str();
  sub->add_option("--seed", o.seed, "Random seed")->capture_default_str();
  sub->callback([a] { run(*a); });
});

}  // namespace
