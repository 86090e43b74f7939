// CUDA-only checks (skipped without a GPU): bf16 against fp32 on the same inputs, the fused
// attention against the written-out reference, and the GMSA pieces on the device.
#include <cstdio>
#include <limits>
#include <string>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/compressor/group_merging.h"
#include "gmsa/model/compat.h"
#include "gmsa/model/decode_ops.h"
#include "gmsa/model/decode_step.h"
#include "gmsa/model/fused_ops.h"
#include "gmsa/model/generation.h"
#include "gmsa/util/error.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::max_rel_diff;

#define GMSA_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test"

namespace {
// One bf16 rounding step apart at most (the fp32 sums differ in order only).
bool within_ulp(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kFloat) - b.to(torch::kFloat)).abs();
  return (d <= b.to(torch::kFloat).abs() * (1.0 / 128) + 1e-6).all().item<bool>();
}

// A bf16 RMSNorm on the GPU with weights around 1.
RMSNorm bf16_norm(int64_t dim) {
  RMSNorm norm(dim, 1e-5);
  norm->to(torch::kCUDA, torch::kBFloat16);
  torch::NoGradGuard g;
  norm->weight.normal_(1.0, 0.1);
  return norm;
}

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
  torch::manual_seed(3);
  Compressor c(d, gmsa::testing::small_compressor());
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

// The decoding step recorded as a CUDA graph replays exactly what the eager step computes, for
// a left-padded batch under a sliding window, with repetition penalty and EOS stopping, and
// agrees with the CPU.
TEST(Cuda, GraphDecodingEqualsEagerAndCpu) {
  GMSA_REQUIRE_CUDA();
  auto cfg = gmsa::testing::tiny_config("mistral");
  cfg.sliding_window = 6;
  Decoder d(cfg);
  gmsa::testing::randomize(*d, 5);
  d->eval();
  std::vector<GenerationPrompt> prompts = {{{}, {5, 9, 11}}, {{}, {7, 8, 9, 10, 12, 30, 31}}, {{}, {40}}};
  GenerationConfig gc;
  gc.max_new_tokens = 14;
  gc.eos_ids = {-1};
  gc.repetition_penalty = 1.3;
  auto cpu = generate(d, prompts, gc);
  d->to(torch::kCUDA);
  gc.cuda_graph = false;
  auto eager = generate(d, prompts, gc);
  gc.cuda_graph = true;
  auto graph = generate(d, prompts, gc);
  EXPECT_FALSE(eager.cuda_graph);
  EXPECT_TRUE(graph.cuda_graph);
  EXPECT_EQ(graph.tokens, eager.tokens);
  EXPECT_EQ(graph.tokens, cpu.tokens);
  // EOS: every row cut at its own first EOS, also when the graph ran ahead of the check.
  gc.eos_ids = {graph.tokens[1][4]};
  auto cut = generate(d, prompts, gc);
  for (size_t r = 0; r < prompts.size(); ++r) {
    const auto& full = graph.tokens[r];
    EXPECT_EQ(cut.tokens[r], std::vector<int64_t>(full.begin(), std::find(full.begin(), full.end(), gc.eos_ids[0])));
  }
  // And it stops: every row ends by its second token, the flag reaches the host a few steps late.
  gc.eos_ids = {graph.tokens[0][1], graph.tokens[1][1], graph.tokens[2][1]};
  gc.max_new_tokens = 40;
  EXPECT_LT(generate(d, prompts, gc).steps, 8);
}

// The fused kernels against the plain LibTorch ops they replace, on the same bf16 inputs.
TEST(Cuda, FusedKernelsReproduceThePlainOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the fused CUDA kernels (no nvcc at configure time)";
  torch::NoGradGuard g;
  torch::manual_seed(0);
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto norm = bf16_norm(4096);
  auto x = torch::randn({3, 5, 4096}, bf) * 3;
  fused::set_enabled(false);
  auto plain_norm = norm(x);
  fused::set_enabled(true);
  auto fused_norm = fused::rms_norm(x, norm->weight, 1e-5);
  ASSERT_TRUE(fused_norm.defined());
  EXPECT_TRUE(within_ulp(fused_norm, plain_norm));
  EXPECT_GT((fused_norm == plain_norm).to(torch::kFloat).mean().item<double>(), 0.99);

  auto q = torch::randn({2, 7, 4 * 64}, bf).view({2, 7, 4, 64});  // a projection's output viewed as heads
  auto pos = torch::arange(7, torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA)).unsqueeze(0).expand({2, 7}) + 11;
  ModelConfig mc = gmsa::testing::tiny_config();
  mc.head_dim = 64;
  Rope rope = rope_tables(rope_inv_freq(mc).cuda(), pos, torch::kBFloat16);
  auto fused_q = fused::rope(q, rope.cos, rope.sin);
  ASSERT_TRUE(fused_q.defined());
  auto plain_q = apply_rope(q.transpose(1, 2), rope).contiguous();
  EXPECT_TRUE(torch::equal(fused_q, plain_q));
  EXPECT_TRUE(fused_q.transpose(1, 2).is_contiguous());  // token-major underneath, for attention's output
  // Keys and values written into KV-cache columns 3..9 of 12 (the values unrotated): the same
  // values there, the other columns untouched.
  auto vals = torch::randn({2, 7, 4 * 64}, bf).view({2, 7, 4, 64});
  auto cache_k = torch::full({2, 4, 12, 64}, 7.0, bf), cache_v = torch::full({2, 4, 12, 64}, 7.0, bf);
  ASSERT_TRUE(fused::rope_into(q, rope.cos, rope.sin, cache_k.narrow(2, 3, 7), vals, cache_v.narrow(2, 3, 7)));
  EXPECT_TRUE(torch::equal(cache_k.narrow(2, 3, 7), plain_q));
  EXPECT_TRUE(torch::equal(cache_v.narrow(2, 3, 7), vals.transpose(1, 2)));
  for (const auto& c : {cache_k, cache_v}) {
    EXPECT_TRUE((c.narrow(2, 0, 3) == 7).all().item<bool>());
    EXPECT_TRUE((c.narrow(2, 10, 2) == 7).all().item<bool>());
  }
  ASSERT_TRUE(fused::rope_into(q, rope.cos, rope.sin, cache_k.narrow(2, 5, 7)));  // keys alone
  EXPECT_TRUE(torch::equal(cache_k.narrow(2, 5, 7), plain_q));
  // Where the kernel does not apply nothing is written: wrong shape, fp32, values of another shape.
  auto before = cache_k.clone();
  EXPECT_FALSE(fused::rope_into(q, rope.cos, rope.sin, cache_k.narrow(2, 3, 6)));
  EXPECT_FALSE(fused::rope_into(q, rope.cos, rope.sin, cache_k.narrow(2, 3, 7).to(torch::kFloat)));
  EXPECT_FALSE(fused::rope_into(q, rope.cos, rope.sin, cache_k.narrow(2, 3, 7), vals.narrow(1, 0, 6),
                                cache_v.narrow(2, 3, 6)));
  EXPECT_TRUE(torch::equal(cache_k, before));

  auto gate = torch::randn({6, 11008}, bf) * 4, up = torch::randn({6, 11008}, bf);
  auto fused_h = fused::silu_mul(gate, up);
  ASSERT_TRUE(fused_h.defined());
  EXPECT_TRUE(within_ulp(fused_h, torch::silu(gate) * up));

  // Under autograd the kernels run inside autograd functions (their backward is tested below);
  // CPU tensors and fp32 run the plain ops.
  auto wants_grad = x.clone().requires_grad_(true);
  {
    torch::AutoGradMode on(true);
    auto y = fused::rms_norm(wants_grad, norm->weight, 1e-5);
    ASSERT_TRUE(y.defined());
    EXPECT_TRUE(y.requires_grad());
    EXPECT_TRUE(torch::equal(y.detach(), fused_norm));
  }
  EXPECT_FALSE(fused::silu_mul(gate.to(torch::kFloat), up.to(torch::kFloat)).defined());
  EXPECT_FALSE(fused::silu_mul(gate.cpu(), up.cpu()).defined());
}

