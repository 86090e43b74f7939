// Data-parallel pieces: launcher environment, the c10d process group (Gloo over loopback),
// gradient synchronisation, ZeRO-1, faults, scripts/launch.sh.
//
// Multi-process tests re-run this binary as workers: the parent starts `gmsa_tests
// --gtest_filter=DistWorker.Run` once per rank with RANK/WORLD_SIZE/... and GMSA_DIST_WORKER
// naming a scenario; DistWorker.Run skips unless that variable is set. Workers write their
// results (gradients, parameters) into GMSA_DIST_OUT; the parent compares them with the same
// computation done in one process on the whole batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "gmsa/dist/env.h"
#include "gmsa/dist/grad_sync.h"
#include "gmsa/dist/process_group.h"
#include "gmsa/dist/zero.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/decoder.h"
#include "gmsa/train/optimizer.h"
#include "gmsa/util/error.h"
#include "test_util.h"

extern char** environ;

namespace {

using namespace gmsa;
using namespace gmsa::dist;
using gmsa::testing::TempDir;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const char* kWorkerVar = "GMSA_DIST_WORKER";
const char* kOutVar = "GMSA_DIST_OUT";
const char* kZeroVar = "GMSA_DIST_ZERO";
const char* kDeviceVar = "GMSA_DIST_DEVICE";  // "cuda": rank r trains on cuda:r over NCCL
constexpr int64_t kFaultTimeoutMs = 3000;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// The model and data shared by workers and the single-process references.

// A tiny decoder plus two extra trained tensors: `gate` enters the loss only through batch row 0
// (so it has a gradient on rank 0 only), `unused` never does.
struct Tiny {
  Decoder model{nullptr};
  torch::Tensor gate, unused;
  NamedTensors named;
  explicit Tiny(torch::Device device = torch::kCPU) {
    model = Decoder(gmsa::testing::tiny_config());
    gmsa::testing::randomize(*model, 0);
    model->to(device);
    gate = torch::full({3}, 0.5, torch::TensorOptions().device(device)).set_requires_grad(true);
    unused = torch::ones({2}, torch::TensorOptions().device(device)).set_requires_grad(true);
    // First, so they land in the last gradient bucket: a bucket waits for all its gradients,
    // and `unused` never gets one, so it would hold back every bucket after its own.
    named = {{"gate", gate}, {"unused", unused}};
    for (auto& p : trainable_parameters(*model)) named.push_back(p);
  }
  std::vector<torch::Tensor> tensors() const {
    std::vector<torch::Tensor> out;
    for (const auto& [n, t] : named) out.push_back(t);
    return out;
  }
};

// 4 sequences of 12 tokens; row s has targets at positions >= 2 + 2s (10, 8, 6, 4 targets), so
// the two halves of the batch have different token counts (18 and 10).
struct Batch {
  torch::Tensor ids, mask;
};

Batch make_batch(int64_t seed, torch::Device device = torch::kCPU) {
  torch::manual_seed(seed);
  Batch b;
  b.ids = torch::randint(3, 97, {4, 12}, torch::kLong).to(device);
  auto pos = torch::arange(12).unsqueeze(0);
  auto first = (2 + 2 * torch::arange(4)).unsqueeze(1);
  b.mask = (pos >= first).to(device, torch::kFloat);
  return b;
}

int64_t target_tokens(const Batch& b, int64_t begin, int64_t end) {
  return b.mask.slice(0, begin, end).slice(1, 1).sum().item<int64_t>();
}

// Summed next-token NLL over the target positions of rows [begin, end), plus the gate's term.
torch::Tensor nll_sum(Tiny& m, const Batch& b, int64_t begin, int64_t end) {
  DecoderInput in;
  in.input_ids = b.ids.slice(0, begin, end);
  auto logits = m.model->forward(in).logits.slice(1, 0, -1);
  auto targets = in.input_ids.slice(1, 1).unsqueeze(-1);
  auto nll = -torch::log_softmax(logits, -1).gather(2, targets).squeeze(-1);
  auto loss = (nll * b.mask.slice(0, begin, end).slice(1, 1)).sum();
  if (begin == 0) loss = loss + 3.0 * (m.gate * m.gate).sum();
  return loss;
}

NamedTensors read_all(const std::string& path) {
  SafetensorsFile f(path);
  NamedTensors out;
  for (const auto& k : f.keys()) out.emplace_back(k, f.tensor(k));
  return out;
}

constexpr int64_t kTrainSteps = 4;
const AdamWOptions kAdamW{0.9, 0.999, 1e-8, 0.1};
constexpr double kLr = 1e-2, kClip = 1.0;

// ---------------------------------------------------------------------------------------------
// Worker scenarios (run in child processes, rank and world size from the environment).

std::string out_path(const std::string& name) { return std::string(std::getenv(kOutVar)) + "/" + name; }

torch::Device worker_device() {
  const char* d = std::getenv(kDeviceVar);
  if (d && std::string(d) == "cuda")
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(detect_dist_env().local_rank));
  return torch::kCPU;
}

