#include "gmsa/data/stream.h"

#include "gmsa/data/sampler.h"
#include "gmsa/util/error.h"

namespace gmsa {

ShuffledStream::ShuffledStream(std::string path, CorpusFormat format, int64_t buffer, uint64_t seed)
    : reader_(std::move(path), format), capacity_(buffer), seed_(seed) {
  GMSA_CHECK(buffer >= 1, "{}: the shuffle buffer must hold at least one document", reader_.path());
  start_epoch();
}

void ShuffledStream::start_epoch() {
  rng_.seed(mix_seed(seed_, static_cast<uint64_t>(epoch_)));
  buffer_.clear();
  file_done_ = false;
  if (epoch_ > 0) reader_.reset();
}

std::string ShuffledStream::next() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string doc;
    while (!file_done_ && static_cast<int64_t>(buffer_.size()) < capacity_) {
      if (!reader_.next(doc)) file_done_ = true;
      else if (doc.find_first_not_of(" \t\r\n") != std::string::npos) buffer_.push_back(std::move(doc));
    }
    if (!buffer_.empty()) {
      const size_t j = static_cast<size_t>(uniform_below(rng_, buffer_.size()));
      std::swap(buffer_[j], buffer_.back());
      std::string out = std::move(buffer_.back());
      buffer_.pop_back();
      ++position_;
      return out;
    }
    ++epoch_;  // file and buffer exhausted: next epoch
    start_epoch();
  }
  fail("{}: no documents", reader_.path());
}

void ShuffledStream::skip_to(int64_t position) {
  epoch_ = 0;
  position_ = 0;
  reader_.reset();
  start_epoch();
  while (position_ < position) next();
}

}  // namespace gmsa