// A whole bf16 decoder with and without the kernels: the same logits within bf16 tolerance.
TEST(Cuda, FusedDecoderMatchesPlainDecoder) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the fused CUDA kernels (no nvcc at configure time)";
  auto cfg = gmsa::testing::tiny_config("qwen3");  // q/k norms too
  Decoder d(cfg);
  gmsa::testing::randomize(*d, 4);
  d->to(torch::kCUDA, torch::kBFloat16);
  d->set_compute_dtype(torch::kBFloat16);
  d->eval();
  torch::NoGradGuard g;
  DecoderInput in;
  in.input_ids = torch::randint(3, 97, {2, 17}, torch::kLong).cuda();
  fused::set_enabled(false);
  auto plain = d->forward(in).logits;
  fused::set_enabled(true);
  auto fast = d->forward(in).logits;
  EXPECT_LT(rel_l2(fast, plain), 2e-2);
}

// Gradients through the fused kernels against autograd of the plain ops in fp32 (the bf16
// inputs upcast), within bf16 tolerance.
TEST(Cuda, FusedKernelBackwardsMatchAutogradOfThePlainOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the fused CUDA kernels (no nvcc at configure time)";
  torch::manual_seed(1);
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  // Reference: the same function of fp32 leaves; returns the gradients of sum(out * probe).
  auto grads = [](auto fn, std::vector<torch::Tensor> ins, const torch::Tensor& probe) {
    for (auto& t : ins) t = t.detach().clone().requires_grad_(true);
    auto out = fn(ins);
    (out.to(torch::kFloat) * probe.to(torch::kFloat)).sum().backward();
    std::vector<torch::Tensor> g;
    for (auto& t : ins) g.push_back(t.grad().to(torch::kFloat));
    return g;
  };
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) { return rel_l2(a, b) < 1e-2; };

  auto x = torch::randn({4, 6, 512}, bf) * 2, w = (torch::randn({512}, bf) * 0.1 + 1).to(torch::kBFloat16);
  auto probe = torch::randn({4, 6, 512}, bf);
  auto plain_norm = [](const std::vector<torch::Tensor>& in) {
    return in[1] * (in[0] * torch::rsqrt(in[0].pow(2).mean(-1, true) + 1e-5));
  };
  auto ref = grads(plain_norm, {x.to(torch::kFloat), w.to(torch::kFloat)}, probe);
  auto got = grads([](const std::vector<torch::Tensor>& in) { return fused::rms_norm(in[0], in[1], 1e-5); },
                   {x, w}, probe);
  EXPECT_TRUE(close(got[0], ref[0])) << rel_l2(got[0], ref[0]);
  EXPECT_TRUE(close(got[1], ref[1])) << rel_l2(got[1], ref[1]);

  auto q = torch::randn({2, 5, 3, 64}, bf);
  ModelConfig mc = gmsa::testing::tiny_config();
  mc.head_dim = 64;
  auto pos = torch::arange(5, torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA)).unsqueeze(0).expand({2, 5});
  Rope rope = rope_tables(rope_inv_freq(mc).cuda(), pos, torch::kBFloat16);
  Rope rope32{rope.cos.to(torch::kFloat), rope.sin.to(torch::kFloat)};
  auto qprobe = torch::randn({2, 3, 5, 64}, bf);
  ref = grads([&](const std::vector<torch::Tensor>& in) { return apply_rope(in[0].transpose(1, 2), rope32); },
              {q.to(torch::kFloat)}, qprobe);
  got = grads([&](const std::vector<torch::Tensor>& in) { return fused::rope(in[0], rope.cos, rope.sin); }, {q}, qprobe);
  EXPECT_TRUE(close(got[0], ref[0])) << rel_l2(got[0], ref[0]);

  auto gate = torch::randn({8, 300}, bf) * 3, up = torch::randn({8, 300}, bf), hprobe = torch::randn({8, 300}, bf);
  ref = grads([](const std::vector<torch::Tensor>& in) { return torch::silu(in[0]) * in[1]; },
              {gate.to(torch::kFloat), up.to(torch::kFloat)}, hprobe);
  got = grads([](const std::vector<torch::Tensor>& in) { return fused::silu_mul(in[0], in[1]); }, {gate, up}, hprobe);
  EXPECT_TRUE(close(got[0], ref[0])) << rel_l2(got[0], ref[0]);
  EXPECT_TRUE(close(got[1], ref[1])) << rel_l2(got[1], ref[1]);
}

// A bf16 autoencoder training step with and without the kernels: the same loss and trained
// gradients within bf16 tolerance.
TEST(Cuda, FusedKernelsKeepTheAutoencoderStep) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the fused CUDA kernels (no nvcc at configure time)";
  Decoder d(gmsa::testing::tiny_config("llama"));
  gmsa::testing::randomize(*d, 6);
  d->to(torch::kCUDA, torch::kBFloat16);
  d->set_compute_dtype(torch::kBFloat16);
  for (auto& p : d->parameters()) p.set_requires_grad(false);
  torch::manual_seed(3);
  Compressor c(d, gmsa::testing::small_compressor());
  c->to(torch::kCUDA);
  gmsa::testing::randomize_lora_b(*c);
  auto ids = torch::randint(3, 97, {2, 24}, torch::kLong).cuda();
  auto lengths = torch::tensor({24, 17}).cuda(), rates = torch::tensor({4, 8}).cuda();
  auto step = [&] {
    for (auto& p : c->parameters()) p.mutable_grad() = torch::Tensor();
    auto soft = c->forward(ids, lengths, rates);
    DecoderInput in;
    in.inputs_embeds = soft.embeds;
    auto loss = d->forward(in).logits.logsumexp(-1).mean();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : c->parameters())
      if (p.grad().defined()) g.push_back(p.grad().flatten().to(torch::kFloat));
    return std::make_pair(loss.item<double>(), torch::cat(g));
  };
  fused::set_enabled(false);
  auto [plain_loss, plain_grad] = step();
  fused::set_enabled(true);
  auto [fused_loss, fused_grad] = step();
  EXPECT_NEAR(fused_loss, plain_loss, 1e-2 * std::abs(plain_loss));
  EXPECT_LT(rel_l2(fused_grad, plain_grad), 5e-2);
}

