// gmsa data synth: writes the quickstart's synthetic knowledge world (docs/synthetic-data.md).
#include <spdlog/spdlog.h>

#include <memory>

#include "command.h"
#include "gmsa/data/synth.h"

namespace {

struct SynthOptions {
  std::string out;
  gmsa::data::SynthConfig config;
  std::string train_gold = "random";
  std::string eval_gold = "random";
};

size_t count_words(const std::string& text) {
  size_t words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = c == ' ';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

void run_synth(SynthOptions opt) {
  opt.config.train_gold = gmsa::data::GoldPlacement::parse(opt.train_gold);
  opt.config.eval_gold = gmsa::data::GoldPlacement::parse(opt.eval_gold);
  const auto world = gmsa::data::generate_synth_world(opt.config);
  gmsa::data::write_synth_dataset(world, opt.out);
  size_t corpus_words = 0;
  for (const auto& e : world.entities)
    if (!e.heldout) corpus_words += count_words(e.document);
  spdlog::info("wrote {}: {} + {} held-out entities, corpus {} words, {} train / {} eval questions",
               opt.out, opt.config.entities, opt.config.heldout_entities, corpus_words,
               world.train.size(), world.eval.size());
}


gmsa::cli::CommandRegistrar reg(51, [](CLI::App& app) {
  auto* sub = gmsa::cli::subcommand_group(app, "data", "Dataset tools: convert benchmarks, generate the synthetic world")->add_subcommand(
      "synth", "Generate the seeded synthetic knowledge world (corpus + multi-document QA)");
  auto opt = std::make_shared<SynthOptions>();
  auto& c = opt->config;
  sub->add_option("--out", opt->out, "Output directory")->required();
  sub->add_option("--seed", c.seed, "Random seed (same seed -> identical files)")
      ->capture_default_str();
  sub->add_option("--entities", c.entities, "People in corpus.txt and qa_train")
      ->capture_default_str();
  sub->add_option("--heldout-entities", c.heldout_entities,
                  "People only in corpus_eval.txt and qa_eval")
      ->capture_default_str();
  sub->add_option("--docs-per-context", c.docs_per_context,
                  "Documents per question context (gold + distractors)")
      ->capture_default_str();
  sub->add_option("--gold-position", opt->eval_gold,
                  "Gold document in eval contexts: first|middle|last|random|INDEX (0-based)")
      ->capture_default_str();
  sub->add_option("--train-gold-position", opt->train_gold,
                  "Gold document in training contexts, same choices")
      ->capture_default_str();
  sub->add_option("--train-questions", c.train_questions, "Questions in qa_train.jsonl")
      ->capture_default_str();
  sub->add_option("--eval-questions", c.eval_questions, "Questions in qa_eval.jsonl")
      ->capture_default_str();
  sub->callback([opt] { run_synth(*opt); });
});

}  // namespace
