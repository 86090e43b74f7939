#pragma once
// Points on a device's queue, timed by the device (CUDA events) or, on the CPU, by the host's
// clock as they are reached. A pipeline can then time its stages without waiting for each: the
// host queues the next stage before the previous one ends and reads the times afterwards, and
// it can wait for one point alone (a value copied to the host behind it has then landed).
#include <torch/torch.h>

#include <cstddef>
#include <memory>

namespace gmsa {

class DeviceClock {
 public:
  explicit DeviceClock(torch::Device device);
  ~DeviceClock();
  DeviceClock(const DeviceClock&) = delete;
  DeviceClock& operator=(const DeviceClock&) = delete;

  // A point behind the work queued so far on the device's current stream; returns its index.
  size_t mark();
  // Blocks the host until the device has passed `mark` (the work queued before it is done).
  void wait(size_t mark) const;
  // Milliseconds from mark `from` to mark `to`; waits until the device has passed `to`.
  double ms(size_t from, size_t to) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gmsa
