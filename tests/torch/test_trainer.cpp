// The trainer end to end on tiny models: gradient accumulation equals one big batch, an
// interrupted run resumes bit-identically, chained stages hand over their results.
#include <filesystem>
#include <fstream>
#include <random>

#include "gmsa/config/config.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/text/spm_backend.h"
#include "gmsa/train/trainer.h"
#include "gmsa/util/error.h"
#include "test_util.h"

using namespace gmsa;
namespace fs = std::filesystem;

namespace {

const char* kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park",
                        "with", "red", "ball", "under", "tree", "sun", "was", "warm", "bird"};

// A small corpus, a sentencepiece model trained on it, and a random decoder saved in HF form.
struct Fixture {
  gmsa::testing::TempDir dir;
  std::string corpus, qa, model_dir, config;
  Fixture() {
    corpus = dir / "corpus.txt";
    qa = dir / "qa.jsonl";
    std::mt19937 rng(7);
    std::ofstream c(corpus), q(qa);
    for (int p = 0; p < 40; ++p) {
      std::string para;
      for (int w = 0; w < 18 + p % 7; ++w) para += std::string(w ? " " : "") + kWords[rng() % 20];
      c << para << ".\n\n";
      q << nlohmann::json({{"input", para}, {"prompt", "What is it?"}, {"answer", kWords[p % 20]}}).dump() << "\n";
    }
    c.close();
    q.close();
    train_sentencepiece("--input=" + corpus + " --model_prefix=" + (dir / "tok") +
                        " --vocab_size=60 --model_type=bpe --character_coverage=1.0 --bos_id=1 --eos_id=2 "
                        "--unk_id=0 --hard_vocab_limit=false --minloglevel=2");
    auto cfg = gmsa::testing::tiny_config("llama");
    cfg.vocab_size = 64;
    Decoder d(cfg);
    gmsa::testing::randomize(*d, 3);
    model_dir = dir / "model";
    save_pretrained(model_dir, d, dir / "tok.model");
    config = dir / "run.yaml";
    std::ofstream y(config);
    y << "run: {name: t, device: cpu, seed: 5, threads: 1}\n"
         "model: {path: " << model_dir << "}\n"
         "compressor: {encoder_layers: 2, lora: {r: 4, dropout: 0.0}}\n"
         "data: {train: " << corpus << ", max_context_tokens: 24, rates: [2, 4], shuffle: true, bucket: false}\n"
         "stage: {type: ae, steps: 4, batch_size: 4}\n"
         "optim: {lr: 0.01}\n"
         "train: {log_every: 1, progress: lines}\n";
  }
  std::vector<RunConfig> load(std::vector<std::string> sets) {
    sets.push_back("run.dir=" + (dir / ("run" + std::to_string(runs++))));
    return load_config_stages(config, sets).stages;
  }
  int runs = 0;
};

