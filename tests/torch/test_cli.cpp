// The gmsa executable end to end: generate, convert, compress and logits run as a user runs
// them, bad inputs give a non-zero exit and one error line naming the culprit.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/io.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::TempDir;
namespace fs = std::filesystem;

namespace {

struct Run {
  int rc = -1;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `gmsa ARGS` (each argument quoted) with stdout and stderr captured.
Run gmsa_cli(const std::vector<std::string>& args) {
  const std::string bin = gmsa::testing::binary_dir() + "/gmsa";
  if (!file_exists(bin)) throw std::runtime_error(bin + " is missing: build the gmsa_cli target");
  TempDir tmp;
  std::string cmd = quote(bin);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote(tmp / "out") + " 2>" + quote(tmp / "err");
  Run r;
  const int status = std::system(cmd.c_str());
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(tmp / "out");
  r.err = read_file(tmp / "err");
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// A failed run: non-zero exit and exactly one line of output, the error, holding `needle`.
// (Both streams are read: spdlog's default logger, which main() reports errors through,
// writes to stdout.)
void expect_one_error_line(const Run& r, const std::string& needle) {
  EXPECT_NE(r.rc, 0);
  auto all = lines(r.out + r.err);
  ASSERT_EQ(all.size(), 1u) << "stdout: " << r.out << "\nstderr: " << r.err;
  EXPECT_NE(all[0].find("error"), std::string::npos) << all[0];
  EXPECT_NE(all[0].find(needle), std::string::npos) << "'" << needle << "' not in: " << all[0];
}

// A tiny random llama model directory (no tokenizer).
Decoder write_tiny_model(const std::string& dir) {
  Decoder d(gmsa::testing::tiny_config("llama"));
  gmsa::testing::randomize(*d, 11);
  d->eval();
  save_pretrained(dir, d);
  return d;
}

const std::string kPublished =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball.";

std::string stories_file(const std::string& name) {
  return gmsa::testing::data_dir() + "/llama2c-stories260k/" + name;
}

}  // namespace

// ---- bad inputs ----

TEST(CliErrors, MissingModelPath) {
  TempDir dir;
  auto r = gmsa_cli({"generate", "--model", dir / "nope", "--prompt", "hi"});
  expect_one_error_line(r, dir / "nope");
}

TEST(CliErrors, TruncatedSafetensors) {
  TempDir dir;
  write_tiny_model(dir / "m");
  fs::resize_file(dir / "m/model.safetensors", fs::file_size(dir / "m/model.safetensors") / 2);
  expect_one_error_line(gmsa_cli({"generate", "--model", dir / "m", "--prompt", "hi"}), dir / "m/model.safetensors");
  write_file_atomic(dir / "batch.json", R"({"input_ids": [[5, 6]]})");
  expect_one_error_line(gmsa_cli({"logits", "--model", dir / "m", "--input", dir / "batch.json", "--out", dir / "o.safetensors"}),
                        dir / "m/model.safetensors");
  EXPECT_FALSE(file_exists(dir / "o.safetensors"));
}

TEST(CliErrors, UnknownArchitecture) {
  TempDir dir;
  write_tiny_model(dir / "m");
  auto j = nlohmann::json::parse(read_file(dir / "m/config.json"));
  j["model_type"] = "gpt2";
  write_file_atomic(dir / "m/config.json", j.dump());
  expect_one_error_line(gmsa_cli({"generate", "--model", dir / "m", "--prompt", "hi"}), dir / "m/config.json");
}

TEST(CliErrors, RateZero) {
  TempDir dir;
  write_file_atomic(dir / "ctx.txt", "some context");
  expect_one_error_line(gmsa_cli({"compress", "--compressor", dir / "c", "--context", dir / "ctx.txt", "--rate", "0",
                                  "--out", dir / "soft.safetensors"}),
                        "--rate 0");
  expect_one_error_line(gmsa_cli({"generate", "--compressor", dir / "c", "--context", dir / "ctx.txt", "--rate", "0",
                                  "--prompt", "q"}),
                        "--rate 0");
}

TEST(CliErrors, BadBatchFile) {
  TempDir dir;
  write_tiny_model(dir / "m");
  write_file_atomic(dir / "batch.json", R"({"input_ids": [[5, 6], [7]]})");
  expect_one_error_line(gmsa_cli({"logits", "--model", dir / "m", "--input", dir / "batch.json", "--out", dir / "o"}),
                        dir / "batch.json");
}

// ---- gmsa logits: the parity tool must agree with the library ----

TEST(CliLogits, LeftPaddedBatchMatchesUnpaddedRowsAndGenerate) {
  TempDir dir;
  auto d = write_tiny_model(dir / "m");
  const std::vector<std::vector<int64_t>> rows = {{5, 9, 11, 40, 41, 42}, {7, 8, 9}};
  write_file_atomic(dir / "batch.json", R"({"input_ids": [[5, 9, 11, 40, 41, 42], [0, 0, 0, 7, 8, 9]],
                                            "attention_mask": [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]]})");
  auto r = gmsa_cli({"logits", "--model", dir / "m", "--input", dir / "batch.json", "--out", dir / "o.safetensors",
                     "--greedy", "7", "--device", "cpu"});
  ASSERT_EQ(r.rc, 0) << r.err;
  SafetensorsFile f(dir / "o.safetensors");
  auto logits = f.tensor("logits");
  auto greedy = f.tensor("greedy");
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 6, 97}));
  ASSERT_EQ(greedy.sizes(), (std::vector<int64_t>{2, 7}));
  GenerationConfig cfg;
  cfg.max_new_tokens = 7;
  cfg.eos_ids = {-1};
  torch::NoGradGuard g;
  for (size_t b = 0; b < rows.size(); ++b) {
    const int64_t n = rows[b].size();
    auto alone = d->forward({torch::tensor(rows[b]).unsqueeze(0)}).logits[0];
    EXPECT_LT(gmsa::testing::max_rel_diff(logits[b].narrow(0, 6 - n, n), alone), 1e-5) << "row " << b;
    auto gen = generate(d, {{{}, rows[b]}}, cfg).tokens[0];
    auto row = greedy[b].contiguous();
    EXPECT_EQ(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 7), gen) << "row " << b;
  }
}