std::unique_ptr<ProcessGroup> connect(milliseconds timeout = milliseconds(20000)) {
  return ProcessGroup::create(detect_dist_env(), worker_device(), timeout);
}

void worker_collectives() {
  auto pg = connect();
  const int64_t r = pg->rank(), w = pg->world_size();
  const double rank_sum = static_cast<double>(w * (w + 1) / 2);  // sum over ranks of (r + 1)
  EXPECT_EQ(pg->backend(), "gloo");

  auto a = torch::arange(6, torch::kFloat) * static_cast<double>(r + 1);
  auto b = torch::full({2, 2}, static_cast<double>(r), torch::kDouble);
  pg->all_reduce_sum({a, b});
  EXPECT_TRUE(torch::equal(a, torch::arange(6, torch::kFloat) * rank_sum)) << a;
  EXPECT_TRUE(torch::equal(b, torch::full({2, 2}, rank_sum - w, torch::kDouble))) << b;

  EXPECT_EQ(pg->all_reduce_sum_int(r + 1), w * (w + 1) / 2);
  EXPECT_EQ(pg->all_reduce_sum_ints({r, 1, r == 0 ? 1 : 0}), (std::vector<int64_t>{w * (w - 1) / 2, w, 1}));
  EXPECT_DOUBLE_EQ(pg->all_reduce_sum_double(0.5 * static_cast<double>(r + 1)), 0.5 * rank_sum);

  for (int64_t root = 0; root < w; ++root) {
    auto t = torch::full({3}, static_cast<double>(10 + r));
    pg->broadcast({t}, root);
    EXPECT_TRUE(torch::equal(t, torch::full({3}, static_cast<double>(10 + root)))) << "root " << root;
  }

  // all_gather: chunk q of the output is rank q's input.
  auto gathered = torch::empty({w * 2});
  pg->all_gather(torch::full({2}, static_cast<double>(r)), gathered);
  EXPECT_TRUE(torch::equal(gathered, torch::arange(w).repeat_interleave(2).to(torch::kFloat))) << gathered;

  // reduce_scatter: rank r keeps chunk r of the sum of all inputs (arange * (q + 1) over q).
  auto input = torch::arange(w * 2, torch::kFloat) * static_cast<double>(r + 1);
  auto mine = torch::empty({2});
  pg->reduce_scatter_sum(input, mine);
  EXPECT_TRUE(torch::equal(mine, torch::arange(r * 2, r * 2 + 2, torch::kFloat) * rank_sum)) << mine;

  pg->barrier();
  EXPECT_THROW(pg->all_reduce_sum({torch::zeros({4, 4}).t()}), gmsa::Error);  // not contiguous
}