// Group merging's kernel (inference) against the general path and an fp64 reference, on rows
// of different lengths (one empty, one not a multiple of its rate) and rates, at the 7B's
// width (8 values per thread) and an odd one (one); under autograd the general path runs.
TEST(Cuda, GroupMeanKernelEqualsGroupMerging) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the fused CUDA kernels (no nvcc at configure time)";
  torch::manual_seed(4);
  const std::vector<int64_t> lens{37, 0, 40, 13};
  const int64_t B = 4, T = 40, M = 40;  // M: the rate-1 row's 40 soft tokens
  auto rates = torch::tensor({4, 8, 1, 5});
  auto mask = torch::zeros({B, T}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) mask[b].narrow(0, 0, lens[b]).fill_(1);
  auto sizes = torch::stack({rates, torch::tensor(lens)}).cuda();
  for (int64_t H : {4096, 20}) {
    auto states = torch::randn({B, T, H}, torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA));
    torch::Tensor kernel;
    SoftTokens padded, general, exact;
    {
      torch::NoGradGuard g;
      kernel = fused::group_mean(states, sizes, M);
      ASSERT_TRUE(kernel.defined()) << "H=" << H;
      padded = group_merge_right_padded(states, torch::tensor(lens), rates);
      general = group_merge(states, mask.cuda(), rates, torch::tensor(lens));
      exact = group_merge(states.to(torch::kDouble), mask.cuda(), rates, torch::tensor(lens));
    }
    EXPECT_TRUE(torch::equal(padded.embeds, kernel)) << "H=" << H;  // the compressor's path runs the kernel
    EXPECT_TRUE(within_ulp(kernel, general.embeds)) << "H=" << H;
    EXPECT_TRUE(within_ulp(kernel, exact.embeds.to(torch::kBFloat16))) << "H=" << H;
    EXPECT_TRUE(torch::equal(kernel[1], torch::zeros_like(kernel[1])));
    EXPECT_TRUE(torch::equal(padded.mask, general.mask));
    EXPECT_TRUE(torch::equal(padded.lengths, general.lengths));
    // Under autograd: the general path, whose gradient reaches the states.
    auto leaf = states.detach().requires_grad_();
    EXPECT_FALSE(fused::group_mean(leaf, sizes, M).defined());
    auto trained = group_merge_right_padded(leaf, torch::tensor(lens), rates);
    EXPECT_TRUE(within_ulp(trained.embeds.detach(), kernel));
    trained.embeds.to(torch::kFloat).sum().backward();
    ASSERT_TRUE(leaf.grad().defined());
    // d mean / d state = 1 / group size: 1/4 for row 0's first state, 0 for its padding.
    EXPECT_FLOAT_EQ(leaf.grad()[0][0][0].item<float>(), 0.25f);
    EXPECT_FLOAT_EQ(leaf.grad()[0][38][0].item<float>(), 0.f);
  }
  EXPECT_THROW(fused::group_mean(torch::zeros({B, T, 8}, torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA)),
                                 sizes.cpu(), M),
               gmsa::Error);
}

// The decoding step's kernels against the plain ops on the same bf16 inputs.
TEST(Cuda, DecodeKernelsReproduceThePlainOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  torch::NoGradGuard g;
  torch::manual_seed(1);
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA);
  // Residual add + RMSNorm.
  auto norm = bf16_norm(4096);
  auto x = torch::randn({3, 4096}, bf) * 2, y = torch::randn({3, 4096}, bf);
  auto [h, normed] = decode_ops::add_rms_norm(x, y, norm->weight, 1e-5);
  ASSERT_TRUE(h.defined());
  EXPECT_TRUE(torch::equal(h, x + y));
  fused::set_enabled(false);
  auto plain_norm = norm(x + y);
  fused::set_enabled(true);
  EXPECT_TRUE(within_ulp(normed, plain_norm));
  EXPECT_GT((normed == plain_norm).to(torch::kFloat).mean().item<double>(), 0.99);

  // Split-KV attention (GQA, holes in the mask, columns after the slot ignored) against fp32, in
  // each of the kernel's plans: many splits of 8 steps per round (a short share per warp, as at
  // batch 1), a few splits of 4 steps (long shares, as at batch 16), one split of 4 steps (a
  // tiny cache) and one split of 8 steps (a short cache at batch 16), the last two with no merge.
  struct Shape {
    int64_t b, heads_q, heads_kv, capacity, last, steps;
    bool one_split;
    bool plan_at_128_only = false;  // the split count is expected at head size 128 only
  };
  // The plans expected at head size 128 hold on 132 multiprocessors (H100, H200).
  for (const Shape& sh : {Shape{3, 8, 2, 900, 850, 8, false}, Shape{12, 32, 8, 2100, 2000, 4, false},
                          Shape{3, 8, 2, 24, 20, 4, true}, Shape{16, 32, 8, 880, 850, 8, true, true}})
  for (int64_t dim : {32, 64, 128, 256}) {
    const int64_t b = sh.b, heads_q = sh.heads_q, heads_kv = sh.heads_kv, capacity = sh.capacity, last = sh.last;
    const auto plan = decode_ops::attention_plan(b, heads_q, capacity, dim);
    SCOPED_TRACE("head_dim " + std::to_string(dim) + ", batch " + std::to_string(b) + ", capacity " +
                 std::to_string(capacity) + ": " + std::to_string(plan.splits) + " splits of " +
                 std::to_string(plan.steps) + " steps");
    const bool at_128 = dim == 128 && plan.multiprocessors == 132;
    if (sh.one_split && (at_128 || !sh.plan_at_128_only)) EXPECT_EQ(plan.splits, 1);
    else if (!sh.plan_at_128_only) EXPECT_GT(plan.splits, 1);
    if (at_128) EXPECT_EQ(plan.steps, sh.steps);
    auto qq = torch::randn({b, heads_q, dim}, bf), k = torch::randn({b, heads_kv, capacity, dim}, bf),
         v = torch::randn({b, heads_kv, capacity, dim}, bf);
    auto mask = torch::rand({b, capacity}, torch::TensorOptions().device(torch::kCUDA)) > 0.3;
    mask[2].fill_(false);  // a row with nothing to attend to gets zeros
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    auto out = decode_ops::attention(qq, k, v, mask, torch::full({1}, last, longs), scale);
    ASSERT_TRUE(out.defined());
    auto allowed = mask.logical_and(torch::arange(capacity, longs) <= last);
    auto kf = k.to(torch::kFloat).repeat_interleave(heads_q / heads_kv, 1), vf = v.to(torch::kFloat).repeat_interleave(heads_q / heads_kv, 1);
    auto scores = torch::matmul(qq.to(torch::kFloat).unsqueeze(2), kf.transpose(2, 3)).squeeze(2) * scale;
    scores = scores.masked_fill(allowed.logical_not().unsqueeze(1), -INFINITY);
    auto ref = torch::matmul(torch::softmax(scores, -1).unsqueeze(2), vf).squeeze(2).nan_to_num(0.0);
    auto got = out.view({b, heads_q, dim}).to(torch::kFloat);
    EXPECT_LT(rel_l2(got, ref), 1e-2);  // row 2: zeros on both sides
    EXPECT_EQ(got[2].abs().sum().item<double>(), 0.0);
    // The last block of each head merges the splits, counting arrivals in a reusable buffer that
    // it leaves at zero; the merge order is fixed, so repeated calls agree bit for bit.
    auto arrivals = torch::zeros({b * heads_q}, longs.dtype(torch::kInt));
    for (int rep = 0; rep < 2; ++rep)
      EXPECT_TRUE(torch::equal(decode_ops::attention(qq, k, v, mask, torch::full({1}, last, longs), scale, arrivals),
                               out));
    EXPECT_EQ(arrivals.abs().sum().item<int64_t>(), 0);
  }

  // RoPE + KV store inside the attention kernel (rope_attention), from packed q/k/v rows (strided:
  // a view of a wider tensor; GQA; the new column in the last split): column `last` of the caches
  // holds rope(k) and v bit for bit as the plain ops make them, no other column changes, and the
  // output is attention() of rope(q), bit for bit.
  for (int64_t dim : {64, 128}) {
    const int64_t b = 3, heads_q = 8, heads_kv = 2, capacity = 700, last = 650;
    auto packed = torch::randn({b, (heads_q + 2 * heads_kv) * dim + 8}, bf).narrow(1, 0, (heads_q + 2 * heads_kv) * dim);
    ModelConfig cfg = gmsa::testing::tiny_config();
    cfg.head_dim = dim;
    Rope r = rope_tables(rope_inv_freq(cfg).cuda(), torch::tensor({7, 300, 650}, longs).view({b, 1}), torch::kBFloat16);
    auto heads = [&](int64_t first, int64_t n) {  // [b, n, dim]
      return packed.narrow(1, first * dim, n * dim).reshape({b, 1, n, dim}).transpose(1, 2);
    };
    auto rope_q = apply_rope(heads(0, heads_q), r).squeeze(2).contiguous();
    auto rope_k = apply_rope(heads(heads_q, heads_kv), r).squeeze(2);
    auto k = torch::randn({b, heads_kv, capacity, dim}, bf), v = torch::randn({b, heads_kv, capacity, dim}, bf);
    auto k_before = k.clone(), v_before = v.clone();
    auto mask = torch::rand({b, capacity}, torch::TensorOptions().device(torch::kCUDA)) > 0.3;
    mask.select(1, last).fill_(true);
    auto at = torch::full({1}, last, longs);
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    auto out = decode_ops::rope_attention(packed, r.cos.reshape({b, dim}), r.sin.reshape({b, dim}), k, v, mask, at,
                                          heads_q, scale);
    ASSERT_TRUE(out.defined()) << dim;
    EXPECT_TRUE(torch::equal(k.select(2, last), rope_k)) << "head_dim " << dim;
    EXPECT_TRUE(torch::equal(v.select(2, last), heads(heads_q + heads_kv, heads_kv).squeeze(2))) << "head_dim " << dim;
    k_before.select(2, last).copy_(k.select(2, last));
    v_before.select(2, last).copy_(v.select(2, last));
    EXPECT_TRUE(torch::equal(k, k_before) && torch::equal(v, v_before)) << "head_dim " << dim;
    EXPECT_TRUE(torch::equal(out, decode_ops::attention(rope_q, k, v, mask, at, scale))) << "head_dim " << dim;
  }

  // The one-row CUDA-core GEMV (auto's pick for one row) against fp32: the last warp partial,
  // K not a multiple of the unrolled step nor of 32.
  decode_ops::set_projection(decode_ops::Projection::kAuto);
  for (int64_t n : {1003, 9001}) {
    auto w = torch::randn({n, 4104}, bf) * 0.02, xr = torch::randn({1, 4104}, bf);
    auto yr = decode_ops::linear(xr, w);
    auto ref = torch::matmul(xr.to(torch::kFloat), w.to(torch::kFloat).t());
    EXPECT_LT(rel_l2(yr, ref), 1e-2) << n;
  }
}

