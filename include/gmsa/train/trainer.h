#pragma once
// The training loop shared by every stage: data -> micro-batches -> loss normalised by the
// target tokens of the whole accumulated batch -> clipped AdamW update -> logs, evaluation,
// atomic checkpoints, exact resume. A run config may chain stages; each starts from the
// previous stage's result.
#include <atomic>
#include <string>
#include <vector>

#include "gmsa/config/run_config.h"

namespace gmsa {

struct TrainOptions {
  std::string resume_dir;       // --resume RUN_DIR (else resume per train.resume)
  int64_t stop_after_step = -1; // stop (with a checkpoint) once this many steps are done; tests
};

struct StageSummary {
  std::string name;
  std::string dir;              // the stage's run directory
  std::string output;           // final result: compressor dir or HF model dir
  int64_t steps = 0;
  std::vector<double> losses;   // per step, mean target-token loss
  bool completed = false;       // false when stopped early (signal, stop_after_step)
};

// Runs every stage of a loaded config (top-level + chain). Returns one summary per stage run.
std::vector<StageSummary> train(const std::vector<RunConfig>& stages, const TrainOptions& opts = {});

// Set by SIGINT/SIGTERM: the loop saves a checkpoint and returns; a second signal exits at once.
void install_signal_handlers();
extern std::atomic<bool> g_stop_requested;

}  // namespace gmsa
