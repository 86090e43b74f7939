#pragma once
// ZeRO stage 1 for the trainer's AdamW: the optimizer state (two fp32 moments per parameter,
// twice the parameters' memory) is split across ranks; gradients and parameters stay whole on
// every rank.
//
// Whole parameters are assigned to ranks by a greedy balanced partition (largest first, each to
// the rank with the fewest elements so far; ties to the lowest rank), identical on every rank.
// step(lr): every rank runs gmsa::AdamW (the same code, so the same numbers) on the parameters
// it owns, then each parameter is broadcast from its owner. Gradients must already be summed
// over ranks (GradSync): the trainer needs the full gradients anyway for the global gradient
// norm and the finiteness check. Communication per step: DDP's all-reduce plus one broadcast of
// the parameters (about 1.5x DDP's volume).
//
// Checkpoints are identical to non-ZeRO ones: state_tensors() gathers the full state to rank 0
// (collective: every rank must call it; the others get an empty list), and load_state() takes
// the full state on every rank and keeps its own shard (the tensors may stay on the CPU).
//
// With shard = false (or a single() group) every rank owns everything: plain AdamW, no
// communication, so the trainer can use this one type in every mode.
#include <cstdint>
#include <string>
#include <vector>

#include "gmsa/dist/process_group.h"
#include "gmsa/train/optimizer.h"

namespace gmsa::dist {

class ZeroAdamW {
 public:
  ZeroAdamW(ProcessGroup& pg, NamedTensors params, AdamWOptions options, bool shard = true);

  // AdamW on the own shard (every call advances step_count()), then the parameter broadcast.
  void step(double lr);
  // AdamW::step(lr, skip) on the own shard (skip: 0-dim fp32, 1 = leave everything unchanged;
  // no host read on the fused CUDA path), then the broadcast. The flag must agree on all ranks
  // (the trainer derives it from all-reduced values). A CPU flag of 1 returns at once.
  void step(double lr, const torch::Tensor& skip);
  // Drops every parameter's gradient (all ranks hold all gradients).
  void zero_grad();
  // Lazily brought up to date after step(lr, skip) on the device: see AdamW::step_count().
  int64_t step_count() const { return local_.step_count(); }

  // The full state under AdamW's names ("exp_avg/<param>", "exp_avg_sq/<param>", same order) on
  // rank 0 (own shard: live tensors; the rest: CPU copies), empty on other ranks. Collective.
  NamedTensors state_tensors();
  // This rank's shard only (live tensors).
  NamedTensors local_state_tensors() const { return local_.state_tensors(); }
  // `state`: the full state as state_tensors() returned it (e.g. read from the checkpoint by
  // every rank). Validates all of it like AdamW::load_state, then copies the own shard.
  void load_state(const NamedTensors& state, int64_t step_count);

  bool decays(const std::string& name) const;
  const NamedTensors& params() const { return params_; }
  const AdamWOptions& options() const { return local_.options(); }
  bool sharded() const { return shard_; }
  // The rank that updates params()[i].
  int64_t owner(size_t i) const { return owner_[i]; }
  // Greedy balanced partition of parameters with these element counts over `world` ranks.
  static std::vector<int64_t> partition(const std::vector<int64_t>& numels, int64_t world);

 private:
  void broadcast_params();  // each parameter from its owner (nothing without sharding)

  ProcessGroup& pg_;
  bool shard_;
  NamedTensors params_;
  std::vector<int64_t> owner_;
  AdamW local_;
};

}  // namespace gmsa::dist
