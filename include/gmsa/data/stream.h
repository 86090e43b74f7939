#pragma once
// Training on corpora larger than memory: documents are read one at a time and shuffled
// through a bounded buffer (seeded), so at most `buffer` documents are ever held. The order is a
// pure function of the file, the seed and the buffer size; `position()` and `skip_to()` make a
// run resume at the exact document (by replaying the reads, without tokenising).
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gmsa/data/corpus.h"

namespace gmsa {

class ShuffledStream {
 public:
  ShuffledStream(std::string path, CorpusFormat format, int64_t buffer, uint64_t seed);
  // The next document; at the end of the file the buffer drains, then the next epoch begins
  // (with its own shuffle). Throws gmsa::Error for a file with no document.
  std::string next();
  int64_t position() const { return position_; }  // documents returned since the start
  int64_t epoch() const { return epoch_; }
  void skip_to(int64_t position);

 private:
  void start_epoch();
  CorpusReader reader_;
  int64_t capacity_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<std::string> buffer_;
  bool file_done_ = false;
  int64_t position_ = 0, epoch_ = 0;
};

}  // namespace gmsa
