// Evaluation (restore / qa over original, closed-book, GMSA, TCP) and the inference benchmark,
// on a tiny random model with a sentencepiece tokenizer trained here.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/data/qa.h"
#include "gmsa/eval/bench_infer.h"
#include "gmsa/eval/evaluate.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/text/spm_backend.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"
#include "test_util.h"

namespace {

using namespace gmsa;
namespace fs = std::filesystem;

const std::vector<std::string> kLines = {
    "Alice was born in Paris and works as a painter.",
    "Bob lives in Berlin and plays the violin every evening.",
    "Carol studied chemistry in Madrid before moving to Rome.",
    "The river flows north through the green valley to the sea.",
    "Dave bought a red bicycle and rode it to the old market.",
    "Eve wrote three books about the history of the northern islands.",
};

// ---- A character-level sentencepiece model written directly as its protobuf ----
// (train_sentencepiece cannot run inside a test binary: see the report on the DEEPBIND
// module; a hand-written CHAR model is also fully predictable.)

std::string varint(uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return out;
}
std::string len_field(int field, const std::string& bytes) {
  return varint(field << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string varint_field(int field, uint64_t v) { return varint(field << 3) + varint(v); }

// ModelProto: pieces (1) = {piece 1, type 3}; trainer_spec (2) = {model_type 3 (CHAR = 4),
// vocab_size 4}; normalizer_spec (3) = {name 1} with the defaults add_dummy_prefix,
// remove_extra_whitespaces and escape_whitespaces. unk / bos / eos keep their default ids
// 0 / 1 / 2 and pieces <unk> / <s> / </s>.
std::string char_model(const std::string& text) {
  std::vector<std::pair<std::string, int>> pieces = {{"<unk>", 2}, {"<s>", 3}, {"</s>", 3}, {"\xe2\x96\x81", 1}};
  std::set<char> chars(text.begin(), text.end());
  for (char c : chars)
    if (c != ' ' && c != '\n') pieces.emplace_back(std::string(1, c), 1);
  std::string model;
  for (const auto& [piece, type] : pieces) model += len_field(1, len_field(1, piece) + varint_field(3, type));
  model += len_field(2, varint_field(3, 4) + varint_field(4, pieces.size()));
  model += len_field(3, len_field(1, "identity"));
  return model;
}

// A tokenizer, a random decoder sized to it, and random GMSA / TCP compressors, on disk as
// `gmsa eval` reads them. Built once for the suite.
class EvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new gmsa::testing::TempDir();
    write_file_atomic(*dir_ / "tok.model",
                      char_model("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!'"));
    tok_ = load_tokenizer(*dir_ / "tok.model").release();

    auto cfg = gmsa::testing::tiny_config();
    cfg.vocab_size = tok_->vocab_size();
    cfg.max_position_embeddings = 512;
    Decoder dec(cfg);
    gmsa::testing::randomize(*dec, 1);
    save_pretrained(*dir_ / "model", dec, *dir_ / "tok.model");
    auto gmsa_comp = random_compressor(dec, "gmsa");
    auto tcp_comp = random_compressor(dec, "tcp");
    save_compressor(*dir_ / "gmsa", gmsa_comp, cfg, *dir_ / "model");
    save_compressor(*dir_ / "tcp", tcp_comp, cfg, *dir_ / "model");

    std::vector<QaExample> qa;
    const std::vector<std::pair<std::string, std::string>> questions = {
        {"Where was Alice born?", "Paris"}, {"What does Bob play?", "the violin"},
        {"What did Carol study?", "chemistry"}, {"What did Dave buy?", "a red bicycle"},
        {"How many books did Eve write?", "three"}};
    for (size_t i = 0; i < questions.size(); ++i) {
      std::string context;
      for (size_t k = 0; k <= i; ++k) context += kLines[(i + k) % kLines.size()] + " ";
      qa.push_back({"q" + std::to_string(i), context, questions[i].first, {questions[i].second}});
    }
    write_qa_jsonl(*dir_ / "qa_small.jsonl", qa);
    std::ofstream corpus(*dir_ / "corpus_small.txt");
    for (size_t i = 0; i < 4; ++i) corpus << kLines[i] << " " << kLines[i + 1] << "\n\n";
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete dir_;
  }

  static Compressor random_compressor(Decoder& dec, const std::string& method) {
    CompressorConfig c;
    c.method = method;
    c.encoder_layers = 2;
    c.lora = {4, 8.0, 0.0};
    c.tcp_max_memory = 64;
    Compressor comp(dec, c);
    torch::NoGradGuard g;
    for (auto& [name, t] : comp->own_parameters()) t.normal_(0, 0.2);
    return comp;
  }

  static EvalOptions small_options(const std::string& task) {
    EvalOptions o;
    o.task = task;
    o.max_new_tokens = 6;
    // restore: "\u2581" + 32 characters; qa: contexts of 48, 113 and 120 (cut) tokens, so
    // that batches mix lengths.
    o.max_context_tokens = task == "restore" ? 33 : 120;
    o.batch_size = 3;  // several batches, the last one partial
    return o;
  }

  static EvalFiles files(const std::string& data) {
    EvalFiles f;
    f.model = *dir_ / "model";
    f.data = {*dir_ / data};
    f.compressors = {*dir_ / "gmsa", *dir_ / "tcp"};
    f.device = "cpu";
    return f;
  }

  static gmsa::testing::TempDir* dir_;
  static Tokenizer* tok_;
};
gmsa::testing::TempDir* EvalTest::dir_ = nullptr;
Tokenizer* EvalTest::tok_ = nullptr;

const std::vector<std::string> kLabels = {"Original", "Closed-book", "GMSA@4x", "TCP@4x", "GMSA@8x", "TCP@8x"};

std::vector<std::string> labels(const EvalResult& r) {
  std::vector<std::string> out;
  for (const auto& row : r.rows) out.push_back(row.label());
  return out;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  return lines;
}

bool contains(const std::vector<int64_t>& hay, const std::vector<int64_t>& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

TEST_F(EvalTest, QaAllMethodsEndToEnd) {
  const auto opts = small_options("qa");
  const auto results = run_eval(files("qa_small.jsonl"), opts);
  ASSERT_EQ(results.size(), 1u);
  const auto& r = results[0];
  EXPECT_EQ(r.dataset, "qa_small");
  EXPECT_EQ(labels(r), kLabels);
  for (const auto& row : r.rows) {
    EXPECT_EQ(row.examples, 5) << row.label();
    for (double v : {row.acc, row.em, row.f1}) {
      EXPECT_GE(v, 0.0) << row.label();
      EXPECT_LE(v, 1.0) << row.label();
    }
    // An exact match is also a contained answer and a full token overlap.
    EXPECT_LE(row.em, row.acc) << row.label();
    EXPECT_LE(row.em, row.f1) << row.label();
  }
  ASSERT_EQ(r.predictions.size(), kLabels.size() * 5);
  EXPECT_EQ(r.predictions[0].id, "q0");
  EXPECT_EQ(r.predictions[0].references, std::vector<std::string>{"Paris"});
  EXPECT_EQ(r.predictions[2 * 5].method, "gmsa");
  EXPECT_EQ(r.predictions[2 * 5].rate, 4);

  gmsa::testing::TempDir out;
  write_eval_outputs(out.path.string(), results, opts);
  EXPECT_EQ(read_lines(out / "predictions.jsonl").size(), kLabels.size() * 5);
  auto metrics = nlohmann::json::parse(read_file(out / "metrics.json"));
  ASSERT_EQ(metrics["results"].size(), 1u);
  EXPECT_EQ(metrics["results"][0]["rows"].size(), kLabels.size());
  EXPECT_EQ(metrics["options"]["repetition_penalty"], 1.3);
  const auto table = read_file(out / "table.md");
  EXPECT_NE(table.find("| Method | qa_small Acc | qa_small EM | qa_small F1 |"), std::string::npos) << table;
  for (const auto& l : kLabels) EXPECT_NE(table.find("| " + l + " |"), std::string::npos) << l;
}

TEST_F(EvalTest, RestoreAllMethodsEndToEnd) {
  const auto opts = small_options("restore");
  const auto results = run_eval(files("corpus_small.txt"), opts);
  ASSERT_EQ(results.size(), 1u);
  const auto& r = results[0];
  EXPECT_EQ(labels(r), kLabels);
  for (const auto& row : r.rows) {
    EXPECT_EQ(row.examples, 4) << row.label();
    EXPECT_GE(row.bleu, 0.0);
    EXPECT_LE(row.bleu, 100.0);
    for (double v : {row.prefix_em, row.rouge1, row.rouge2, row.rougeL}) {
      EXPECT_GE(v, 0.0) << row.label();
      EXPECT_LE(v, 1.0) << row.label();
    }
    EXPECT_TRUE(std::isfinite(row.ppl)) << row.label();
    EXPECT_GT(row.ppl, 1.0) << row.label();
  }
  // The reference is the truncated context decoded back to text: the dummy-prefix "\u2581"
  // and the first 32 characters.
  EXPECT_EQ(r.predictions[0].references, std::vector<std::string>{"Alice was born in Paris and work"});

  gmsa::testing::TempDir out;
  write_eval_outputs(out.path.string(), results, opts);
  const auto table = read_file(out / "table.md");
  EXPECT_NE(table.find("| Method | BLEU | Prefix-EM | ROUGE-1 | ROUGE-2 | ROUGE-L | PPL |"), std::string::npos)
      << table;
  EXPECT_EQ(read_lines(out / "predictions.jsonl").size(), kLabels.size() * 4);
}

// PPL against a direct teacher-forced computation: one forward over [prompt][context][EOS]
// with input ids (no packing), log-softmax at the positions before each target token.
TEST_F(EvalTest, RestorePerplexityMatchesDirectComputation) {
  auto model = load_pretrained(*dir_ / "model");
  auto opts = small_options("restore");
  opts.methods = {"original", "closed-book"};
  const auto examples = load_eval_examples(*dir_ / "corpus_small.txt", opts);
  const auto r = run_eval(model.decoder, *model.tokenizer, {}, examples, "c", opts);
  ASSERT_EQ(r.rows.size(), 2u);
  for (const auto& row : r.rows) {
    double nll = 0;
    int64_t count = 0;
    for (const auto& ex : examples) {
      const auto enc = encode_example(*model.tokenizer, ex, opts.max_context_tokens);
      auto ids = method_prompt_ids(row.method, enc, *model.tokenizer);
      const int64_t p = ids.size();
      ids.insert(ids.end(), enc.context.begin(), enc.context.end());
      ids.push_back(model.tokenizer->eos_id());
      DecoderInput in;
      in.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
      torch::NoGradGuard g;
      auto logp = torch::log_softmax(model.decoder->forward(in).logits[0], -1);
      for (size_t t = p; t < ids.size(); ++t) nll -= logp[t - 1][ids[t]].item<double>();
      count += ids.size() - p;
    }
    EXPECT_NEAR(row.ppl, std::exp(nll / count), 1e-5 * row.ppl) << row.label();
  }
  EXPECT_NE(r.rows[0].ppl, r.rows[1].ppl);
}

TEST_F(EvalTest, PromptLayouts) {
  EvalExample ex{"x", kLines[0] + " " + kLines[1], "Restate the aforementioned Text.", {}};
  const auto enc = encode_example(*tok_, ex, /*max_context_tokens=*/10);
  ASSERT_EQ(enc.context.size(), 10u);  // truncated, head kept
  const auto full = tok_->encode(ex.context);
  EXPECT_EQ(enc.context, std::vector<int64_t>(full.begin(), full.begin() + 10));

  const auto original = method_prompt_ids("original", enc, *tok_);
  std::vector<int64_t> want{tok_->bos_id()};
  want.insert(want.end(), enc.context.begin(), enc.context.end());
  for (int id : tok_->encode("\n")) want.push_back(id);
  want.insert(want.end(), enc.prompt.begin(), enc.prompt.end());
  EXPECT_EQ(original, want);
  EXPECT_TRUE(contains(original, enc.context));

  const auto closed = method_prompt_ids("closed-book", enc, *tok_);
  std::vector<int64_t> expected{tok_->bos_id()};
  expected.insert(expected.end(), enc.prompt.begin(), enc.prompt.end());
  EXPECT_EQ(closed, expected);
  EXPECT_FALSE(contains(closed, enc.context));

  EXPECT_EQ(method_prompt_ids("gmsa", enc, *tok_), enc.prompt);  // no BOS after soft tokens
  EXPECT_EQ(method_prompt_ids("tcp", enc, *tok_), enc.prompt);
}

// A row of batched evaluation (padded among longer and shorter contexts) equals compressing
// and generating that example alone by hand.
TEST_F(EvalTest, SoftPrefixGenerationMatchesManualCompressAndGenerate) {
  auto model = load_pretrained(*dir_ / "model");
  auto comp = load_compressor(*dir_ / "gmsa", model.decoder);
  auto opts = small_options("qa");
  opts.methods = {"gmsa"};
  opts.rates = {4};
  opts.max_context_tokens = 200;  // the first batch's rows: 48, 113 and 173 tokens
  const auto examples = load_eval_examples(*dir_ / "qa_small.jsonl", opts);
  const auto r = run_eval(model.decoder, *model.tokenizer, {comp}, examples, "qa_small", opts);
  ASSERT_EQ(r.predictions.size(), examples.size());

  const size_t i = 1;  // second row of the first batch of 3
  const auto enc = encode_example(*model.tokenizer, examples[i], opts.max_context_tokens);
  const int64_t L = enc.context.size();
  // "\u2581" + two lines and the space between them; padded to row 3's length in the batch.
  ASSERT_EQ(L, static_cast<int64_t>(1 + kLines[1].size() + 1 + kLines[2].size()));
  torch::NoGradGuard g;
  comp->eval();
  auto soft = comp->forward(torch::tensor(enc.context, torch::kLong).unsqueeze(0), torch::tensor({L}),
                            torch::tensor({int64_t{4}}));
  ASSERT_EQ(soft.lengths[0].item<int64_t>(), (L + 3) / 4);
  GenerationConfig gen;
  gen.max_new_tokens = opts.max_new_tokens;
  gen.repetition_penalty = 1.3;
  auto out = generate(model.decoder, {{soft.embeds[0], enc.prompt}}, gen);
  const auto& t = out.tokens[0];
  EXPECT_EQ(r.predictions[i].prediction, model.tokenizer->decode(std::vector<int>(t.begin(), t.end())));
}

TEST(EvalScoring, QaMeansOverExamples) {
  // Normalised (SQuAD): "paris" / "violin player" / "berlin".
  //   EM:  1, 0 ("violin player" != "violin"), 0  -> 1/3
  //   Acc: 1, 1 ("violin" is contained), 0          -> 2/3
  //   F1:  1, P = 1/2, R = 1 -> 2/3, 0              -> (1 + 2/3) / 3 = 5/9
  const auto row = score_predictions("qa", {"Paris.", "the violin player", "Berlin"},
                                     {{"Paris"}, {"violin", "viola"}, {"chemistry"}});
  EXPECT_EQ(row.examples, 3);
  EXPECT_NEAR(row.em, 1.0 / 3, 1e-12);
  EXPECT_NEAR(row.acc, 2.0 / 3, 1e-12);
  EXPECT_NEAR(row.f1, 5.0 / 9, 1e-12);
}

TEST(EvalScoring, RestoreExactAndHalfRestoration) {
  const std::string ref = "a b c d e f g h";
  // Exact: BLEU 100, Prefix-EM 1, ROUGE 1.
  const auto exact = score_predictions("restore", {ref}, {{ref}});
  EXPECT_NEAR(exact.bleu, 100.0, 1e-9);
  EXPECT_NEAR(exact.prefix_em, 1.0, 1e-12);
  EXPECT_NEAR(exact.rougeL, 1.0, 1e-12);
  // With a second example restoring only "a b c d" (4 of 8 tokens):
  //   Prefix-EM (1 + 4/8) / 2 = 0.75;
  //   ROUGE-1 F1 of the half: P = 1, R = 1/2 -> 2/3; mean (1 + 2/3) / 2 = 5/6;
  //   ROUGE-2: 3 of 3 hypothesis bigrams, 3 of 7 reference ones -> F1 = 2 (3/7) / (10/7) = 3/5,
  //            mean 4/5;
  //   BLEU (corpus): hypothesis 12 tokens vs reference 16 -> BP = exp(1 - 16/12); n-gram
  //            precisions 1 -> BLEU = 100 exp(-1/3).
  const auto half = score_predictions("restore", {ref, "a b c d"}, {{ref}, {ref}});
  EXPECT_NEAR(half.prefix_em, 0.75, 1e-12);
  EXPECT_NEAR(half.rouge1, 5.0 / 6, 1e-12);
  EXPECT_NEAR(half.rouge2, 4.0 / 5, 1e-12);
  EXPECT_NEAR(half.bleu, 100 * std::exp(-1.0 / 3), 1e-9);
  EXPECT_EQ(half.ppl, 0);  // set by run_eval from the teacher-forced loss
}

TEST_F(EvalTest, TableCombinesDatasetsAndTasks) {
  EvalResult a{"qa", "nq", {}, {}}, b{"qa", "tqa", {}, {}}, c{"restore", "pwc", {}, {}};
  EvalRow orig;
  orig.method = "original";
  orig.acc = 0.5, orig.em = 0.25, orig.f1 = 0.375;
  EvalRow g8;
  g8.method = "gmsa", g8.rate = 8, g8.acc = 1;
  a.rows = {orig, g8};
  b.rows = {g8};
  EvalRow rr;
  rr.method = "tcp", rr.rate = 4, rr.bleu = 12.5, rr.prefix_em = 0.5, rr.ppl = 3.25;
  c.rows = {rr};
  const auto t = render_table({a, b, c});
  EXPECT_NE(t.find("| Method | nq Acc | nq EM | nq F1 | tqa Acc | tqa EM | tqa F1 |"), std::string::npos) << t;
  EXPECT_NE(t.find("| Original | 50.00 | 25.00 | 37.50 | - | - | - |"), std::string::npos) << t;
  EXPECT_NE(t.find("| GMSA@8x | 100.00 | 0.00 | 0.00 | 100.00 | 0.00 | 0.00 |"), std::string::npos) << t;
  EXPECT_NE(t.find("| TCP@4x | 12.50 | 50.00 | 0.00 | 0.00 | 0.00 | 3.25 |"), std::string::npos) << t;
}

TEST_F(EvalTest, MissingCompressorForMethodIsAnError) {
  auto f = files("qa_small.jsonl");
  f.compressors = {*dir_ / "gmsa"};
  auto opts = small_options("qa");
  opts.methods = {"original", "tcp"};
  EXPECT_THROW(run_eval(f, opts), gmsa::Error);
}

TEST_F(EvalTest, CliWritesOutputs) {
  gmsa::testing::TempDir out;
  const std::string cmd = gmsa::testing::binary_dir() + "/gmsa eval --task qa --model " + (*dir_ / "model") +
                          " --data " + (*dir_ / "qa_small.jsonl") + " --compressor " + (*dir_ / "gmsa") +
                          " --methods closed-book,gmsa --rates 2 --max-new-tokens 3 --device cpu --out " +
                          out.path.string() + " > " + (out / "stdout.txt") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(out / "stdout.txt");
  const auto table = read_file(out / "table.md");
  EXPECT_NE(table.find("| Closed-book |"), std::string::npos) << table;
  EXPECT_NE(table.find("| GMSA@2x |"), std::string::npos) << table;
  EXPECT_EQ(read_lines(out / "predictions.jsonl").size(), 2u * 5);
}

TEST(BenchInfer, TinyRandomModelForcesNewTokens) {
  BenchInferOptions o;
  o.arch = "tiny";
  o.context_tokens = 48;
  o.new_tokens = 5;
  o.batch = 2;
  o.rates = {4};
  o.repeats = 2;
  o.device = "cpu";
  o.warm_mib = 3;  // recorded in the setup (the CPU path has no kernels to warm with it)
  const int64_t warm_before = decode_ops::warm_bytes();
  const auto rep = run_bench_infer(o);
  EXPECT_EQ(decode_ops::warm_bytes(), int64_t{3} << 20);
  decode_ops::set_warm_bytes(warm_before);
  EXPECT_EQ(rep.setup.at("warm_bytes").get<int64_t>(), int64_t{3} << 20);
  EXPECT_FALSE(rep.setup.at("l2_warming").get<bool>());  // a CPU run warms nothing
  ASSERT_EQ(rep.cases.size(), 2u);
  EXPECT_EQ(rep.cases[0].name, "original");
  EXPECT_EQ(rep.cases[1].name, "gmsa@4x");
  EXPECT_EQ(rep.cases[0].decoder_tokens, 1 + 48 + 16);  // BOS, context, prompt
  EXPECT_EQ(rep.cases[1].decoder_tokens, 48 / 4 + 16);
  for (const auto& c : rep.cases) {
    ASSERT_EQ(c.samples.size(), 2u);
    for (const auto& s : c.samples) {
      EXPECT_EQ(s.generated, 5);  // EOS never stops a run
      EXPECT_GT(s.prefill_ms, 0);
      EXPECT_GT(s.decode_ms, 0);
      EXPECT_GE(s.total_ms, s.compress_ms + s.prefill_ms);
    }
    EXPECT_GT(c.peak_bytes, 0);
    EXPECT_NEAR(c.tokens_per_s, 2 * 5 / (c.median.total_ms / 1000), 1e-6 * c.tokens_per_s);
  }
  EXPECT_EQ(rep.cases[0].median.compress_ms, 0);
  EXPECT_GT(rep.cases[1].median.compress_ms, 0);
  const auto j = rep.to_json();
  EXPECT_EQ(j["setup"]["device"], "cpu");
  EXPECT_EQ(j["setup"]["warm_bytes"], int64_t{3} << 20);
  EXPECT_EQ(j["setup"]["model_config"]["num_hidden_layers"], 8);
  EXPECT_EQ(j["cases"][1]["samples"].size(), 2u);
  EXPECT_NE(rep.table().find("| gmsa@4x | 28 |"), std::string::npos) << rep.table();
}

TEST(BenchInfer, ArchitectureShapes) {
  const auto l2 = arch_config("llama2-7b");
  EXPECT_NEAR(static_cast<double>(l2.num_parameters()), 6.74e9, 0.01e9);  // 6,738,415,616
  const auto l3 = arch_config("llama3-8b");
  EXPECT_NEAR(static_cast<double>(l3.num_parameters()), 8.03e9, 0.01e9);  // 8,030,261,248
  const auto q2 = arch_config("qwen2-7b");
  EXPECT_NEAR(static_cast<double>(q2.num_parameters()), 7.62e9, 0.01e9);  // 7,615,616,512
  EXPECT_THROW(arch_config("gpt2"), gmsa::Error);
}

}  // namespace
