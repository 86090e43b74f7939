#pragma once
// Deterministic, resumable batch sampling over a dataset of known example lengths.
//
// Randomness is fully specified so a run reproduces on any standard library:
// std::mt19937_64 (its output sequence is fixed by the C++ standard), seeded per purpose with
// mix_seed(); integers in [0, n) by rejection sampling (uniform_below); permutations by our own
// Fisher-Yates (fisher_yates). std::shuffle / std::uniform_int_distribution are avoided because
// their algorithms are implementation-defined.
//
// Epoch e of the GLOBAL batch sequence (what a single process sees):
//   1. order = 0..n-1, Fisher-Yates shuffled with mix_seed(seed, 2e) when `shuffle`.
//   2. when `bucket`: cut the order into windows of bucket_window_batches * batch_size, stably
//      sort each window by length; batches are then consecutive slices, so they hold similar
//      lengths; then (when `shuffle`) the batch order is Fisher-Yates shuffled with
//      mix_seed(seed, 2e+1) so training does not see lengths in sorted runs.
//   3. the order is cut into batches of batch_size; a final short batch is kept unless
//      drop_last (with bucketing only the last window can end short).
// Sharding: rank r of world_size takes global batches r, r+W, r+2W, ...: the ranks' batches
// together are exactly the global sequence. Ranks may then differ by one batch per epoch;
// even_shards drops the global tail that does not fill a round of W so all ranks agree (what
// lock-step data parallelism needs).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace gmsa {

// A well-mixed 64-bit seed for stream `stream` of `seed` (SplitMix64 finalizer).
uint64_t mix_seed(uint64_t seed, uint64_t stream);

// Uniform integer in [0, n) (n > 0), unbiased by rejection.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);

// In-place Fisher-Yates: for i = size-1 down to 1, swap v[i] with v[uniform_below(i + 1)].
template <typename T>
void fisher_yates(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

struct SamplerOptions {
  int64_t batch_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool bucket = false;
  int64_t bucket_window_batches = 50;  // window = this many batches
  bool drop_last = false;
  int64_t rank = 0;
  int64_t world_size = 1;
  bool even_shards = false;
};

// Where the sampler stands. `cursor` counts GLOBAL batches of `epoch` already handed out to
// all ranks (a multiple of world_size between rounds), so every rank saves the same state and a
// run may resume with another world size. (Without even_shards, the ranks that get a batch in
// an epoch's short last round are one state behind the others until they have taken it.)
// `fingerprint` hashes the example count, the lengths when bucketing, and the options other
// than rank / world size; restore() refuses a state from a different configuration.
struct SamplerState {
  int64_t epoch = 0;
  int64_t cursor = 0;
  uint64_t fingerprint = 0;

  nlohmann::json to_json() const;  // {"epoch", "cursor", "fingerprint": hex}
  static SamplerState from_json(const nlohmann::json& j);  // throws gmsa::Error on bad input
  bool operator==(const SamplerState& o) const {
    return epoch == o.epoch && cursor == o.cursor && fingerprint == o.fingerprint;
  }
};

class BatchSampler {
 public:
  BatchSampler(std::vector<int64_t> lengths, SamplerOptions options);

  // This rank's next batch of example indices; moves to the next epoch when this one is done.
  std::vector<int64_t> next_batch();

  SamplerState state() const;
  void restore(const SamplerState& state);

  int64_t epoch() const { return epoch_; }
  int64_t num_examples() const { return static_cast<int64_t>(lengths_.size()); }
  // Global batches per epoch (after drop_last / even_shards) and this rank's share.
  int64_t global_batches_per_epoch() const { return global_batches_; }
  int64_t batches_per_epoch() const;
  // The whole global batch sequence of one epoch (for inspection and tests).
  std::vector<std::vector<int64_t>> epoch_batches(int64_t epoch) const;

 private:
  void load_epoch(int64_t epoch);
  void roll_over_if_done();

  std::vector<int64_t> lengths_;
  SamplerOptions opt_;
  uint64_t fingerprint_;
  int64_t global_batches_ = 0;
  int64_t epoch_ = 0;
  int64_t cursor_ = 0;  // next global batch index for rank 0 of this round
  int64_t loaded_epoch_ = -1;
  std::vector<std::vector<int64_t>> batches_;  // epoch_'s global sequence
};

}  // namespace gmsa
