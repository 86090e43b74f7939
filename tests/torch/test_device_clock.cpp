// DeviceClock: marks on the device's queue, read afterwards (CUDA events; the host's clock on
// the CPU).
#include "gmsa/model/device_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "gmsa/util/error.h"

using gmsa::DeviceClock;

TEST(DeviceClock, TimesTheWorkBetweenMarksOnTheCpu) {
  DeviceClock clock(torch::kCPU);
  EXPECT_EQ(clock.mark(), 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(clock.mark(), 1u);
  EXPECT_EQ(clock.mark(), 2u);
  EXPECT_GE(clock.ms(0, 1), 20.0);
  EXPECT_NEAR(clock.ms(0, 2), clock.ms(0, 1) + clock.ms(1, 2), 1e-9);
  EXPECT_THROW(clock.ms(0, 3), gmsa::Error);
}

TEST(DeviceClock, TimesQueuedWorkOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test";
  auto x = torch::randn({2048, 2048}, torch::kCUDA);
  DeviceClock clock(x.device());
  clock.mark();
  for (int i = 0; i < 20; ++i) x = torch::tanh(x.mm(x) * 1e-3);
  clock.mark();  // queued behind the products: the host does not wait here
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  clock.mark();  // the device idles until the host queues it
  EXPECT_GT(clock.ms(0, 1), 0.0);
  EXPECT_GE(clock.ms(0, 2), clock.ms(0, 1));
  EXPECT_NEAR(clock.ms(0, 2), clock.ms(0, 1) + clock.ms(1, 2), 1e-2);
}
