#include "gmsa/data/sampler.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "gmsa/util/error.h"

namespace gmsa {

uint64_t mix_seed(uint64_t seed, uint64_t stream) {
  // SplitMix64 step on (seed, stream): consecutive streams give unrelated seeds.
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  GMSA_CHECK(n > 0, "uniform_below: empty range");
  // Accept only draws below the largest multiple of n, so every residue is equally likely.
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

namespace {

uint64_t fnv1a(uint64_t h, uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    h ^= (value >> (8 * i)) & 0xFF;
    h *= 0x100000001B3ULL;
  }
  return h;
}

uint64_t fingerprint_of(const std::vector<int64_t>& lengths, const SamplerOptions& o) {
  uint64_t h = 0xCBF29CE484222325ULL;
  h = fnv1a(h, lengths.size());
  // Lengths shape the sequence only through bucketing; without it a changed length (say, a new
  // truncation limit) leaves the batches, and so a saved position, valid.
  if (o.bucket) {
    for (int64_t len : lengths) h = fnv1a(h, static_cast<uint64_t>(len));
  }
  for (uint64_t v : {static_cast<uint64_t>(o.batch_size), o.seed, uint64_t{o.shuffle},
                     uint64_t{o.bucket}, static_cast<uint64_t>(o.bucket_window_batches),
                     uint64_t{o.drop_last}, uint64_t{o.even_shards}}) {
    h = fnv1a(h, v);
  }
  return h;
}

}  // namespace

nlohmann::json SamplerState::to_json() const {
  return {
      {"epoch", epoch}, {"cursor", cursor}, {"fingerprint", fmt::format("{:016x}", fingerprint)}};
}

SamplerState SamplerState::from_json(const nlohmann::json& j) {
  auto int_field = [&](const char* key) {
    GMSA_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer(),
               "sampler state: field \"{}\" must be an integer", key);
    return j[key].get<int64_t>();
  };
  SamplerState s;
  s.epoch = int_field("epoch");
  s.cursor = int_field("cursor");
  GMSA_CHECK(j.contains("fingerprint") && j["fingerprint"].is_string(),
             "sampler state: field \"fingerprint\" must be a hex string");
  const std::string hex = j["fingerprint"].get<std::string>();
  size_t used = 0;
  try {
    s.fingerprint = std::stoull(hex, &used, 16);
  } catch (const std::exception&) {
    used = 0;
  }
  GMSA_CHECK(!hex.empty() && used == hex.size(), "sampler state: bad fingerprint \"{}\"", hex);
  return s;
}

BatchSampler::BatchSampler(std::vector<int64_t> lengths, SamplerOptions options)
    : lengths_(std::move(lengths)), opt_(options), fingerprint_(fingerprint_of(lengths_, opt_)) {
  const int64_t n = num_examples();
  GMSA_CHECK(n > 0, "batch sampler: the dataset is empty");
  GMSA_CHECK(opt_.batch_size > 0, "batch sampler: batch_size must be > 0, got {}", opt_.batch_size);
  GMSA_CHECK(opt_.bucket_window_batches > 0, "batch sampler: bucket_window_batches must be > 0");
  GMSA_CHECK(opt_.world_size > 0 && opt_.rank >= 0 && opt_.rank < opt_.world_size,
             "batch sampler: rank {} is not in [0, world_size={})", opt_.rank, opt_.world_size);
  global_batches_ =
      opt_.drop_last ? n / opt_.batch_size : (n + opt_.batch_size - 1) / opt_.batch_size;
  if (opt_.even_shards) global_batches_ -= global_batches_ % opt_.world_size;
  GMSA_CHECK(global_batches_ >= opt_.world_size,
             "batch sampler: {} examples make {} batches of {}, fewer than world_size {}", n,
             global_batches_, opt_.batch_size, opt_.world_size);
}

int64_t BatchSampler::batches_per_epoch() const {
  // Global indices r, r+W, ... below global_batches_.
  return (global_batches_ - opt_.rank + opt_.world_size - 1) / opt_.world_size;
}

std::vector<std::vector<int64_t>> BatchSampler::epoch_batches(int64_t epoch) const {
  const int64_t n = num_examples();
  const int64_t bs = opt_.batch_size;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const uint64_t e = static_cast<uint64_t>(epoch);
  if (opt_.shuffle) {
    std::mt19937_64 rng(mix_seed(opt_.seed, 2 * e));
    fisher_yates(order, rng);
  }
  if (opt_.bucket) {
    const int64_t window = opt_.bucket_window_batches * bs;
    for (int64_t start = 0; start < n; start += window) {
      auto first = order.begin() + start;
      auto last = order.begin() + std::min(n, start + window);
      std::stable_sort(first, last,
                       [&](int64_t a, int64_t b) { return lengths_[a] < lengths_[b]; });
    }
  }
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = 0; start < n; start += bs) {
    batches.emplace_back(order.begin() + start, order.begin() + std::min(n, start + bs));
  }
  if (opt_.bucket && opt_.shuffle) {
    std::mt19937_64 rng(mix_seed(opt_.seed, 2 * e + 1));
    // The short batch (if any) takes part too, so it is not always last.
    fisher_yates(batches, rng);
  }
  if (opt_.drop_last) {
    batches.erase(
        std::remove_if(batches.begin(), batches.end(),
                       [bs](const auto& b) { return static_cast<int64_t>(b.size()) < bs; }),
        batches.end());
  }
  batches.resize(static_cast<size_t>(global_batches_));  // even_shards tail
  return batches;
}

void BatchSampler::load_epoch(int64_t epoch) {
  if (loaded_epoch_ == epoch) return;
  batches_ = epoch_batches(epoch);
  loaded_epoch_ = epoch;
}

void BatchSampler::roll_over_if_done() {
  // Done with the epoch once this rank's next global index is past the end. Ranks whose last
  // round is short roll over together with those that complete it, so states agree again.
  if (cursor_ + opt_.rank >= global_batches_) {
    ++epoch_;
    cursor_ = 0;
  }
}

std::vector<int64_t> BatchSampler::next_batch() {
  roll_over_if_done();  // a restored state may point past this rank's share
  load_epoch(epoch_);
  std::vector<int64_t> batch = batches_[static_cast<size_t>(cursor_ + opt_.rank)];
  cursor_ += opt_.world_size;
  roll_over_if_done();
  return batch;
}

SamplerState BatchSampler::state() const { return {epoch_, cursor_, fingerprint_}; }

void BatchSampler::restore(const SamplerState& s) {
  GMSA_CHECK(s.fingerprint == fingerprint_,
             "sampler state fingerprint {:016x} does not match this data and sampler options "
             "({:016x}): the dataset, its lengths or the batch options changed since it was saved",
             s.fingerprint, fingerprint_);
  GMSA_CHECK(s.epoch >= 0 && s.cursor >= 0 && s.cursor <= global_batches_,
             "sampler state out of range: epoch {}, cursor {} (epoch has {} batches)", s.epoch,
             s.cursor, global_batches_);
  epoch_ = s.epoch;
  cursor_ = s.cursor;
}

}  // namespace gmsa
