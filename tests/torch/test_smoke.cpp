#include <gtest/gtest.h>
#include <torch/torch.h>

TEST(Torch, Matmul) {
  auto a = torch::ones({2, 3});
  auto b = torch::ones({3, 4});
  EXPECT_EQ(torch::matmul(a, b).sum().item<float>(), 24.0f);
}
