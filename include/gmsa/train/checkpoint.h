#pragma once
// Crash-safe checkpoint directories, JSON helpers, and random-generator snapshots.
//
// Layout: <run_dir>/checkpoints/step-00000123/ (8 digits, more if needed) holding whatever the
// writer put there plus a COMPLETE marker ({"step": 123, "time": "<UTC ISO 8601>"}). A save
// writes into .tmp-step-00000123/, writes COMPLETE last, fsyncs every file and directory,
// renames the directory into place (atomic) and fsyncs the parent. So a crash at any point
// leaves either the old set of checkpoints or the new one, never a half checkpoint that
// latest() would return. Only one process (rank 0) may save into a run directory.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace gmsa {

class CheckpointManager {
 public:
  // keep_last <= 0 keeps every checkpoint. Nothing is created until the first save.
  CheckpointManager(std::string run_dir, int64_t keep_last);

  // Creates the checkpoint of `step`: `write(tmp_dir)` fills a fresh temporary directory; if it
  // throws, the directory is removed and the exception passes on (earlier checkpoints are
  // untouched). Before writing, leftovers of interrupted saves (.tmp-*, step dirs without
  // COMPLETE) are removed; afterwards the oldest complete checkpoints are pruned to keep_last,
  // never the one just written. Saving a step that exists replaces it: the old directory is
  // renamed to .old-step-*, the new one renamed in, the old one deleted (a crash in between is
  // repaired by the next save, which renames the old one back). Returns the final directory.
  std::string save(int64_t step, const std::function<void(const std::string& tmp_dir)>& write);

  // The complete checkpoint with the highest step, if any.
  std::optional<std::string> latest() const;
  // All complete checkpoint directories, ascending by step.
  std::vector<std::string> complete() const;

  // <run_dir>/checkpoints
  const std::string& dir() const { return dir_; }
  // The step encoded in a checkpoint directory's name ("./step-00000123" -> 123).
  static std::optional<int64_t> step_of(const std::string& checkpoint_dir);

 private:
  void remove_leftovers() const;
  void prune(const std::string& keep) const;

  std::string run_dir_, dir_;
  int64_t keep_last_;
};

// Writes `j` (2-space indented) through a temporary file + rename, then fsyncs the directory.
void save_json_atomic(const std::string& path, const nlohmann::json& j);
// Parses a JSON file; a missing file or a syntax error throws gmsa::Error naming the path and,
// for syntax errors, the line and column.
nlohmann::json load_json(const std::string& path);

// The state of the torch default generators (CPU, and the current CUDA device when CUDA is
// available) plus an optional std::mt19937_64 of the caller.
struct RngSnapshot {
  torch::Tensor cpu;
  torch::Tensor cuda;  // undefined without CUDA
  std::string mt;      // std::mt19937_64 state written with operator<<; empty if not captured
};

RngSnapshot capture_rng();
RngSnapshot capture_rng(const std::mt19937_64& mt);
// Restores the torch generators. A snapshot with a CUDA state restored where CUDA is
// unavailable (or vice versa) restores what both have and ignores the rest.
void restore_rng(const RngSnapshot& snapshot);
// Also restores `mt`; throws gmsa::Error if the snapshot holds no valid mt19937_64 state.
void restore_rng(const RngSnapshot& snapshot, std::mt19937_64& mt);

// {"cpu": "<hex bytes>", "cuda": "<hex bytes>" or null, "mt": "..."} for trainer-state files.
nlohmann::json rng_to_json(const RngSnapshot& snapshot);
RngSnapshot rng_from_json(const nlohmann::json& j);

}  // namespace gmsa