void worker_gradsync() {
  auto pg = connect();
  const int64_t lo = 2 * pg->rank(), hi = lo + 2;
  Tiny m;
  const Batch b = make_batch(1);
  // The loss contract: every rank divides by the global token count before backward.
  const double total = static_cast<double>(pg->all_reduce_sum_int(target_tokens(b, lo, hi)));
  GradSync sync(*pg, m.tensors(), /*bucket_bytes=*/2048);
  // Two micro-batches: the first accumulates locally, hooks armed for the last one only.
  (nll_sum(m, b, lo, lo + 1) / total).backward();
  sync.start();
  (nll_sum(m, b, lo + 1, hi) / total).backward();
  sync.finish(1.0);
  EXPECT_GT(sync.num_buckets(), 3);
  EXPECT_GT(sync.launched_during_backward(), 0) << "no bucket went out during backward";
  NamedTensors grads;
  for (const auto& [n, t] : m.named)
    if (t.grad().defined()) grads.emplace_back(n, t.grad());
  save_safetensors(out_path("grads" + std::to_string(pg->rank()) + ".safetensors"), grads);
}

// kTrainSteps data-parallel steps (GradSync, clipping, ZeroAdamW sharded or not) on this rank's
// half of each batch, with the optimizer saved (gathered to rank 0), re-created and re-loaded
// half way: a stop and resume. Writes params<rank>.safetensors, state_mid/state_end (rank 0).
void train_data_parallel(ProcessGroup& pg, bool zero, const std::string& out) {
  const torch::Device device = pg.device();
  const int64_t rows = 4 / pg.world_size(), lo = rows * pg.rank(), hi = lo + rows;
  Tiny m(device);
  GradSync sync(pg, m.tensors(), /*bucket_bytes=*/4096);
  auto opt = std::make_unique<ZeroAdamW>(pg, m.named, kAdamW, zero);
  for (int64_t step = 0; step < kTrainSteps; ++step) {
    if (step == kTrainSteps / 2) {
      auto state = opt->state_tensors();
      if (pg.is_main()) save_safetensors(out + "/state_mid.safetensors", state);
      else if (opt->sharded()) EXPECT_TRUE(state.empty());
      pg.barrier();
      const int64_t done = opt->step_count();
      opt = std::make_unique<ZeroAdamW>(pg, m.named, kAdamW, zero);
      opt->load_state(read_all(out + "/state_mid.safetensors"), done);  // stays on the CPU
    }
    opt->zero_grad();
    const Batch b = make_batch(100 + step, device);
    const double total = static_cast<double>(pg.all_reduce_sum_int(target_tokens(b, lo, hi)));
    sync.start();
    (nll_sum(m, b, lo, hi) / total).backward();
    sync.finish(1.0);
    clip_grad_norm(m.tensors(), kClip);
    opt->step(kLr);
  }
  NamedTensors params;
  for (const auto& [n, t] : m.named) params.emplace_back(n, t.detach());
  save_safetensors(out + "/params" + std::to_string(pg.rank()) + ".safetensors", params);
  auto state = opt->state_tensors();
  if (pg.is_main()) save_safetensors(out + "/state_end.safetensors", state);
}

void worker_train() {
  auto pg = connect();
  EXPECT_EQ(pg->backend(), pg->device().is_cuda() ? "nccl" : "gloo");
  train_data_parallel(*pg, std::string(std::getenv(kZeroVar)) == "1", std::getenv(kOutVar));
}

// Rank 1 leaves (exits, hangs, or exits after reporting why); rank 0's next collective must fail
// within the timeout (plus the grace period) with a message naming rank 1.
void worker_fault(const std::string& mode) {
  auto pg = connect(milliseconds(kFaultTimeoutMs));
  pg->barrier();  // both connected
  if (pg->rank() == 1) {
    if (mode == "hang") std::this_thread::sleep_for(std::chrono::milliseconds(2 * kFaultTimeoutMs));
    if (mode == "report") pg->report_failure("data file train.jsonl is missing");
    std::_Exit(mode == "hang" ? 0 : 3);
  }
  const auto t0 = Clock::now();
  std::string message;
  try {
    pg->all_reduce_sum({torch::ones({1000})}, "all_reduce of the test");
  } catch (const gmsa::Error& e) {
    message = e.what();
  }
  std::ofstream(out_path("fault.txt")) << message << "\n" << seconds_since(t0) << "\n";
}