// ---- a real model: stories260K ----

TEST(CliStories, ConvertThenGeneratePrintsPublishedSample) {
  GMSA_REQUIRE_DATA("llama2c-stories260k/stories260K.bin");
  TempDir dir;
  auto conv = gmsa_cli({"convert", "--llama2c", data_path, "--tokenizer", stories_file("tok512.model"), "--out", dir / "hf"});
  ASSERT_EQ(conv.rc, 0) << conv.err;
  auto gen = gmsa_cli({"generate", "--model", dir / "hf", "--prompt", "Once upon a time", "--max-new-tokens", "60", "--device", "cpu"});
  ASSERT_EQ(gen.rc, 0) << gen.err;
  EXPECT_EQ(gen.out.substr(0, kPublished.size()), kPublished) << gen.out;
  EXPECT_NE(gen.err.find("tokens/s"), std::string::npos) << gen.err;
  // The .bin itself with its tokenizer prints the same text; without one, a clear error.
  auto bin = gmsa_cli({"generate", "--model", data_path, "--tokenizer", stories_file("tok512.model"),
                       "--prompt", "Once upon a time", "--max-new-tokens", "60", "--device", "cpu"});
  ASSERT_EQ(bin.rc, 0) << bin.err;
  EXPECT_EQ(bin.out, gen.out);
  expect_one_error_line(gmsa_cli({"generate", "--model", data_path, "--prompt", "Once"}), data_path);
  // bf16 weights: a different file, the same greedy story at least at its start.
  auto conv16 = gmsa_cli({"convert", "--llama2c", data_path, "--tokenizer", stories_file("tok512.model"), "--out",
                          dir / "hf16", "--dtype", "bf16"});
  ASSERT_EQ(conv16.rc, 0) << conv16.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(dir / "hf16/config.json")).at("torch_dtype"), "bfloat16");
}

// A compressor built on stories260K (random LoRA, LSA from the decoder's first layer): the
// CLI's soft tokens and compressed-context answer equal the library's.
TEST(CliStories, CompressAndGenerateWithCompressor) {
  GMSA_REQUIRE_DATA("llama2c-stories260k/stories260K.bin");
  TempDir dir;
  ASSERT_EQ(gmsa_cli({"convert", "--llama2c", data_path, "--tokenizer", stories_file("tok512.model"), "--out", dir / "hf"}).rc, 0);
  {
    auto pm = load_pretrained(dir / "hf");
    CompressorConfig cc;
    cc.encoder_layers = 2;
    cc.lora = {4, 8.0, 0.0};
    Compressor comp(pm.decoder, cc);
    torch::manual_seed(3);
    torch::NoGradGuard g;
    for (auto& [name, t] : comp->own_parameters())
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05);  // zero-initialised otherwise
    save_compressor(dir / "comp", comp, pm.decoder->config(), dir / "hf");
  }
  const std::string context = "Lily went to the park with her mom. She saw a big red ball and a little dog.";
  write_file_atomic(dir / "ctx.txt", context);

  auto c = gmsa_cli({"compress", "--compressor", dir / "comp", "--context", dir / "ctx.txt", "--rate", "4",
                     "--out", dir / "soft.safetensors", "--device", "cpu"});
  ASSERT_EQ(c.rc, 0) << c.err;
  // The library's result, from scratch.
  auto pm = load_pretrained(dir / "hf");
  auto comp = load_compressor(dir / "comp", pm.decoder);
  comp->eval();
  auto ids = pm.tokenizer->encode(context);
  const int64_t L = ids.size();
  torch::NoGradGuard g;
  auto soft = comp->forward(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).unsqueeze(0),
                            torch::tensor({L}), torch::tensor({int64_t{4}}));
  auto expected = soft.embeds[0];
  ASSERT_EQ(expected.size(0), (L + 3) / 4);
  SafetensorsFile f(dir / "soft.safetensors");
  EXPECT_LT(gmsa::testing::max_rel_diff(f.tensor("soft_tokens"), expected), 1e-6);
  EXPECT_EQ(f.metadata().at("rate"), "4");
  EXPECT_EQ(f.metadata().at("context_tokens"), std::to_string(L));

  // --model omitted: the compressor's recorded base model is used.
  auto gen = gmsa_cli({"generate", "--compressor", dir / "comp", "--context", dir / "ctx.txt", "--rate", "4",
                       "--prompt", "Lily saw a", "--max-new-tokens", "12", "--device", "cpu"});
  ASSERT_EQ(gen.rc, 0) << gen.err;
  GenerationConfig cfg;
  cfg.max_new_tokens = 12;
  auto prompt = pm.tokenizer->encode("Lily saw a");
  auto answer = generate(pm.decoder, {{expected, std::vector<int64_t>(prompt.begin(), prompt.end())}}, cfg).tokens[0];
  ASSERT_FALSE(answer.empty());
  EXPECT_EQ(gen.out, pm.tokenizer->decode(std::vector<int>(answer.begin(), answer.end())) + "\n");
}