// The skinny GEMM (1 to 16 rows on tensor cores) against fp32: row counts on both sides of 8,
// a feature count that is not a multiple of the 16-row tile, K that leaves some warps fewer
// slabs than others, a bias; the SwiGLU output against linear + silu_mul with their roundings.
TEST(Cuda, SkinnyGemmMatchesFp32) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  torch::manual_seed(5);
  torch::NoGradGuard g;
  decode_ops::set_projection(decode_ops::Projection::kTensorCores);
  for (int64_t m : {1, 3, 8, 9, 16}) {
    for (int64_t n : {1003, 4096}) {
      const int64_t k = 4128;
      auto w = torch::randn({n, k}, bf) * 0.02, x = torch::randn({m, k}, bf), b = torch::randn({n}, bf);
      auto ref = torch::matmul(x.to(torch::kFloat), w.to(torch::kFloat).t());
      auto y = decode_ops::linear(x, w);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, n}));
      EXPECT_LT(rel_l2(y, ref), 1e-2) << m << " x " << n;
      EXPECT_LT(rel_l2(decode_ops::linear(x, w, b), ref + b.to(torch::kFloat)), 1e-2) << "bias " << m;
      // Rows are computed on their own: within one launch configuration (1-8 rows, 9-16 rows)
      // a row's result does not depend on how many rows share the launch.
      const int64_t fewer = m > 8 ? 9 : 1;
      if (fewer < m)
        EXPECT_TRUE(torch::equal(decode_ops::linear(x.narrow(0, 0, fewer), w), y.narrow(0, 0, fewer))) << m;
    }
    // The SwiGLU epilogue rounds as linear + silu_mul: bit for bit where K fits one stage (128
    // columns), so that both sum in the same order; at 9-16 rows with more stages a row's plain
    // and SwiGLU tiles start their K loops at different stages (skinny_gemm_tma.cuh).
    const int64_t inter = 1376;
    for (int64_t k : {128, 512}) {
      auto gu = torch::randn({2 * inter, k}, bf) * 0.05, x = torch::randn({m, k}, bf);
      auto h = decode_ops::swiglu_linear(x, gu);
      ASSERT_TRUE(h.defined());
      auto both = decode_ops::linear(x, gu);
      auto plain = fused::silu_mul(both.narrow(-1, 0, inter), both.narrow(-1, inter, inter));
      if (k == 128 || m <= 8)
        EXPECT_TRUE(torch::equal(h, plain)) << "swiglu " << m << " k " << k;
      else
        EXPECT_LT(rel_l2(h, plain), 1e-2) << "swiglu " << m << " k " << k;
    }
  }
  // 9-16 rows on sm_90: the TMA-fed kernel. Long rows (K = 8224: 32 columns past the last whole
  // 256-column stage, which the tensor map fills with zeros) and a feature count that leaves the
  // last tile's box partly past the end; its rows are independent and its result deterministic.
  for (int64_t m : {9, 16}) {
    const int64_t n = 1003, k = 8224;
    auto w = torch::randn({n, k}, bf) * 0.02, x = torch::randn({m, k}, bf), b = torch::randn({n}, bf);
    auto ref = torch::matmul(x.to(torch::kFloat), w.to(torch::kFloat).t());
    auto y = decode_ops::linear(x, w);
    EXPECT_LT(rel_l2(y, ref), 1e-2) << "long rows " << m;
    EXPECT_LT(rel_l2(decode_ops::linear(x, w, b), ref + b.to(torch::kFloat)), 1e-2) << "long rows, bias " << m;
    EXPECT_TRUE(torch::equal(decode_ops::linear(x.narrow(0, 0, 9), w), y.narrow(0, 0, 9))) << "long rows " << m;
    EXPECT_TRUE(torch::equal(decode_ops::linear(x, w), y)) << "deterministic " << m;
  }
  // Not served (falls back to torch::linear): K not a multiple of 32, more than 16 rows.
  auto w = torch::randn({64, 100}, bf), x = torch::randn({2, 100}, bf);
  EXPECT_FALSE(decode_ops::swiglu_linear(x, w).defined());
  EXPECT_LT(rel_l2(decode_ops::linear(x, w), torch::matmul(x.to(torch::kFloat), w.to(torch::kFloat).t())), 1e-2);
  auto x17 = torch::randn({17, 4096}, bf), w17 = torch::randn({32, 4096}, bf);
  EXPECT_FALSE(decode_ops::swiglu_linear(x17, w17).defined());
  // auto: the one-row GEMV's SwiGLU epilogue against linear + silu_mul; at 16 rows the skinny
  // GEMM serves tall gate/up matrices (2I >= 16384) and short ones (2I <= 4096) everywhere, and
  // with TMA (sm_90) also those between.
  const bool tma = decode_ops::tma_projection();
  decode_ops::set_projection(decode_ops::Projection::kAuto);
  for (int64_t inter : {1376, 5000}) {
    auto gu = torch::randn({2 * inter, 4096}, bf) * 0.02, x1 = torch::randn({1, 4096}, bf);
    auto both = decode_ops::linear(x1, gu);
    EXPECT_TRUE(torch::equal(decode_ops::swiglu_linear(x1, gu),
                             fused::silu_mul(both.narrow(-1, 0, inter), both.narrow(-1, inter, inter))))
        << inter;
  }
  auto x16 = torch::randn({16, 128}, bf);  // one stage: the same summation order (above)
  EXPECT_EQ(decode_ops::swiglu_linear(x16, torch::randn({2 * 3000, 128}, bf)).defined(), tma);
  EXPECT_TRUE(decode_ops::swiglu_linear(x16, torch::randn({2 * 1376, 128}, bf)).defined());
  auto tall = torch::randn({2 * 8200, 128}, bf) * 0.05;
  auto h16 = decode_ops::swiglu_linear(x16, tall);
  ASSERT_TRUE(h16.defined());
  auto both16 = decode_ops::linear(x16, tall);
  EXPECT_LT(rel_l2(both16, torch::matmul(x16.to(torch::kFloat), tall.to(torch::kFloat).t())), 1e-2);
  EXPECT_TRUE(torch::equal(h16, fused::silu_mul(both16.narrow(-1, 0, 8200), both16.narrow(-1, 8200, 8200))));
  // auto at 9-16 rows: short weights (N <= 4096) go to the skinny GEMM (the same bits as
  // kTensorCores), and with TMA q/k/v's 12288 too (else cuBLAS); at 2-8 rows short ones stay
  // with cuBLAS.
  for (int64_t k : {1024, 8192}) {
    auto w_short = torch::randn({4096, k}, bf) * 0.02, x_short = torch::randn({16, k}, bf);
    auto y_auto = decode_ops::linear(x_short, w_short);
    decode_ops::set_projection(decode_ops::Projection::kTensorCores);
    EXPECT_TRUE(torch::equal(decode_ops::linear(x_short, w_short), y_auto)) << k;
    decode_ops::set_projection(decode_ops::Projection::kAuto);
    EXPECT_LT(rel_l2(y_auto, torch::matmul(x_short.to(torch::kFloat), w_short.to(torch::kFloat).t())), 1e-2) << k;
  }
  {
    auto w_qkv = torch::randn({12288, 512}, bf) * 0.02, x_qkv = torch::randn({16, 512}, bf);
    auto y_auto = decode_ops::linear(x_qkv, w_qkv);
    decode_ops::set_projection(decode_ops::Projection::kTensorCores);
    auto y_ours = decode_ops::linear(x_qkv, w_qkv);
    decode_ops::set_projection(decode_ops::Projection::kAuto);
    EXPECT_TRUE(torch::equal(y_auto, tma ? y_ours : torch::linear(x_qkv, w_qkv)));
    EXPECT_LT(rel_l2(y_auto, torch::matmul(x_qkv.to(torch::kFloat), w_qkv.to(torch::kFloat).t())), 1e-2);
    auto w_short = torch::randn({4096, 512}, bf) * 0.02, x4 = torch::randn({4, 512}, bf);
    EXPECT_TRUE(torch::equal(decode_ops::linear(x4, w_short), torch::linear(x4, w_short)));
  }
  // Names round-trip; an unknown one is an error naming it.
  for (auto p : {decode_ops::Projection::kAuto, decode_ops::Projection::kCublas, decode_ops::Projection::kTensorCores})
    EXPECT_EQ(decode_ops::parse_projection(decode_ops::projection_name(p)), p);
  EXPECT_THROW(decode_ops::parse_projection("simt"), std::invalid_argument);
}