// ---------------------------------------------------------------------------------------------
// The parent side: start workers, wait, collect.

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot find a free port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct Outcome {
  std::vector<int> codes;  // exit status, 128 + signal, or -1 when killed at the deadline
  std::string logs;        // every worker's output, for failure messages
};

pid_t spawn_worker(const std::map<std::string, std::string>& vars, const std::string& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (!vars.count(kv.substr(0, kv.find('=')))) env.push_back(kv);
  }
  for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = std::filesystem::canonical("/proc/self/exe").string();
  std::string filter = "--gtest_filter=DistWorker.Run";
  char* argv[] = {exe.data(), filter.data(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn failed");
  return pid;
}

int wait_until(pid_t pid, Clock::time_point deadline) {
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Outcome run_workers(const std::string& scenario, int world, const std::string& out,
                    const std::map<std::string, std::string>& extra = {}, double limit_s = 60) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> vars = {
        {"RANK", std::to_string(r)},         {"WORLD_SIZE", std::to_string(world)},
        {"LOCAL_RANK", std::to_string(r)},   {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", std::to_string(port)}, {kWorkerVar, scenario},
        {kOutVar, out},                      {"OMP_NUM_THREADS", "1"}};
    vars.insert(extra.begin(), extra.end());
    pids.push_back(spawn_worker(vars, out + "/rank" + std::to_string(r) + ".log"));
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(limit_s * 1000));
  Outcome o;
  for (int r = 0; r < world; ++r) {
    o.codes.push_back(wait_until(pids[r], deadline));
    std::ifstream in(out + "/rank" + std::to_string(r) + ".log");
    o.logs += "---- rank " + std::to_string(r) + " ----\n" +
              std::string(std::istreambuf_iterator<char>(in), {});
  }
  return o;
}

void expect_close(const NamedTensors& got, const NamedTensors& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first) << what;
    ASSERT_EQ(got[i].second.sizes(), want[i].second.sizes()) << what << " " << want[i].first;
    // Both on the CPU: references may have been computed on a GPU.
    const double diff = (got[i].second.to(torch::kCPU, torch::kDouble) - want[i].second.to(torch::kCPU, torch::kDouble)).abs().max().item<double>();
    EXPECT_LE(diff, tol) << what << " " << want[i].first;
  }
}

}  // namespace

// =============================================================================================

TEST(DistWorker, Run) {
  const char* scenario = std::getenv(kWorkerVar);
  if (!scenario) GTEST_SKIP() << "worker mode of the distributed tests (started by the Dist* tests)";
  at::set_num_threads(1);
  const std::string s = scenario;
  if (s == "collectives") worker_collectives();
  else if (s == "gradsync") worker_gradsync();
  else if (s == "train") worker_train();
  else if (s.rfind("fault_", 0) == 0) worker_fault(s.substr(6));
  else FAIL() << "unknown scenario " << s;
}

// ---- environment ----