std::map<std::string, torch::Tensor> trained_weights(const std::string& run_dir) {
  // The last checkpoint holds every trained tensor.
  std::string latest;
  for (auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints")) latest = std::max(latest, e.path().string());
  SafetensorsFile f(latest + "/trainable.safetensors");
  std::map<std::string, torch::Tensor> out;
  for (auto& k : f.keys()) out[k] = f.tensor(k);
  return out;
}

nlohmann::json latest_state(const std::string& run_dir) {
  std::string latest;
  for (auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints")) latest = std::max(latest, e.path().string());
  std::ifstream in(latest + "/state.json");
  return nlohmann::json::parse(in);
}

std::vector<nlohmann::json> metric_lines(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST(Trainer, AccumulatingTwoBatchesOfTwoEqualsOneBatchOfFour) {
  Fixture fx;
  auto big = fx.load({"stage.batch_size=4", "stage.grad_accum=1", "stage.steps=2", "data.shuffle=false"});
  auto small = fx.load({"stage.batch_size=2", "stage.grad_accum=2", "stage.steps=2", "data.shuffle=false"});
  auto a = train(big);
  auto b = train(small);
  ASSERT_EQ(a[0].losses.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(a[0].losses[i], b[0].losses[i], 1e-5);
  auto wa = trained_weights(a[0].dir), wb = trained_weights(b[0].dir);
  ASSERT_EQ(wa.size(), wb.size());
  // One batch of 4 and two of 2 sum in different orders, and Adam's normalised update turns a
  // rounding difference in a near-zero gradient entry into a larger one in the weight: up to
  // 6e-6 here with OpenBLAS on an AVX-512 machine. A micro-batch dropped or counted twice moves
  // weights by the order of the learning rate (1e-2).
  for (auto& [k, t] : wa) EXPECT_TRUE(torch::allclose(t, wb[k], 1e-5, 5e-5)) << k;
}

TEST(Trainer, ResumedRunIsBitIdenticalToUninterruptedRun) {
  Fixture fx;
  // LoRA dropout on: the RNG state must be restored too.
  std::vector<std::string> common = {"stage.steps=6", "compressor.lora.dropout=0.1", "train.save_every=2"};
  auto straight = train(fx.load(common));
  auto cfg = fx.load(common);
  TrainOptions stop;
  stop.stop_after_step = 3;
  auto first = train(cfg, stop);
  ASSERT_FALSE(first[0].completed);
  auto resumed = train(cfg);  // train.resume=auto picks up the step-3 checkpoint
  ASSERT_TRUE(resumed[0].completed);
  ASSERT_EQ(resumed[0].losses.size(), straight[0].losses.size());
  for (size_t i = 0; i < straight[0].losses.size(); ++i)
    EXPECT_EQ(resumed[0].losses[i], straight[0].losses[i]) << "step " << i + 1;
  auto wa = trained_weights(straight[0].dir), wb = trained_weights(resumed[0].dir);
  for (auto& [k, t] : wa) EXPECT_TRUE(torch::equal(t, wb[k])) << k;
}

// lm (a decoder from scratch) -> ae -> keft, each stage starting from the previous result.
TEST(Trainer, ChainLmThenAutoencoderThenKeft) {
  Fixture fx;
  std::ofstream(fx.dir / "chain.yaml") << "base: run.yaml\n"
                                           "model: {path: '', tokenizer: " << (fx.dir / "tok.model") << ",\n"
                                           "        init: {hidden_size: 32, intermediate_size: 64, num_layers: 3, num_heads: 4, num_kv_heads: 2}}\n"
                                           "chain:\n"
                                           "  - {stage: {type: lm, steps: 80}, optim: {lr: 1.0e-2}}\n"
                                           "  - {stage: {type: ae, steps: 60}, optim: {lr: 1.0e-2}}\n"
                                           "  - {stage: {type: keft, steps: 3}, data: {train: " << fx.qa << "}, optim: {lr: 1.0e-3}}\n";
  auto stages = load_config_stages(fx.dir / "chain.yaml", {"run.dir=" + (fx.dir / "chain")}).stages;
  auto out = train(stages);
  ASSERT_EQ(out.size(), 3u);
  ASSERT_TRUE(out[2].completed);
  EXPECT_LT(out[0].losses.back(), 0.7 * out[0].losses.front()) << "lm loss did not fall";
  const auto& l = out[1].losses;
  const size_t n = l.size();
  double first = (l[0] + l[1] + l[2]) / 3, last = (l[n - 1] + l[n - 2] + l[n - 3]) / 3;
  EXPECT_LT(last, 0.9 * first) << "autoencoder loss did not fall: " << first << " -> " << last;
  EXPECT_TRUE(fs::exists(fs::path(out[0].output) / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(out[2].output) / "compressor.safetensors"));
  SafetensorsFile delta(out[2].output + "/decoder_delta.safetensors");
  EXPECT_EQ(delta.keys().size(), 9u);  // q, k, v of 3 layers
}

TEST(Trainer, ConfigErrorsAreClear) {
  Fixture fx;
  EXPECT_THROW(train(fx.load({"data.train=" + (fx.dir / "missing.txt")})), gmsa::Error);
  try {
    train(fx.load({"model.path=" + (fx.dir / "nope")}));
    FAIL();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos) << e.what();
  }
}

// A non-finite loss skips the update and is counted; after train.max_bad_steps in a row the
// run stops with a clear message and a checkpoint.
TEST(Trainer, NonFiniteStepsAreSkippedThenTheRunStops) {
  Fixture fx;
  auto cfg = fx.load({"optim.lr=1e30", "optim.clip=0", "stage.steps=20", "train.max_bad_steps=3"});
  try {
    train(cfg);
    FAIL() << "expected the run to stop";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(fs::path(effective_run_dir(cfg[0])) / "checkpoints"));
  std::ifstream metrics(fs::path(effective_run_dir(cfg[0])) / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  EXPECT_GE(nlohmann::json::parse(last).at("skipped_steps").get<int64_t>(), 1) << last;
}

// On CUDA the step results stay on the device until a drain point (logging steps, checkpoints,
// a stop): the losses still match the CPU run, the logs report averages over the steps since
// the previous drain, and a stopped run checkpoints (with the device-side step count) and
// resumes like an uninterrupted one.
TEST(Trainer, CudaRunDrainsAtLoggingStepsAndMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test";
  Fixture fx;
  std::vector<std::string> common = {"stage.steps=7", "train.log_every=3", "run.dtype=fp32"};
  auto with = [&](std::vector<std::string> extra) {
    auto sets = common;
    sets.insert(sets.end(), extra.begin(), extra.end());
    return fx.load(sets);
  };
  auto cpu = train(with({}));
  auto gpu_cfg = with({"run.device=cuda"});
  auto gpu = train(gpu_cfg);
  ASSERT_TRUE(gpu[0].completed);
  ASSERT_EQ(gpu[0].losses.size(), 7u);
  ASSERT_EQ(cpu[0].losses.size(), 7u);
  // fp32 on both, but Adam's normalised updates turn rounding differences between the two
  // devices' kernels into lr-sized weight differences (0.27% apart at step 6 on an H100); a
  // skipped or repeated update would show in optimizer_steps below.
  for (size_t i = 0; i < 7; ++i) EXPECT_NEAR(gpu[0].losses[i], cpu[0].losses[i], 2e-2 * std::abs(cpu[0].losses[i])) << i;
  auto lines = metric_lines(gpu[0].dir);
  ASSERT_EQ(lines.size(), 3u);  // steps 3, 6 and the last
  for (const auto& l : lines) {
    EXPECT_GT(l.at("ms").get<double>(), 0.0) << l;
    EXPECT_GT(l.at("tokens_per_s").get<double>(), 0.0) << l;
    EXPECT_GT(l.at("mfu").get<double>(), 0.0) << l;
    EXPECT_EQ(l.at("skipped_steps").get<int64_t>(), 0) << l;
  }
  EXPECT_EQ(lines.back().at("step").get<int64_t>(), 7);
  EXPECT_NEAR(lines.back().at("loss").get<double>(), gpu[0].losses.back(), 1e-12);
  auto st = latest_state(gpu[0].dir);
  EXPECT_EQ(st.at("step").get<int64_t>(), 7);
  EXPECT_EQ(st.at("optimizer_steps").get<int64_t>(), 7);
  EXPECT_EQ(st.at("losses").size(), 7u);
  // Stopped between logging steps (after step 4): the pending step is drained first.
  auto cfg = with({"run.device=cuda"});
  TrainOptions stop;
  stop.stop_after_step = 4;
  auto first = train(cfg, stop);
  ASSERT_FALSE(first[0].completed);
  ASSERT_EQ(first[0].losses.size(), 4u);
  st = latest_state(first[0].dir);
  EXPECT_EQ(st.at("step").get<int64_t>(), 4);
  EXPECT_EQ(st.at("optimizer_steps").get<int64_t>(), 4);
  auto resumed = train(cfg);
  ASSERT_TRUE(resumed[0].completed);
  ASSERT_EQ(resumed[0].losses.size(), 7u);
  for (size_t i = 0; i < 7; ++i)
    EXPECT_NEAR(resumed[0].losses[i], gpu[0].losses[i], 1e-4 * std::abs(gpu[0].losses[i])) << i;
}

// On CUDA a non-finite step is skipped on the device at once; the max_bad_steps stop happens at
// the next drain point (here the first logging step), with a checkpoint of every step run.
TEST(Trainer, CudaNonFiniteStepsStopAtTheNextDrainPoint) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test";
  Fixture fx;
  auto cfg = fx.load({"optim.lr=1e30", "optim.clip=0", "stage.steps=20", "train.max_bad_steps=3",
                      "train.log_every=6", "run.device=cuda", "run.dtype=fp32"});
  try {
    train(cfg);
    FAIL() << "expected the run to stop";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
  auto st = latest_state(effective_run_dir(cfg[0]));
  const int64_t step = st.at("step").get<int64_t>();
  EXPECT_GE(step, 3);
  EXPECT_LE(step, 6);  // at the first drain point, not later
  EXPECT_GE(st.at("skipped_steps").get<int64_t>(), 3);
  EXPECT_GE(st.at("bad_in_row").get<int64_t>(), 3);
  EXPECT_EQ(static_cast<int64_t>(st.at("losses").size()), step);
  // The 6 steps before the drain ran; the skipped ones did not count as updates.
  EXPECT_EQ(st.at("optimizer_steps").get<int64_t>(), 6 - st.at("skipped_steps").get<int64_t>());
}

// SIGTERM (here from `timeout`) makes `gmsa train` save a checkpoint and exit cleanly; the run
// then resumes from it.
TEST(Trainer, SigtermSavesACheckpointAndExits) {
  Fixture fx;
  const std::string gmsa_bin = gmsa::testing::binary_dir() + "/gmsa";
  const std::string run_dir = fx.dir / "sig";
  // Exactly one SIGTERM, once training runs (GNU timeout would signal the process group too,
  // and a second signal means "exit at once").
  const std::string log = fx.dir / "sig.log";
  const std::string cmd = "bash -c '" + gmsa_bin + " train -c " + fx.config +
                          " --set stage.steps=1000000 --set run.dir=" + run_dir + " > " + log +
                          " 2>&1 & pid=$!; for i in $(seq 600); do grep -q \"step 2/\" " + log +
                          " && break; sleep 0.1; done; kill -TERM $pid; wait $pid'";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << "expected the 'stopped early' exit code";
  bool complete = false;
  for (auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints"))
    complete = complete || fs::exists(e.path() / "COMPLETE");
  EXPECT_TRUE(complete) << "no complete checkpoint after SIGTERM";
}

// data.streaming: the corpus is read through a bounded shuffle buffer; an interrupted run still
// resumes at the exact document with bit-identical results.
TEST(Trainer, StreamingRunResumesBitIdentically) {
  Fixture fx;
  std::vector<std::string> common = {"data.streaming=true", "data.stream_buffer=8", "stage.steps=6",
                                     "train.save_every=2", "compressor.lora.dropout=0.1"};
  auto straight = train(fx.load(common));
  auto cfg = fx.load(common);
  TrainOptions stop;
  stop.stop_after_step = 3;
  ASSERT_FALSE(train(cfg, stop)[0].completed);
  auto resumed = train(cfg);
  ASSERT_EQ(resumed[0].losses, straight[0].losses);
  auto wa = trained_weights(straight[0].dir), wb = trained_weights(resumed[0].dir);
  for (auto& [k, t] : wa) EXPECT_TRUE(torch::equal(t, wb[k])) << k;
}