// L2 warming (a hint for the next projection) goes only where that projection is not the
// TMA-fed kernel: it is off at 9-16 rows on sm_90, on at 1-8 rows, with cuBLAS projections and
// above 16 rows, and off everywhere when warm_bytes() is 0.
TEST(Cuda, L2WarmingSkipsTheTmaFedProjections) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  if (!decode_ops::tma_projection())
    GTEST_SKIP() << "no TMA-fed projections on this GPU (sm_90 and later): nothing to skip the warming for";
  const int64_t warm = decode_ops::warm_bytes();
  ASSERT_GT(warm, 0);
  for (int64_t rows : {1, 8, 17, 64}) EXPECT_TRUE(decode_ops::warms_l2(rows)) << rows;
  for (int64_t rows : {9, 12, 16}) EXPECT_FALSE(decode_ops::warms_l2(rows)) << rows;
  decode_ops::set_projection(decode_ops::Projection::kCublas);
  EXPECT_TRUE(decode_ops::warms_l2(12));
  decode_ops::set_projection(decode_ops::Projection::kAuto);
  decode_ops::set_warm_bytes(0);
  EXPECT_FALSE(decode_ops::warms_l2(1));
  decode_ops::set_warm_bytes(warm);
}

// The residual add + RMSNorm carried by the projections around it (9-16 rows, TMA) against the
// separate ops: the add and the next projection's rows bit for bit, the rows' sums of squares
// in fp32; the normed projections (plain with a bias, SwiGLU, a tall weight) against fp32, also
// from partial sums made by hand whose rows' scales differ 100-fold, so that a misread part or
// row shows.
TEST(Cuda, NormFusionMatchesTheSeparateOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  if (!decode_ops::norm_fusion())
    GTEST_SKIP() << "no TMA-fed projections on this GPU (sm_90 and later): the norm fusion does not apply";
  torch::NoGradGuard g;
  torch::manual_seed(11);
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto fp = [](const torch::Tensor& t) { return t.to(torch::kFloat); };
  const int64_t H = 4096, A = 1024, I = 3072;
  const double eps = 1e-5;
  auto norm = bf16_norm(H);
  auto w_o = torch::randn({H, A}, bf) * 0.03, b_o = torch::randn({H}, bf) * 0.1;
  auto w_q = torch::randn({1536, H}, bf) * 0.02, b_q = torch::randn({1536}, bf) * 0.1;
  auto w_gu = torch::randn({2 * I, H}, bf) * 0.02, w_head = torch::randn({16416, H}, bf) * 0.02;
  for (int64_t M : {9, 12, 16}) {
    auto resid0 = torch::randn({M, H}, bf) * 2, a = torch::randn({M, A}, bf);
    auto resid = resid0.clone();
    auto in = decode_ops::residual_linear(a, w_o, b_o, resid, norm->weight, eps);
    ASSERT_TRUE(in.defined()) << M;
    auto h = resid0 + decode_ops::linear(a, w_o, b_o);  // the same projection kernel, then the add
    EXPECT_TRUE(torch::equal(resid, h)) << M;
    EXPECT_TRUE(torch::equal(in.scaled, h * norm->weight)) << M;
    auto sums = [&](const decode_ops::NormedInput& x) { return x.partial.narrow(0, 0, M).narrow(1, 0, x.parts); };
    EXPECT_LT(max_rel_diff(sums(in).sum(1), fp(h).pow(2).sum(1)), 1e-5) << M;
    auto again = resid0.clone();
    EXPECT_TRUE(torch::equal(sums(decode_ops::residual_linear(a, w_o, b_o, again, norm->weight, eps)), sums(in)));

    auto r = torch::rsqrt(fp(h).pow(2).mean(-1, true) + eps);
    auto ref_normed = fp(h) * r * fp(norm->weight);
    auto q = decode_ops::normed_linear(in, w_q, b_q, /*swiglu=*/false);
    ASSERT_TRUE(q.defined()) << M;
    EXPECT_LT(rel_l2(q, torch::matmul(ref_normed, fp(w_q).t()) + fp(b_q)), 1e-2) << M;
    auto [h_ops, normed] = decode_ops::add_rms_norm(resid0, decode_ops::linear(a, w_o, b_o), norm->weight, eps);
    EXPECT_LT(rel_l2(q, decode_ops::linear(normed, w_q, b_q)), 1e-2) << M;  // the unfused step's ops
    auto gu = torch::matmul(ref_normed, fp(w_gu).t());
    auto sw = decode_ops::normed_linear(in, w_gu, {}, /*swiglu=*/true);
    ASSERT_TRUE(sw.defined()) << M;
    EXPECT_LT(rel_l2(sw, torch::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I)), 1e-2) << M;
    EXPECT_LT(rel_l2(decode_ops::normed_linear(in, w_head, {}, false), torch::matmul(ref_normed, fp(w_head).t())),
              1e-2)
        << M;

    // Partial sums made by hand: 37 parts per row, the rows' mean squares 100-fold apart; the
    // buffer's padding columns and unused rows hold huge values that must not be read.
    auto f32 = torch::TensorOptions().device(torch::kCUDA);
    auto scale = torch::logspace(-1, 1, M, 10.0, f32).unsqueeze(1);
    decode_ops::NormedInput hand{torch::randn({M, H}, bf), torch::full({16, 40}, 1e30, f32), 37, eps};
    hand.partial.narrow(0, 0, M).narrow(1, 0, 37).copy_(torch::rand({M, 37}, f32) * scale);
    auto rh = torch::rsqrt(hand.partial.narrow(0, 0, M).narrow(1, 0, 37).sum(1, true) / H + eps);
    auto yh = decode_ops::normed_linear(hand, w_q, {}, false);
    EXPECT_LT(rel_l2(yh, torch::matmul(fp(hand.scaled), fp(w_q).t()) * rh), 1e-2) << M;

    // The first sub-block's input, from the embeddings.
    auto first = decode_ops::rms_partials(resid0, norm->weight, eps);
    ASSERT_TRUE(first.defined()) << M;
    EXPECT_TRUE(torch::equal(first.scaled, resid0 * norm->weight)) << M;
    EXPECT_EQ(first.parts, 1);
    EXPECT_LT(max_rel_diff(first.partial.narrow(0, 0, M).select(1, 0), fp(resid0).pow(2).sum(1)), 1e-5) << M;
  }
  // Not served: 8 rows (the register-fed kernel's), or switched off.
  auto r8 = torch::randn({8, H}, bf);
  EXPECT_FALSE(decode_ops::residual_linear(torch::randn({8, A}, bf), w_o, b_o, r8, norm->weight, eps).defined());
  decode_ops::set_norm_fusion(false);
  EXPECT_FALSE(decode_ops::rms_partials(torch::randn({12, H}, bf), norm->weight, eps).defined());
  decode_ops::set_norm_fusion(true);
}