namespace {
EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string env_error(std::map<std::string, std::string> vars) {
  try {
    detect_dist_env(fake_env(std::move(vars)));
  } catch (const gmsa::Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST(DistEnv, SingleProcessWithoutLauncherVariables) {
  auto e = detect_dist_env(fake_env({{"HOME", "/root"}}));
  EXPECT_EQ(e.source, "single");
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
}

TEST(DistEnv, TorchrunVariablesWinOverSlurm) {
  auto e = detect_dist_env(fake_env({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                                     {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "1234"},
                                     {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}));
  EXPECT_EQ(e.source, "torchrun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 1234);
  // Defaults: local rank = rank, loopback, port 29500.
  auto d = detect_dist_env(fake_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}}));
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.master_addr, "127.0.0.1");
  EXPECT_EQ(d.master_port, 29500);
}

TEST(DistEnv, Slurm) {
  auto e = detect_dist_env(fake_env({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "1"},
                                     {"SLURM_JOB_NODELIST", "gpu[03-04,07],cpu1"}, {"SLURM_JOB_ID", "123456"}}));
  EXPECT_EQ(e.source, "slurm");
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "gpu03");
  EXPECT_EQ(e.master_port, 29500 + 456);  // 123456 % 1000
  auto m = detect_dist_env(fake_env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
                                     {"SLURM_JOB_NODELIST", "a,b"}, {"MASTER_ADDR", "head"}, {"MASTER_PORT", "4000"}}));
  EXPECT_EQ(m.master_addr, "head");
  EXPECT_EQ(m.master_port, 4000);
}

TEST(DistEnv, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("a,b"), "a");
  EXPECT_EQ(first_slurm_host("plain"), "plain");
  EXPECT_EQ(first_slurm_host("node[01-04,07]"), "node01");
  EXPECT_EQ(first_slurm_host("node[7,1-3],x[1-2]"), "node7");
  EXPECT_EQ(first_slurm_host("rack[1-2]-n[07,09],x"), "rack1-n07");
  EXPECT_THROW(first_slurm_host("n[01-02"), gmsa::Error);
  EXPECT_THROW(first_slurm_host("n]1["), gmsa::Error);
  EXPECT_THROW(first_slurm_host("n[a-b]"), gmsa::Error);
  EXPECT_THROW(first_slurm_host(",a"), gmsa::Error);
}

TEST(DistEnv, ClearErrors) {
  EXPECT_NE(env_error({{"RANK", "abc"}, {"WORLD_SIZE", "2"}}).find("RANK=abc: not an integer"), std::string::npos);
  EXPECT_NE(env_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK=2 is outside [0, WORLD_SIZE=2)"),
            std::string::npos);
  EXPECT_NE(env_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("at least 1"), std::string::npos);
  EXPECT_NE(env_error({{"RANK", "0"}}).find("WORLD_SIZE is unset"), std::string::npos);
  EXPECT_NE(env_error({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "70000"}}).find("MASTER_PORT=70000"),
            std::string::npos);
  EXPECT_NE(env_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}).find("SLURM_JOB_NODELIST"),
            std::string::npos);
  EXPECT_NE(env_error({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
                       {"SLURM_JOB_NODELIST", "a"}}).find("SLURM_PROCID=3"), std::string::npos);
}

// ---- the single-process group ----

TEST(DistSingle, OperationsAreLocal) {
  auto pg = ProcessGroup::single();
  EXPECT_FALSE(pg->distributed());
  EXPECT_EQ(pg->world_size(), 1);
  auto t = torch::arange(4, torch::kFloat);
  pg->all_reduce_sum({t});
  pg->broadcast({t});
  pg->barrier();
  EXPECT_TRUE(torch::equal(t, torch::arange(4, torch::kFloat)));
  EXPECT_EQ(pg->all_reduce_sum_int(7), 7);
  auto out = torch::zeros({4});
  pg->reduce_scatter_sum(t, out);
  EXPECT_TRUE(torch::equal(out, t));
  out.zero_();
  pg->all_gather(t, out);
  EXPECT_TRUE(torch::equal(out, t));
  EXPECT_THROW(pg->all_gather(t, torch::zeros({3})), gmsa::Error);
}

