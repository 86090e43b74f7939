// `gmsa data`: dataset tools. This file creates the `data` parent (registration order 50) and
// its `convert` child. Other `data` children live in their own files, register with an order
// greater than 50 (so the parent exists when they run) and fetch it with
// app.get_subcommand("data").
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "gmsa/data/convert.h"
#include "gmsa/util/error.h"

namespace {

struct ConvertArgs {
  std::string from;
  std::string in;
  std::string out;
  int64_t num_docs = 0;
  std::string gold_position;
  uint64_t seed = 0;
  std::string doc_template;
  std::string question_template = "{question}";
  int64_t limit = 0;
};

void run_convert(const ConvertArgs& a, bool doc_template_given) {
  gmsa::ConvertOptions opt;
  opt.num_docs = a.num_docs;
  if (!a.gold_position.empty()) opt.gold_position = gmsa::GoldPosition::parse(a.gold_position);
  opt.seed = a.seed;
  if (doc_template_given) opt.doc_template = a.doc_template;
  opt.question_template = a.question_template;
  opt.limit = a.limit;
  gmsa::ConvertResult r = gmsa::convert_dataset(gmsa::parse_source_format(a.from), a.in, opt);
  gmsa::write_qa_jsonl(a.out, r.examples);
  fmt::print("{}: read {} examples, wrote {} to {}, skipped {}\n", a.in, r.stats.read,
             r.stats.written, a.out, r.stats.total_skipped());
  for (const auto& [reason, count] : r.stats.skipped)
    fmt::print("  skipped {}: {}\n", count, reason);
}

void add_convert(CLI::App* data) {
  auto args = std::make_shared<ConvertArgs>();
  auto* cmd =
      data->add_subcommand("convert", "Convert a benchmark file to the GMSA QA schema (JSONL)");
  cmd->add_option(
         "--from", args->from,
         "Source format: " + fmt::format("{}", fmt::join(gmsa::source_format_names(), ", ")))
      ->required();
  cmd->add_option("input", args->in, "Source file (.gz read transparently)")->required();
  cmd->add_option("output", args->out, "Output QA JSONL file")->required();
  cmd->add_option(
      "--num-docs", args->num_docs,
      "Documents per example (0: all; nq-oracle: 10); non-gold ones are dropped from the end");
  cmd->add_option("--gold-position", args->gold_position,
                  "keep|first|middle|last|random|<0-based index> (default keep; nq-oracle random)");
  cmd->add_option("--seed", args->seed, "Seed for distractors and random gold positions");
  auto* tpl =
      cmd->add_option("--doc-template", args->doc_template,
                      "Per-document template with {index} {title} {text} (default \"" +
                          std::string(gmsa::kDefaultDocTemplate) + "\"; squad: raw context)");
  cmd->add_option("--question-template", args->question_template,
                  "Prompt template with {question} {id} (kv-retrieval also {key})")
      ->capture_default_str();
  cmd->add_option("--limit", args->limit, "Write at most N examples (0: all)");
  cmd->callback([args, tpl] { run_convert(*args, tpl->count() > 0); });
}

gmsa::cli::CommandRegistrar reg(50, [](CLI::App& app) {
  auto* data = gmsa::cli::subcommand_group(app, "data", "Dataset tools: convert benchmarks, generate the synthetic world");
  add_convert(data);
});

}  // namespace