// The decoding step's first and last launches against the LibTorch ops they replace.
TEST(Cuda, DecodeStepBeginAndEndMatchTheOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  torch::NoGradGuard g;
  torch::manual_seed(13);
  auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA);
  const int64_t B = 3, V = 500, H = 256, D = 128, capacity = 40;
  auto embed = torch::randn({V, H}, bf);
  auto tokens = torch::tensor({7, 499, 0}, longs);
  auto positions = torch::tensor({{5}, {3071}, {0}}, longs);  // [B, 1], as DecodeStep keeps them
  auto inv_freq = torch::pow(10000.0, -torch::arange(0, D, 2, longs.dtype(torch::kFloat)) / D);
  auto slot = torch::full({1}, 17, longs);
  auto mask = torch::zeros({B, capacity}, longs.dtype(torch::kBool));
  auto r = decode_ops::step_begin(tokens, embed, positions, inv_freq, slot, mask, D);
  ASSERT_TRUE(r.embeds.defined());
  EXPECT_TRUE(torch::equal(r.embeds, embed.index_select(0, tokens)));
  Rope rope = rope_tables(inv_freq, positions, torch::kBFloat16);
  EXPECT_TRUE(torch::equal(r.cos, rope.cos.reshape({B, D})));
  EXPECT_TRUE(torch::equal(r.sin, rope.sin.reshape({B, D})));
  auto want = torch::zeros_like(mask);
  want.select(1, 17).fill_(true);
  EXPECT_TRUE(torch::equal(mask, want));
  ASSERT_TRUE(decode_ops::step_end(positions, slot));
  EXPECT_TRUE(torch::equal(positions, torch::tensor({{6}, {3072}, {1}}, longs)));
  EXPECT_EQ(slot.item<int64_t>(), 18);
  // Not for the kernel (fp32 embeddings): undefined, the caller runs the ops.
  EXPECT_FALSE(decode_ops::step_begin(tokens, embed.to(torch::kFloat), positions, inv_freq, slot, mask, D)
                   .embeds.defined());
}

// Greedy decoding's one-kernel pick against the plain ops it replaces: penalty, argmax (ties to
// the lower index, NaN first), and the seen / output / finished bookkeeping.
TEST(Cuda, GreedyPickMatchesThePlainOps) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  torch::NoGradGuard g;
  torch::manual_seed(11);
  auto fl = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  auto longs = fl.dtype(torch::kLong);
  const int64_t B = 6, V = 32000;
  auto logits = torch::randn({B, V}, fl) * 4;
  logits[1][70] = logits[1][900] = 100.f;                      // a tie: the lower index wins
  logits[2][5] = 50.f;                                         // a seen token pushed below another
  logits[2][6] = 45.f;
  logits[3][321] = std::numeric_limits<float>::quiet_NaN();  // NaN ranks first, as in torch
  logits[4].fill_(-3.f);                                       // all equal: index 0
  auto seen = torch::rand({B, V}, fl) < 0.3;
  seen[1][70] = seen[1][900] = false;
  seen[2][5] = true;
  seen[2][6] = false;
  auto eos = torch::tensor({2, 70}, longs);
  const double p = 1.3;
  for (bool penalised : {true, false}) {
    auto seen_plain = seen.clone(), seen_fused = seen.clone();
    auto out_plain = torch::zeros({B, 4}, longs), out_fused = torch::zeros({B, 4}, longs);
    auto fin_plain = torch::zeros({B}, longs.dtype(torch::kBool)), fin_fused = fin_plain.clone();
    fin_plain[5] = fin_fused[5] = true;  // stays finished
    auto col = out_fused.select(1, 2);
    auto next = decode_ops::greedy_pick(logits, penalised ? seen_fused : torch::Tensor(), p, eos, col, fin_fused);
    ASSERT_TRUE(next.defined());
    auto l = logits;
    if (penalised) l = torch::where(seen_plain, torch::where(logits < 0, logits * p, logits / p), logits);
    auto ref = l.argmax(-1);
    if (penalised) seen_plain.scatter_(1, ref.unsqueeze(1), true);
    out_plain.select(1, 2).copy_(ref);
    fin_plain.logical_or_(torch::isin(ref, eos));
    EXPECT_TRUE(torch::equal(next, ref)) << next.cpu() << ref.cpu();
    EXPECT_EQ(next[1].item<int64_t>(), 70);
    EXPECT_EQ(next[3].item<int64_t>(), 321);
    EXPECT_EQ(next[4].item<int64_t>(), 0);
    EXPECT_EQ(next[2].item<int64_t>(), penalised ? 6 : 5);
    EXPECT_TRUE(torch::equal(out_fused, out_plain));
    EXPECT_TRUE(torch::equal(seen_fused, penalised ? seen_plain : seen));
    EXPECT_TRUE(torch::equal(fin_fused, fin_plain));
    EXPECT_TRUE(fin_fused[1].item<bool>());  // 70 is an end token
    EXPECT_TRUE(fin_fused[5].item<bool>());  // finished before: stays so
  }
  // Not for the kernel (bf16 logits, a CPU tensor): undefined, the caller runs the plain ops.
  auto col = torch::zeros({B}, longs);
  auto fin = torch::zeros({B}, longs.dtype(torch::kBool));
  EXPECT_FALSE(decode_ops::greedy_pick(logits.to(torch::kBFloat16), {}, 1.0, torch::tensor({2}, longs), col, fin)
                   .defined());
}

