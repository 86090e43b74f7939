// Data-parallel training through the real command: scripts/launch.sh starts 2 `gmsa train`
// processes (Gloo over loopback). Their result must equal one process with twice the batch,
// with and without ZeRO-1, also across a stop and resume; a dying rank stops the other.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmsa/dist/process_group.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/text/spm_backend.h"
#include "test_util.h"

using namespace gmsa;
namespace fs = std::filesystem;

namespace {

// A port no one listens on now: tests run in parallel, so the default 29500 would collide.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct DistFixture {
  gmsa::testing::TempDir dir;
  std::string config, gmsa_bin, launch;
  DistFixture() {
    const char* src = std::getenv("GMSA_SOURCE_DIR");
    launch = src ? std::string(src) + "/scripts/launch.sh" : "";
    gmsa_bin = gmsa::testing::binary_dir() + "/gmsa";
    std::ofstream c(dir / "corpus.txt");
    for (int p = 0; p < 32; ++p) {
      for (int w = 0; w < 12 + p % 5; ++w) c << (w ? " " : "") << "w" << (p * 7 + w * 3) % 23;
      c << ".\n\n";
    }
    c.close();
    train_sentencepiece("--input=" + (dir / "corpus.txt") + " --model_prefix=" + (dir / "tok") +
                        " --vocab_size=40 --model_type=bpe --hard_vocab_limit=false --minloglevel=2");
    auto cfg = gmsa::testing::tiny_config("llama");
    cfg.vocab_size = 48;
    Decoder d(cfg);
    gmsa::testing::randomize(*d, 11);
    save_pretrained(dir / "model", d, dir / "tok.model");
    config = dir / "run.yaml";
    std::ofstream(config) << "run: {device: cpu, seed: 3, threads: 1}\n"
                             "model: {path: " << (dir / "model") << "}\n"
                             "compressor: {encoder_layers: 2, lora: {r: 4, dropout: 0.0}}\n"
                             "data: {train: " << (dir / "corpus.txt") << ", max_context_tokens: 16, rates: [2, 4]}\n"
                             "stage: {type: ae, steps: 4}\n"
                             "optim: {lr: 0.01}\n"
                             "train: {log_every: 1, progress: lines, save_every: 2}\n"
                             "dist: {timeout_s: 20}\n";
  }
  int run(const std::string& args, int n, const std::string& log) const {
    std::string cmd = n > 1 ? launch + " -n " + std::to_string(n) + " --master-port " + std::to_string(free_port()) +
                                  " -- " + gmsa_bin
                            : gmsa_bin;
    return std::system((cmd + " train -c " + config + " " + args + " > " + (dir / log) + " 2>&1").c_str());
  }
  std::map<std::string, torch::Tensor> weights(const std::string& run) const {
    std::string latest;
    for (auto& e : fs::directory_iterator(fs::path(dir / run) / "checkpoints")) latest = std::max(latest, e.path().string());
    SafetensorsFile f(latest + "/trainable.safetensors");
    std::map<std::string, torch::Tensor> out;
    for (auto& k : f.keys()) out[k] = f.tensor(k);
    return out;
  }
};

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void expect_close(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (auto& [k, t] : a) EXPECT_TRUE(torch::allclose(t, b.at(k), 1e-4, 2e-5)) << k;
}

}  // namespace

TEST(DistTrain, TwoRanksEqualOneProcessWithTwiceTheBatchWithAndWithoutZero1) {
  if (!gmsa::dist::ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo: CPU ranks cannot talk";
  DistFixture fx;
  if (fx.launch.empty()) GTEST_SKIP() << "GMSA_SOURCE_DIR unset: scripts/launch.sh not found";
  ASSERT_EQ(fx.run("--set stage.batch_size=4 --set run.dir=" + (fx.dir / "one"), 1, "one.log"), 0);
  ASSERT_EQ(fx.run("--set stage.batch_size=2 --set run.dir=" + (fx.dir / "two"), 2, "two.log"), 0);
  // Both ranks really ran as one group of 2.
  const std::string log = read_text(fx.dir / "two.log");
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  ASSERT_EQ(fx.run("--set stage.batch_size=2 --set dist.zero1=true --set run.dir=" + (fx.dir / "zero"), 2, "zero.log"), 0);
  auto one = fx.weights("one");
  expect_close(one, fx.weights("two"));
  expect_close(one, fx.weights("zero"));
}

TEST(DistTrain, TwoRanksStoppedAndResumedMatchAnUnstoppedRun) {
  if (!gmsa::dist::ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo: CPU ranks cannot talk";
  DistFixture fx;
  if (fx.launch.empty()) GTEST_SKIP() << "GMSA_SOURCE_DIR unset: scripts/launch.sh not found";
  const std::string common = "--set stage.batch_size=2 --set dist.zero1=true ";
  ASSERT_EQ(fx.run(common + "--set run.dir=" + (fx.dir / "straight"), 2, "straight.log"), 0);
  // Stopped after 3 steps (exit code 3: stopped early with a checkpoint), then resumed.
  EXPECT_NE(fx.run(common + "--stop-after-step 3 --set run.dir=" + (fx.dir / "resumed"), 2, "stop.log"), 0);
  ASSERT_EQ(fx.run(common + "--set run.dir=" + (fx.dir / "resumed"), 2, "resume.log"), 0);
  auto a = fx.weights("straight"), b = fx.weights("resumed");
  for (auto& [k, t] : a) EXPECT_TRUE(torch::equal(t, b.at(k))) << k;
}