TEST(DistSingle, GradSyncOnlyScalesAndZeroAdamWIsAdamW) {
  auto pg = ProcessGroup::single();
  Tiny a, b;
  const Batch batch = make_batch(1);
  GradSync sync(*pg, a.tensors());
  EXPECT_EQ(sync.num_buckets(), 0);
  ZeroAdamW zopt(*pg, a.named, kAdamW);
  AdamW ref(b.named, kAdamW);
  for (int step = 0; step < 2; ++step) {
    zopt.zero_grad();
    ref.zero_grad();
    sync.start();
    nll_sum(a, batch, 0, 4).backward();
    sync.finish(0.25);
    (nll_sum(b, batch, 0, 4) * 0.25).backward();
    zopt.step(kLr);
    ref.step(kLr);
  }
  for (size_t i = 0; i < a.named.size(); ++i)
    EXPECT_TRUE(torch::allclose(a.named[i].second, b.named[i].second, 1e-6, 1e-7)) << a.named[i].first;
  EXPECT_FALSE(a.unused.grad().defined());
  EXPECT_EQ(zopt.state_tensors().size(), ref.state_tensors().size());
}

TEST(DistZero, GreedyPartition) {
  // Largest first to the least-loaded rank: 10 -> r0; 7 -> r1; 3 (i3) -> r1 (7 < 10);
  // 3 (i4) -> r0 (10 = 10, lowest rank); 1 -> r1 (11 < 13).
  EXPECT_EQ(ZeroAdamW::partition({10, 1, 7, 3, 3}, 2), (std::vector<int64_t>{0, 1, 1, 1, 0}));
  EXPECT_EQ(ZeroAdamW::partition({5, 5}, 4), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(ZeroAdamW::partition({5, 5, 5}, 1), (std::vector<int64_t>{0, 0, 0}));
}

// ---- two processes over Gloo ----

TEST(DistGloo, Collectives) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  TempDir dir;
  auto o = run_workers("collectives", 2, dir.path.string());
  EXPECT_EQ(o.codes, (std::vector<int>{0, 0})) << o.logs;
}

TEST(DistGloo, GradSyncEqualsOneProcessOnTheWholeBatch) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  TempDir dir;
  auto o = run_workers("gradsync", 2, dir.path.string());
  ASSERT_EQ(o.codes, (std::vector<int>{0, 0})) << o.logs;
  // Reference: the whole batch in one backward, mean over its 28 target tokens.
  Tiny m;
  const Batch b = make_batch(1);
  ASSERT_EQ(target_tokens(b, 0, 4), 28);
  (nll_sum(m, b, 0, 4) / 28.0).backward();
  NamedTensors want;
  for (const auto& [n, t] : m.named)
    if (t.grad().defined()) want.emplace_back(n, t.grad());
  ASSERT_EQ(want.front().first, "gate");  // `unused` has no gradient, `gate` one from row 0 only
  for (int r = 0; r < 2; ++r)
    expect_close(read_all(dir / ("grads" + std::to_string(r) + ".safetensors")), want, 1e-6,
                 "rank " + std::to_string(r));
}

