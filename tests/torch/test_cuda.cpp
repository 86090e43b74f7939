// CUDA-only checks (skipped without a GPU): bf16 against fp32 on the same inputs, the fused
// attention against the written-out reference, and the GMSA pieces on the device.
#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/generation.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::max_rel_diff;

#define GMSA_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test"

namespace {
double rel_l2(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kDouble) - b.to(torch::kDouble)).norm();
  return (d / b.to(torch::kDouble).norm()).item<double>();
}
}  // namespace

TEST(Cuda, FusedAttentionMatchesReferenceWithAndWithoutMask) {
  GMSA_REQUIRE_CUDA();
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  for (int64_t tq : {1, 7, 64}) {
    const int64_t tk = tq == 1 ? 33 : tq;
    auto q = torch::randn({2, 4, tq, 16}, opts), k = torch::randn({2, 4, tk, 16}, opts),
         v = torch::randn({2, 4, tk, 16}, opts);
    auto key_mask = torch::ones({2, tk}, torch::kLong).to(torch::kCUDA);
    key_mask[0].narrow(0, 0, 3).fill_(0);  // left padding in row 0
    auto mask = build_attention_mask(key_mask, tq, tk, std::nullopt, q.device());
    for (bool use_mask : {false, true}) {
      auto m = use_mask ? mask : torch::Tensor();
      auto fused = compat::attention(q, k, v, m, true, 0.25);
      auto ref = compat::attention_reference(q, k, v, m, true, 0.25);
      EXPECT_LT(rel_l2(fused, ref), 1e-5) << "tq=" << tq << " mask=" << use_mask;
    }
  }
}

TEST(Cuda, Bf16DecoderAgreesWithFp32WithinBf16Tolerance) {
  GMSA_REQUIRE_CUDA();
  for (const char* family : {"llama", "qwen2", "qwen3"}) {
    Decoder d(gmsa::testing::tiny_config(family));
    gmsa::testing::randomize(*d, 1);
    d->eval();
    d->to(torch::kCUDA);
    torch::NoGradGuard g;
    auto ids = torch::randint(3, 97, {2, 40}, torch::kLong).to(torch::kCUDA);
    auto fp32 = d->forward({ids}).logits;
    d->to(torch::kBFloat16);
    d->set_compute_dtype(torch::kBFloat16);
    auto bf16 = d->forward({ids}).logits;
    EXPECT_LT(rel_l2(bf16, fp32), 3e-2) << family;
  }
}

TEST(Cuda, CompressorAndGenerationMatchCpu) {
  GMSA_REQUIRE_CUDA();
  Decoder d(gmsa::testing::tiny_config("llama"));
  gmsa::testing::randomize(*d, 2);
  for (auto& p : d->parameters()) p.set_requires_grad(false);
  CompressorConfig cc;
  cc.encoder_layers = 2;
  cc.lora = {4, 8.0, 0.0};
  torch::manual_seed(3);
  Compressor c(d, cc);
  d->eval();
  c->eval();
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 97, {2, 21}, torch::kLong);
  auto lengths = torch::tensor({21, 13}), rates = torch::tensor({4, 8});
  auto cpu_soft = c->forward(ids, lengths, rates);
  GenerationConfig gc;
  gc.max_new_tokens = 8;
  gc.eos_ids = {-1};
  auto cpu_gen = generate(d, {{cpu_soft.embeds[0].narrow(0, 0, 6), {5, 6}}}, gc);
  d->to(torch::kCUDA);
  c->to(torch::kCUDA);
  auto gpu_soft = c->forward(ids.cuda(), lengths.cuda(), rates.cuda());
  EXPECT_LT(max_rel_diff(gpu_soft.embeds.cpu(), cpu_soft.embeds), 1e-4);
  auto gpu_gen = generate(d, {{gpu_soft.embeds[0].narrow(0, 0, 6), {5, 6}}}, gc);
  EXPECT_EQ(gpu_gen.tokens[0], cpu_gen.tokens[0]);
}
