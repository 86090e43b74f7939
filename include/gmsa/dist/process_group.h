#pragma once
// A c10d process group for data-parallel training: Gloo for CPU tensors, NCCL for CUDA tensors,
// rendezvous through a TCPStore that rank 0 hosts at MASTER_ADDR:MASTER_PORT.
//
// Every operation is a collective: all ranks call the same operations in the same order with
// tensors of the same shapes and dtypes. Tensors must be dense and contiguous, on the group's
// device. A failure or a timeout throws gmsa::Error naming the operation and the ranks that did
// not answer, e.g.
//   "all_reduce (gradient bucket 3/7, collective #812): rank 1 did not answer (exited or hung;
//    timeout 30 s); rank 0 stops. Cause: Connection closed by peer [127.0.0.1]:40123"
// After such an error the group is unusable; the process should exit.
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmsa/dist/env.h"

namespace gmsa::dist {

class ProcessGroup;

// An operation in flight. wait() blocks until it is done (and throws like the blocking calls);
// it is idempotent. Destroying a handle does not wait.
class PendingOp {
 public:
  PendingOp() = default;
  void wait();
  bool valid() const { return state_ != nullptr; }

 private:
  friend class ProcessGroup;
  struct State;
  PendingOp(ProcessGroup* group, std::shared_ptr<State> state) : group_(group), state_(std::move(state)) {}
  ProcessGroup* group_ = nullptr;
  std::shared_ptr<State> state_;
};

class ProcessGroup {
 public:
  // The world-size-1 group of a plain run: no store, no backend; every operation returns at
  // once (reductions and gathers of one rank are copies at most).
  static std::unique_ptr<ProcessGroup> single(torch::Device device = torch::kCPU);
  // Rendezvous of env.world_size processes (this one is env.rank). `device`: CPU -> Gloo,
  // CUDA -> NCCL (if this LibTorch has it; else an error). `timeout` bounds the rendezvous and
  // every operation. A world size of 1 still builds a real group (to exercise the path).
  static std::unique_ptr<ProcessGroup> create(const DistEnv& env, torch::Device device,
                                              std::chrono::milliseconds timeout);
  // single() for env.source == "single", create() otherwise.
  static std::unique_ptr<ProcessGroup> from_env(const DistEnv& env, torch::Device device,
                                                std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const;
  int64_t world_size() const;
  bool is_main() const { return rank() == 0; }
  // "none" (single), "gloo" or "nccl".
  const std::string& backend() const;
  // False for single(): callers may skip work that only matters with peers.
  bool distributed() const { return backend() != "none"; }
  torch::Device device() const;
  std::chrono::milliseconds timeout() const;
  // Which compiled-in backends exist ("gloo", "nccl"), for messages and tests.
  static bool has_backend(const std::string& name);

  // In-place sum over ranks, one collective per tensor. `what` names the operation in errors.
  PendingOp all_reduce_sum_async(const std::vector<torch::Tensor>& tensors, const std::string& what);
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors, const std::string& what = "all_reduce");
  // Sums of numbers over ranks (exact for integers), e.g. {target tokens, stop requested}.
  int64_t all_reduce_sum_int(int64_t value, const std::string& what = "all_reduce of a count");
  std::vector<int64_t> all_reduce_sum_ints(const std::vector<int64_t>& values,
                                           const std::string& what = "all_reduce of counts");
  double all_reduce_sum_double(double value, const std::string& what = "all_reduce of a value");
  // Every rank's tensors take root's values, in place.
  PendingOp broadcast_async(const std::vector<torch::Tensor>& tensors, int64_t root,
                            const std::string& what);
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t root = 0,
                 const std::string& what = "broadcast");
  void barrier(const std::string& what = "barrier");
  // Flat buffers (ZeRO): `input` has world_size * n elements, `output` n. reduce_scatter_sum
  // leaves in `output` the sum over ranks of input's chunk number rank(); `input` is clobbered
  // (Gloo has no reduce-scatter: it all-reduces `input` in place). all_gather writes rank r's
  // `input` into chunk r of `output`.
  void reduce_scatter_sum(const torch::Tensor& input, const torch::Tensor& output,
                          const std::string& what = "reduce_scatter");
  void all_gather(const torch::Tensor& input, const torch::Tensor& output,
                  const std::string& what = "all_gather");

  // Leaves `reason` in the store for the peers' error messages ("rank 1 failed: <reason>"):
  // call it when this rank is about to exit with an error of its own. Never throws.
  void report_failure(const std::string& reason) noexcept;

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  friend class PendingOp;
  void wait(PendingOp::State& op);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gmsa::dist
