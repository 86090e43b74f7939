#include "gmsa/model/device_clock.h"

#include <chrono>
#include <vector>

#include "gmsa/util/error.h"

// CUDA events exist where LibTorch was built with CUDA (its CMake package then puts the CUDA
// headers on the include path); elsewhere a CUDA device cannot occur.
#if __has_include(<ATen/cuda/CUDAEvent.h>) && __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#define GMSA_HAVE_CUDA_EVENTS 1
#endif

namespace gmsa {

struct DeviceClock::Impl {
  explicit Impl(torch::Device d) : device(d) {}
  torch::Device device;
  std::vector<std::chrono::steady_clock::time_point> host;
#ifdef GMSA_HAVE_CUDA_EVENTS
  std::vector<std::unique_ptr<at::cuda::CUDAEvent>> events;
#endif
  bool on_device() const {
#ifdef GMSA_HAVE_CUDA_EVENTS
    return device.is_cuda();
#else
    GMSA_CHECK(!device.is_cuda(), "device clock: this build has no CUDA events");
    return false;
#endif
  }
};

DeviceClock::DeviceClock(torch::Device device) : impl_(std::make_unique<Impl>(device)) {}
DeviceClock::~DeviceClock() = default;

size_t DeviceClock::mark() {
  auto& m = *impl_;
  if (m.on_device()) {
#ifdef GMSA_HAVE_CUDA_EVENTS
    m.events.push_back(std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault));  // with timing
    m.events.back()->record(c10::cuda::getCurrentCUDAStream(m.device.index()));
    return m.events.size() - 1;
#endif
  }
  m.host.push_back(std::chrono::steady_clock::now());
  return m.host.size() - 1;
}

void DeviceClock::wait(size_t mark) const {
  const auto& m = *impl_;
  if (m.on_device()) {
#ifdef GMSA_HAVE_CUDA_EVENTS
    GMSA_CHECK(mark < m.events.size(), "device clock: no mark {}", mark);
    m.events[mark]->synchronize();
    return;
#endif
  }
  GMSA_CHECK(mark < m.host.size(), "device clock: no mark {}", mark);  // the CPU has passed it
}

double DeviceClock::ms(size_t from, size_t to) const {
  const auto& m = *impl_;
  wait(to);
  wait(from);
  if (m.on_device()) {
#ifdef GMSA_HAVE_CUDA_EVENTS
    return m.events[from]->elapsed_time(*m.events[to]);
#endif
  }
  return std::chrono::duration<double, std::milli>(m.host[to] - m.host[from]).count();
}

}  // namespace gmsa