// The pick that ends a decoding step (DecodeStep::pick_greedily) on bf16 logits: the pick of
// their fp32 copy, its column from the step's slot, and the step advanced once for all rows.
TEST(Cuda, GreedyStepPickAdvancesTheStep) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  torch::NoGradGuard g;
  torch::manual_seed(12);
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA);
  const int64_t B = 12, V = 32000, N = 5, base = 40;
  auto logits = (torch::randn({B, V}, longs.dtype(torch::kFloat)) * 4).to(torch::kBFloat16);
  logits[1][70] = logits[1][900] = 100.f;  // a tie: the lower index wins
  auto seen = torch::rand({B, V}, longs.dtype(torch::kFloat)) < 0.3;
  auto eos = torch::tensor({2, 70}, longs);
  const double p = 1.3;
  auto out = torch::full({B, N}, -7, longs);
  auto next = torch::zeros({B}, longs), positions = torch::arange(B, longs) + 100;
  auto slot = torch::full({1}, base + 2, longs);
  auto ticket = torch::zeros({1}, longs.dtype(torch::kInt));
  auto finished = torch::zeros({B}, longs.dtype(torch::kBool));
  auto seen_step = seen.clone();
  ASSERT_TRUE(decode_ops::greedy_step_pick(logits, seen_step, p, eos, next, out, base, finished, positions, slot,
                                           ticket));
  // The host path: fp32 logits, then greedy_pick into column 2.
  auto out_ref = torch::full({B, N}, -7, longs);
  auto fin_ref = torch::zeros({B}, longs.dtype(torch::kBool));
  auto seen_ref = seen.clone();
  auto col = out_ref.select(1, 2);
  auto ref = decode_ops::greedy_pick(logits.to(torch::kFloat), seen_ref, p, eos, col, fin_ref);
  ASSERT_TRUE(ref.defined());
  EXPECT_TRUE(torch::equal(next, ref));
  EXPECT_EQ(next[1].item<int64_t>(), 70);
  EXPECT_TRUE(torch::equal(out, out_ref));
  EXPECT_TRUE(torch::equal(seen_step, seen_ref));
  EXPECT_TRUE(torch::equal(finished, fin_ref));
  EXPECT_TRUE(torch::equal(positions, torch::arange(B, longs) + 101));
  EXPECT_EQ(slot.item<int64_t>(), base + 3);  // once, not once per row
  EXPECT_EQ(ticket.item<int>(), 0);
  // Past the last column nothing is written; the step still advances.
  slot.fill_(base + N);
  auto before = out.clone();
  ASSERT_TRUE(decode_ops::greedy_step_pick(logits, {}, 1.0, eos, next, out, base, finished, positions, slot, ticket));
  EXPECT_TRUE(torch::equal(out, before));
  EXPECT_EQ(slot.item<int64_t>(), base + N + 1);
  // With the next step's beginning: what step_begin makes for the picked tokens at the advanced
  // positions and column (the pick consumes slot base + N + 1, so the next column is + 2).
  const int64_t H = 256, D = 128, capacity = base + N + 3;
  auto bf = longs.dtype(torch::kBFloat16);
  auto embed = torch::randn({V, H}, bf);
  auto inv_freq = torch::pow(10000.0, -torch::arange(0, D, 2, longs.dtype(torch::kFloat)) / D);
  auto key_mask = torch::zeros({B, capacity}, longs.dtype(torch::kBool));
  decode_ops::NextBegin begin{{torch::zeros({B, H}, bf), torch::zeros({B, D}, bf), torch::zeros({B, D}, bf)},
                              embed, inv_freq, key_mask};
  ASSERT_TRUE(decode_ops::greedy_step_pick(logits, {}, 1.0, eos, next, out, base, finished, positions, slot, ticket,
                                           &begin));
  EXPECT_EQ(slot.item<int64_t>(), base + N + 2);
  auto ref_mask = torch::zeros_like(key_mask);
  auto ref_begin = decode_ops::step_begin(next, embed, positions, inv_freq, slot, ref_mask, D);
  ASSERT_TRUE(ref_begin.embeds.defined());
  EXPECT_TRUE(torch::equal(begin.into.embeds, ref_begin.embeds));
  EXPECT_TRUE(torch::equal(begin.into.cos, ref_begin.cos));
  EXPECT_TRUE(torch::equal(begin.into.sin, ref_begin.sin));
  EXPECT_TRUE(torch::equal(key_mask, ref_mask));
  EXPECT_EQ(key_mask.sum().item<int64_t>(), B);  // one column
  // The last column's pick begins nothing past the capacity (and writes nowhere).
  slot.fill_(capacity - 1);
  key_mask.zero_();
  ASSERT_TRUE(decode_ops::greedy_step_pick(logits, {}, 1.0, eos, next, out, base, finished, positions, slot, ticket,
                                           &begin));
  EXPECT_EQ(key_mask.sum().item<int64_t>(), 0);
  EXPECT_EQ(slot.item<int64_t>(), capacity);
  // Not for the kernel (a strided output, a CPU tensor, fp32 embeddings): false, nothing launched.
  auto fp32_begin = begin;
  fp32_begin.embed = embed.to(torch::kFloat);
  EXPECT_FALSE(decode_ops::greedy_step_pick(logits, {}, 1.0, eos, next, out, base, finished, positions, slot, ticket,
                                            &fp32_begin));
  auto strided = torch::zeros({N, B}, longs).t();
  EXPECT_FALSE(decode_ops::greedy_step_pick(logits, {}, 1.0, eos, next, strided, base, finished, positions, slot,
                                            ticket));
  auto cpu_logits = logits.cpu();
  EXPECT_FALSE(decode_ops::greedy_step_pick(cpu_logits, {}, 1.0, eos, next, out, base, finished, positions, slot,
                                            ticket));
}

