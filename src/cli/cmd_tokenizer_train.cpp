// gmsa tokenizer train: a sentencepiece model trained on the user's own text, through
// sentencepiece's trainer API (train_sentencepiece, gmsa/text/spm_backend.h). Writes
// OUT/tokenizer.model, which `model.tokenizer` and `gmsa eval --tokenizer` accept.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <memory>

#include "command.h"
#include "gmsa/data/corpus.h"
#include "gmsa/text/spm_backend.h"
#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace {

namespace fs = std::filesystem;

struct TokenizerTrainArgs {
  std::vector<std::string> inputs;
  std::string out;
  int vocab_size = 1000;
  std::string model_type = "bpe";
  double character_coverage = 1.0;
  std::vector<std::string> extra;  // further spm_train flags, passed through
};

// The text of one JSONL line: the string fields a corpus or QA row carries ("text", "input",
// "prompt", "answer" as a string or a list), one per output line.
std::string jsonl_line_text(const std::string& line, const std::string& where) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) gmsa::fail("{}: not a JSON object", where);
  std::string out;
  auto add = [&](const nlohmann::json& v) {
    if (v.is_string()) out += v.get<std::string>() + "\n";
  };
  for (const char* key : {"text", "input", "prompt", "answer"}) {
    if (!j.contains(key)) continue;
    const auto& v = j.at(key);
    if (v.is_array())
      for (const auto& e : v) add(e);
    else
      add(v);
  }
  return out;
}

// Sentencepiece reads plain text, one sentence per line; JSONL inputs are flattened into a
// temporary file beside the output. Returns the files to train on.
std::vector<std::string> training_files(const std::vector<std::string>& inputs, const std::string& tmp) {
  std::vector<std::string> files;
  std::string flattened;
  for (const auto& path : inputs) {
    GMSA_CHECK(gmsa::file_exists(path), "--input {}: no such file", path);
    if (path.find_first_of(" \t,") != std::string::npos)
      gmsa::fail("--input {}: sentencepiece cannot take a path with spaces or commas", path);
    if (gmsa::resolve_corpus_format(path) != gmsa::CorpusFormat::Jsonl) {
      files.push_back(path);
      continue;
    }
    gmsa::LineReader reader(path);
    for (std::string line; reader.next(line);)
      if (line.find_first_not_of(" \t\r") != std::string::npos)
        flattened += jsonl_line_text(line, fmt::format("{}:{}", path, reader.line_number()));
  }
  if (!flattened.empty()) {
    gmsa::write_file_atomic(tmp, flattened);
    files.push_back(tmp);
  }
  return files;
}

void run(const TokenizerTrainArgs& a) {
  GMSA_CHECK(a.out.find_first_of(" \t") == std::string::npos, "--out {}: sentencepiece cannot take a path with spaces",
             a.out);
  fs::create_directories(a.out);
  const std::string tmp = gmsa::join_path(a.out, "jsonl_text.tmp");
  const auto files = training_files(a.inputs, tmp);
  // LLaMA's special ids (unk 0, bos 1, eos 2, no pad). hard_vocab_limit=false: a small corpus
  // may not yield vocab_size pieces, and then fewer is better than failing. One thread keeps
  // the result identical from run to run.
  std::string flags = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage={} "
      "--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --hard_vocab_limit=false --num_threads=1 "
      "--minloglevel=1",
      fmt::join(files, ","), gmsa::join_path(a.out, "tokenizer"), a.vocab_size, a.model_type,
      a.character_coverage);
  for (const auto& f : a.extra) flags += " " + f;
  try {
    gmsa::train_sentencepiece(flags);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::remove(tmp.c_str());
  std::remove(gmsa::join_path(a.out, "tokenizer.vocab").c_str());  // a listing; nothing reads it
  auto tok = gmsa::load_tokenizer(gmsa::join_path(a.out, "tokenizer.model"));
  spdlog::info("wrote {}/tokenizer.model: {} pieces ({}) from {} file(s)", a.out, tok->vocab_size(), a.model_type,
               a.inputs.size());
}

gmsa::cli::CommandRegistrar reg(45, [](CLI::App& app) {
  auto* group = app.add_subcommand("tokenizer", "Train a tokenizer");
  group->require_subcommand(1);
  auto* sub = group->add_subcommand("train", "Train a sentencepiece model on text or JSONL files");
  auto a = std::make_shared<TokenizerTrainArgs>();
  sub->add_option("--input", a->inputs,
                  "Text file (one sentence or paragraph per line) or JSONL (text / input / prompt / answer "
                  "fields); repeatable")
      ->required();
  sub->add_option("--out", a->out, "Output directory (gets tokenizer.model)")->required();
  sub->add_option("--vocab-size", a->vocab_size, "Pieces (an upper bound: small corpora may give fewer)")
      ->capture_default_str()
      ->check(CLI::Range(8, 1 << 20));
  sub->add_option("--model-type", a->model_type, "bpe | unigram | char | word")
      ->capture_default_str()
      ->check(CLI::IsMember({"bpe", "unigram", "char", "word"}));
  sub->add_option("--character-coverage", a->character_coverage, "Share of characters the vocabulary covers")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));
  sub->add_option("--spm-flag", a->extra, "A further spm_train flag, e.g. --spm-flag=--split_digits=true (repeatable)");
  sub->callback([a] { run(*a); });
});

}  // namespace