namespace {
// One process, whole batches, plain AdamW: what both data-parallel variants must reproduce.
struct Reference {
  NamedTensors params, state_mid, state_end;
};

Reference reference_training(torch::Device device = torch::kCPU) {
  Tiny m(device);
  AdamW opt(m.named, kAdamW);
  Reference ref;
  for (int64_t step = 0; step < kTrainSteps; ++step) {
    if (step == kTrainSteps / 2)
      for (const auto& [n, t] : opt.state_tensors()) ref.state_mid.emplace_back(n, t.clone());
    opt.zero_grad();
    const Batch b = make_batch(100 + step, device);
    (nll_sum(m, b, 0, 4) / static_cast<double>(target_tokens(b, 0, 4))).backward();
    clip_grad_norm(m.tensors(), kClip);
    opt.step(kLr);
  }
  for (const auto& [n, t] : m.named) ref.params.emplace_back(n, t.detach());
  ref.state_end = opt.state_tensors();
  return ref;
}

void check_training(const std::string& dir, int world, const Reference& ref, double state_tol) {
  // Gradients agree to ~1e-8 (GradSync test) and so do the moments (below), but Adam's update
  // lr * m / (sqrt(v) + eps) turns a 1e-9 rounding difference in a gradient entry of size ~eps
  // (rare embedding rows) into a ~1e-6 difference in the weight; typical entries differ by 1e-7
  // (up to 3.1e-5 with OpenBLAS on an AVX-512 machine, whose kernels sum in another order).
  // Adam is nearly blind to the gradients' scale: the moments' tight check catches scale errors.
  for (int r = 0; r < world; ++r)
    expect_close(read_all(dir + "/params" + std::to_string(r) + ".safetensors"), ref.params, 1e-4,
                 "parameters of rank " + std::to_string(r));
  // The checkpointed state has AdamW's names, order and values: checkpoints are interchangeable.
  expect_close(read_all(dir + "/state_mid.safetensors"), ref.state_mid, state_tol, "state after 2 steps");
  expect_close(read_all(dir + "/state_end.safetensors"), ref.state_end, state_tol, "final state");
}

void check_gloo_training(bool zero) {
  TempDir dir;
  auto o = run_workers("train", 2, dir.path.string(), {{kZeroVar, zero ? "1" : "0"}});
  ASSERT_EQ(o.codes, (std::vector<int>{0, 0})) << o.logs;
  check_training(dir.path.string(), 2, reference_training(), 1e-7);
}
}  // namespace

TEST(DistGloo, DataParallelAdamWWithResumeEqualsOneProcess) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  check_gloo_training(/*zero=*/false);
}

TEST(DistGloo, ZeroOneWithResumeEqualsOneProcess) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  check_gloo_training(/*zero=*/true);
}

// ---- NCCL (skipped without CUDA GPUs and a LibTorch with NCCL) ----
// CUDA kernels (embedding backward, reductions) are not bitwise deterministic: looser moments.

TEST(DistNccl, WorldOfOneMatchesTheSingleProcessRun) {
  if (!ProcessGroup::has_backend("nccl") || !torch::cuda::is_available())
    GTEST_SKIP() << "needs a CUDA GPU and a LibTorch with NCCL";
  DistEnv env;
  env.source = "torchrun";  // a real group of one, not single()
  env.master_port = free_port();
  auto pg = ProcessGroup::create(env, torch::Device(torch::kCUDA, 0), milliseconds(60000));
  ASSERT_EQ(pg->backend(), "nccl");
  TempDir dir;
  train_data_parallel(*pg, /*zero=*/true, dir.path.string());
  check_training(dir.path.string(), 1, reference_training(torch::Device(torch::kCUDA, 0)), 1e-6);
}

TEST(DistNccl, TwoGpusMatchOneWithZeroOne) {
  if (!ProcessGroup::has_backend("nccl") || torch::cuda::device_count() < 2)
    GTEST_SKIP() << "needs 2 CUDA GPUs and a LibTorch with NCCL";
  TempDir dir;
  auto o = run_workers("train", 2, dir.path.string(), {{kZeroVar, "1"}, {kDeviceVar, "cuda"}}, 120);
  ASSERT_EQ(o.codes, (std::vector<int>{0, 0})) << o.logs;
  check_training(dir.path.string(), 2, reference_training(torch::Device(torch::kCUDA, 0)), 1e-6);
}

namespace {
// Runs a fault scenario; returns rank 0's error message and how long its collective took.
std::pair<std::string, double> fault(const std::string& mode, int expected_rank1_code) {
  TempDir dir;
  auto o = run_workers("fault_" + mode, 2, dir.path.string(), {}, 30);
  EXPECT_EQ(o.codes, (std::vector<int>{0, expected_rank1_code})) << o.logs;
  std::ifstream in(dir / "fault.txt");
  std::string message;
  double seconds = -1;
  std::getline(in, message);
  in >> seconds;
  return {message, seconds};
}
// Gloo's own timeout, then up to half of it waiting for peers to check in, plus slack.
constexpr double kFaultLimitS = 1.5 * kFaultTimeoutMs / 1000.0 + 2.0;
}  // namespace