// Greedy generation with the pick inside the decoding step gives the tokens of the pick after
// it, bit for bit (the same logits; the pick compares their fp32 values either way): batch 12
// (the TMA-fed projections, norms fused), 3 and 1, with and without the graph, with the
// repetition penalty and EOS stopping.
TEST(Cuda, GreedyGenerationPicksInsideTheStep) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  auto cfg = gmsa::testing::tiny_config("llama");
  cfg.hidden_size = 256;
  cfg.intermediate_size = 512;
  cfg.head_dim = 64;
  Decoder d(cfg);
  gmsa::testing::randomize(*d, 9);
  d->eval();
  d->to(torch::kCUDA, torch::kBFloat16);
  d->set_compute_dtype(torch::kBFloat16);
  d->pack_projections();
  torch::manual_seed(4);
  for (int64_t B : {12, 3, 1}) {
    std::vector<GenerationPrompt> prompts;
    for (int64_t b = 0; b < B; ++b) {
      auto ids = torch::randint(3, cfg.vocab_size, {3 + (b * 5) % 7}, torch::kLong);
      prompts.push_back({{}, std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel())});
    }
    GenerationConfig gc;
    gc.max_new_tokens = 12;
    gc.eos_ids = {-1};
    gc.repetition_penalty = 1.3;
    gc.penalize_prompt = true;
    for (bool graph : {true, false}) {
      gc.cuda_graph = graph;
      decode_ops::set_step_pick(false);
      auto after = generate(d, prompts, gc);
      decode_ops::set_step_pick(true);
      auto inside = generate(d, prompts, gc);
      EXPECT_FALSE(after.step_pick);
      EXPECT_TRUE(inside.step_pick) << "batch " << B;
      EXPECT_TRUE(inside.decode_kernels);
      EXPECT_EQ(inside.cuda_graph, graph);
      EXPECT_EQ(inside.tokens, after.tokens) << "batch " << B << " graph " << graph;
      EXPECT_EQ(inside.steps, gc.max_new_tokens - 1);
      // EOS: each row cut at its first EOS, the same as after the step.
      auto cut_cfg = gc;
      cut_cfg.eos_ids = {after.tokens[0][3]};
      decode_ops::set_step_pick(false);
      auto cut_after = generate(d, prompts, cut_cfg);
      decode_ops::set_step_pick(true);
      auto cut_inside = generate(d, prompts, cut_cfg);
      EXPECT_EQ(cut_inside.tokens, cut_after.tokens) << "batch " << B << " graph " << graph;
      ASSERT_LE(cut_inside.tokens[0].size(), 3u);
    }
  }
  // Sampling picks on the host.
  GenerationConfig sampled;
  sampled.max_new_tokens = 4;
  sampled.do_sample = true;
  EXPECT_FALSE(generate(d, {{{}, {5, 6, 7}}}, sampled).step_pick);
}

// The decoding step through its kernels against the layers' own step, teacher-forced (the same
// tokens fed to both), on a bf16 model with packed projections: a left-padded batch and batch 1,
// GQA, head_dim 64, with and without a sliding window, with each projection kernel choice. Logits are compared,
// not greedy tokens: attention sums in another order, and a near-tie may flip an argmax.
TEST(Cuda, DecodeKernelsKeepTheLogits) {
  GMSA_REQUIRE_CUDA();
  if (!fused::compiled()) GTEST_SKIP() << "built without the CUDA kernels (no nvcc at configure time)";
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(torch::kCUDA);
  for (const char* family : {"llama", "mistral", "qwen2"}) {
    auto cfg = gmsa::testing::tiny_config(family);
    cfg.hidden_size = 256;
    cfg.intermediate_size = 512;
    cfg.head_dim = 64;
    if (std::string(family) == "mistral") cfg.sliding_window = 6;
    Decoder d(cfg);
    gmsa::testing::randomize(*d, 7);
    d->eval();
    d->to(torch::kCUDA, torch::kBFloat16);
    d->set_compute_dtype(torch::kBFloat16);
    d->pack_projections();
    torch::NoGradGuard g;
    // The same bf16 weights in fp32, run by the layers' own step in fp32: what both bf16 steps
    // approximate.
    Decoder d32(cfg);
    gmsa::testing::randomize(*d32, 7);
    d32->eval();
    d32->to(torch::kCUDA);
    for (auto& p : d32->parameters()) p.copy_(p.to(torch::kBFloat16).to(torch::kFloat));
    torch::manual_seed(3);
    for (int64_t B : {12, 3, 1}) {
      auto ids = torch::randint(3, cfg.vocab_size, {B, 7}, longs);
      auto mask = torch::ones({B, 7}, longs);
      if (B > 1) mask[0].narrow(0, 0, 4).fill_(0);  // left padding
      auto forced = torch::randint(3, cfg.vocab_size, {12, B}, longs);
      auto run = [&](bool kernels, decode_ops::Projection projection, bool fp32 = false) {
        decode_ops::set_enabled(kernels);
        decode_ops::set_projection(projection);
        auto& model = fp32 ? d32 : d;
        auto cache = KVCache::allocate(cfg, B, 32,
                                       torch::TensorOptions()
                                           .dtype(fp32 ? torch::kFloat : torch::kBFloat16)
                                           .device(torch::kCUDA));
        auto positions = positions_from_mask(mask);
        DecoderInput in;
        in.input_ids = ids;
        in.attention_mask = mask;
        in.position_ids = positions;
        in.cache = &cache;
        model->forward(in);
        DecodeStep step(model, cache, mask, positions.select(1, 6) + 1, /*use_graph=*/true);
        EXPECT_EQ(step.uses_decode_kernels(), kernels && !fp32);
        // At 9-16 rows with TMA the residual adds and RMSNorms ride in the projections.
        EXPECT_EQ(step.fuses_norms(), kernels && !fp32 && B >= 9 && decode_ops::norm_fusion())
            << family << " batch " << B;
        std::vector<torch::Tensor> logits;
        for (int64_t t = 0; t < forced.size(0); ++t) logits.push_back(step.run(forced[t]).clone());
        return torch::stack(logits);
      };
      auto plain = run(false, decode_ops::Projection::kCublas);
      const double plain_err = rel_l2(plain, run(false, decode_ops::Projection::kCublas, /*fp32=*/true));
      for (auto projection :
           {decode_ops::Projection::kAuto, decode_ops::Projection::kTensorCores, decode_ops::Projection::kCublas}) {
        for (bool pdl : {true, false}) {
          decode_ops::set_programmatic_launch(pdl);
          auto fast = run(true, projection);
          // The fused add + RMSNorm rounds differently (NormFusion): against the plain bf16 step
          // up to 2%, and about as close to fp32 as that step (at most 1.5 times its error).
          const bool fused_norms = B >= 9 && decode_ops::norm_fusion();
          EXPECT_LT(rel_l2(fast, plain), fused_norms ? 2e-2 : 1e-2)
              << family << " batch " << B << " gemv " << decode_ops::projection_name(projection) << " pdl " << pdl;
          if (fused_norms) {
            const double err = rel_l2(fast, run(false, decode_ops::Projection::kCublas, /*fp32=*/true));
            EXPECT_LT(err, 1.5 * plain_err) << family << " batch " << B << " pdl " << pdl;
            std::printf("[ fp32 err ] %s batch %lld %s pdl %d: plain bf16 %.5f, fused %.5f\n", family,
                        static_cast<long long>(B), decode_ops::projection_name(projection), pdl ? 1 : 0, plain_err,
                        err);
          }
          // Most greedy picks agree (a near-tie may not).
          EXPECT_GT(fast.argmax(-1).eq(plain.argmax(-1)).to(torch::kFloat).mean().item<double>(), 0.9) << family;
          // Warming the next weights in L2 is a hint: the same logits, bit for bit, without it
          // (the default warm span is larger than these weights: the kernels clamp it to them).
          const int64_t warm = decode_ops::warm_bytes();
          ASSERT_GT(warm, 0);
          decode_ops::set_warm_bytes(0);
          auto cold = run(true, projection);
          decode_ops::set_warm_bytes(warm);
          EXPECT_TRUE(torch::equal(fast, cold)) << family << " batch " << B << " pdl " << pdl;
          if (fused_norms) {  // and with the separate add + RMSNorm launches
            decode_ops::set_norm_fusion(false);
            auto unfused = run(true, projection);
            decode_ops::set_norm_fusion(true);
            EXPECT_LT(rel_l2(unfused, plain), 1e-2) << family << " batch " << B << " unfused";
          }
        }
      }
      decode_ops::set_programmatic_launch(true);
    }
  }
  decode_ops::set_enabled(true);
  decode_ops::set_projection(decode_ops::Projection::kAuto);
}