TEST(DistFault, DeadRankIsNamedWithinTheTimeout) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  auto [message, seconds] = fault("exit", 3);
  EXPECT_NE(message.find("all_reduce of the test"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 1 did not answer"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0 stops"), std::string::npos) << message;
  EXPECT_GE(seconds, 0);
  EXPECT_LT(seconds, kFaultLimitS) << message;
}

TEST(DistFault, HungRankIsNamedAfterTheTimeout) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  auto [message, seconds] = fault("hang", 0);
  EXPECT_NE(message.find("rank 1 did not answer"), std::string::npos) << message;
  EXPECT_NE(message.find("timeout 3 s"), std::string::npos) << message;
  EXPECT_GE(seconds, 0.9 * kFaultTimeoutMs / 1000.0) << message;  // it waited for the timeout
  EXPECT_LT(seconds, kFaultLimitS) << message;
}

TEST(DistFault, ReportedFailureIsQuoted) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  auto [message, seconds] = fault("report", 3);
  EXPECT_NE(message.find("rank 1 failed: data file train.jsonl is missing"), std::string::npos) << message;
  EXPECT_EQ(message.find("did not answer"), std::string::npos) << message;
  EXPECT_LT(seconds, kFaultLimitS) << message;
}

TEST(DistRendezvous, MissingPeerTimesOutWithAMessage) {
  if (!ProcessGroup::has_backend("gloo")) GTEST_SKIP() << "this LibTorch has no Gloo";
  DistEnv env;
  env.source = "torchrun";
  env.world_size = 2;
  env.master_port = free_port();
  const auto t0 = Clock::now();
  try {
    ProcessGroup::create(env, torch::kCPU, milliseconds(1000));
    FAIL() << "rendezvous without rank 1 succeeded";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rendezvous at 127.0.0.1:"), std::string::npos) << e.what();
  }
  EXPECT_LT(seconds_since(t0), 10.0);
}

// ---- scripts/launch.sh ----

namespace {
std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  while (p && std::fgets(buf, sizeof(buf), p)) out += buf;
  const int status = p ? ::pclose(p) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string launch_script() {
  const char* src = std::getenv("GMSA_SOURCE_DIR");
  return src ? std::string(src) + "/scripts/launch.sh" : std::string();
}
}  // namespace

TEST(DistLaunch, SetsTheEnvironmentAndPrefixesOutput) {
  if (launch_script().empty()) GTEST_SKIP() << "GMSA_SOURCE_DIR is unset (ctest sets it)";
  auto [code, out] = shell("bash " + launch_script() +
                           " -n 3 --master-port 12345 -- sh -c 'echo \"$RANK/$WORLD_SIZE/$LOCAL_RANK/$MASTER_ADDR:$MASTER_PORT\"'");
  EXPECT_EQ(code, 0) << out;
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(out.find(fmt::format("[rank {}] {}/3/{}/127.0.0.1:12345\n", r, r, r)), std::string::npos) << out;
}

TEST(DistLaunch, OneFailureStopsTheOthersAndPassesItsCode) {
  if (launch_script().empty()) GTEST_SKIP() << "GMSA_SOURCE_DIR is unset (ctest sets it)";
  const auto t0 = Clock::now();
  auto [code, out] = shell("bash " + launch_script() +
                           " -n 2 -- sh -c 'if [ \"$RANK\" = 1 ]; then sleep 0.5; exit 3; fi; sleep 30'");
  EXPECT_EQ(code, 3) << out;
  EXPECT_LT(seconds_since(t0), 15.0) << out;
  EXPECT_NE(out.find("launch.sh: rank 1 exited with code 3"), std::string::npos) << out;
}
