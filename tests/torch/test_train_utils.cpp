// Trainer building blocks: AdamW, gradient clipping, lr schedules, checkpoints, rate sampling.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "gmsa/model/compat.h"
#include "gmsa/train/checkpoint.h"
#include "gmsa/train/optimizer.h"
#include "gmsa/train/rate_sampler.h"
#include "gmsa/train/schedule.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using gmsa::testing::TempDir;

namespace {

// A small mix of shapes and names: two that decay (matrices), three that do not.
gmsa::NamedTensors make_params(uint64_t seed) {
  torch::manual_seed(seed);
  gmsa::NamedTensors p = {
      {"embed_tokens.weight", torch::randn({6, 4})},
      {"layers.0.q_proj.weight", torch::randn({4, 4})},
      {"layers.0.q_proj.bias", torch::randn({4})},
      {"layers.0.input_norm.weight", torch::randn({4})},
      {"gate", torch::randn({1})},
  };
  for (auto& [n, t] : p) t.set_requires_grad(true);
  return p;
}

gmsa::NamedTensors clone_params(const gmsa::NamedTensors& src) {
  gmsa::NamedTensors out;
  for (const auto& [n, t] : src) out.emplace_back(n, t.detach().clone().set_requires_grad(true));
  return out;
}

// The same pseudo-random gradient for every copy of parameter i at step s.
void set_grads(gmsa::NamedTensors& params, int step) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::manual_seed(1000 * step + i);
    params[i].second.mutable_grad() = torch::randn(params[i].second.sizes());
  }
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Runs `steps` updates with varying lr on our AdamW and on LibTorch's torch::optim::AdamW
// (decay and no-decay parameters in two groups), and returns the largest parameter difference.
double compare_with_libtorch(double weight_decay, int steps) {
  gmsa::NamedTensors ours_p = make_params(7), ref_p = clone_params(ours_p);
  gmsa::AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = weight_decay;
  gmsa::AdamW ours(ours_p, o);

  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [n, t] : ref_p) (ours.decays(n) ? decay : no_decay).push_back(t);
  auto group_opts = [&](double wd) {
    auto g = std::make_unique<torch::optim::AdamWOptions>(1.0);
    g->betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd);
    return g;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, group_opts(weight_decay));
  groups.emplace_back(no_decay, group_opts(0.0));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1.0));

  for (int s = 0; s < steps; ++s) {
    const double lr = 0.05 * (1 + s % 3);
    for (auto& g : ref.param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    set_grads(ours_p, s);
    set_grads(ref_p, s);
    ours.step(lr);
    ref.step();
  }
  double diff = 0;
  for (size_t i = 0; i < ours_p.size(); ++i)
    diff = std::max(diff, max_abs_diff(ours_p[i].second, ref_p[i].second));
  // The parameters must actually have moved (lr 0.05..0.15 over several steps).
  auto start = make_params(7);
  EXPECT_GT(max_abs_diff(ours_p[1].second, start[1].second), 0.1);
  return diff;
}

}  // namespace

// ---------------------------------------------------------------- AdamW

TEST(AdamW, MatchesLibTorchWithoutWeightDecay) {
  EXPECT_LT(compare_with_libtorch(0.0, 6), 1e-6);
}

TEST(AdamW, MatchesLibTorchWithWeightDecayOnMatricesOnly) {
  EXPECT_LT(compare_with_libtorch(0.3, 6), 1e-6);
}

// On CUDA (fused kernel with LibTorch >= 2.1, foreach otherwise) the result must match the CPU
// up to fp32 rounding (the kernels order operations differently; a real bug is >> 1e-5).
TEST(AdamW, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  gmsa::NamedTensors cpu = make_params(9), gpu;
  for (const auto& [n, t] : cpu)
    gpu.emplace_back(n, t.detach().to(torch::kCUDA).set_requires_grad(true));
  gmsa::AdamW a(cpu, {0.9, 0.95, 1e-8, 0.1}), b(gpu, {0.9, 0.95, 1e-8, 0.1});
  for (int s = 0; s < 5; ++s) {
    set_grads(cpu, s);
    for (size_t i = 0; i < gpu.size(); ++i) gpu[i].second.mutable_grad() = cpu[i].second.grad().cuda();
    a.step(0.05);
    b.step(0.05);
  }
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_LT(max_abs_diff(cpu[i].second, gpu[i].second.cpu()), 1e-5) << cpu[i].first;
}

namespace {

// step(lr, skip) on `device`: skip = 1 changes nothing (parameters, moments, step count), even
// with non-finite gradients; skip = 0 is exactly step(lr), before and after skipped steps, and
// plain steps after flagged ones use the right bias correction.
void check_skip_flag(torch::Device device) {
  auto on_device = [&](const gmsa::NamedTensors& src) {
    gmsa::NamedTensors out;
    for (const auto& [n, t] : src) out.emplace_back(n, t.detach().to(device).set_requires_grad(true));
    return out;
  };
  auto pa = on_device(make_params(5)), pb = on_device(make_params(5));
  gmsa::AdamW a(pa, {0.9, 0.95, 1e-8, 0.1}), b(pb, {0.9, 0.95, 1e-8, 0.1});
  auto grads = [&](gmsa::NamedTensors& p, int s) {
    set_grads(p, s);
    for (auto& [n, t] : p) t.mutable_grad() = t.grad().to(device);
  };
  auto flag = [&](float v) { return torch::full({}, v, torch::TensorOptions().dtype(torch::kFloat).device(device)); };
  // a.step(lr, flag): on the fused CUDA path (LibTorch >= 2.1) without any host sync.
  auto flagged_step = [&](double lr, float v) {
    auto f = flag(v);
#if defined(GMSA_HAVE_C10_CUDA) && GMSA_TORCH_AT_LEAST(2, 1)
    if (device.is_cuda()) {
      gmsa::testing::ForbidCudaSync no_sync;
      a.step(lr, f);
      return;
    }
#endif
    a.step(lr, f);
  };
  auto snapshot = [](const gmsa::AdamW& o) {
    std::vector<torch::Tensor> out;
    for (const auto& [n, t] : o.params()) out.push_back(t.detach().clone());
    for (const auto& [n, t] : o.state_tensors()) out.push_back(t.clone());
    return out;
  };
  auto expect_same = [](const std::vector<torch::Tensor>& x, const std::vector<torch::Tensor>& y, const char* what) {
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(torch::equal(x[i], y[i])) << what << " tensor " << i;
  };
  int s = 0;
  for (; s < 2; ++s) {  // a: flag 0, b: plain steps
    grads(pa, s);
    grads(pb, s);
    flagged_step(0.05, 0);
    b.step(0.05);
  }
  expect_same(snapshot(a), snapshot(b), "after flag-0 steps");
  EXPECT_EQ(a.step_count(), 2);
  // Flagged steps: nothing moves, whatever the gradients hold.
  for (int k = 0; k < 2; ++k) {
    grads(pa, 100 + k);
    pa[1].second.mutable_grad()[0][0] = std::numeric_limits<float>::infinity();
    pa[3].second.mutable_grad()[1] = std::numeric_limits<float>::quiet_NaN();
    const auto before = snapshot(a);
    flagged_step(0.05, 1);
    expect_same(snapshot(a), before, "after a flag-1 step");
    EXPECT_EQ(a.step_count(), 2);
  }
  // Flag-0 and plain steps continue exactly like b, which never saw the flagged steps.
  for (; s < 5; ++s) {
    grads(pa, s);
    grads(pb, s);
    if (s == 3) a.step(0.1);
    else flagged_step(0.1, 0);
    b.step(0.1);
    expect_same(snapshot(a), snapshot(b), "after a step following flagged ones");
  }
  EXPECT_EQ(a.step_count(), 5);
  EXPECT_EQ(b.step_count(), 5);
  // A flag-1 step right before a checkpoint: the saved count is the applied updates.
  grads(pa, 50);
  flagged_step(0.1, 1);
  gmsa::NamedTensors saved;
  for (const auto& [n, t] : a.state_tensors()) saved.emplace_back(n, t.clone());
  auto pc = on_device(make_params(5));
  for (size_t i = 0; i < pc.size(); ++i) pc[i].second.detach().copy_(pa[i].second.detach());
  gmsa::AdamW c(pc, {0.9, 0.95, 1e-8, 0.1});
  c.load_state(saved, a.step_count());
  EXPECT_EQ(c.step_count(), 5);
  grads(pa, s);
  grads(pc, s);
  flagged_step(0.1, 0);
  c.step(0.1);
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i].second, pc[i].second)) << pa[i].first;
  EXPECT_EQ(a.step_count(), 6);
  // load_state replaces a count that lives on the device.
  flagged_step(0.1, 0);
  a.load_state(saved, 4);
  EXPECT_EQ(a.step_count(), 4);
}

}  // namespace

TEST(AdamW, SkipFlagLeavesEverythingOrStepsExactly) {
  check_skip_flag(torch::kCPU);
  gmsa::AdamW opt(make_params(1), {});
  EXPECT_THROW(opt.step(0.1, torch::full({}, 0.5f)), gmsa::Error);
  EXPECT_THROW(opt.step(0.1, torch::zeros({1})), gmsa::Error);                  // not 0-dim
  EXPECT_THROW(opt.step(0.1, torch::zeros({}, torch::kDouble)), gmsa::Error);   // not fp32
  EXPECT_EQ(opt.step_count(), 0);
}

// fp32 CUDA parameters: the fused kernel (LibTorch >= 2.1) with the flag as found_inf and the
// step count advanced on the device, read back only by step_count().
TEST(AdamW, CudaSkipFlagOnTheFusedPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: skipping a CUDA-only test";
  check_skip_flag(torch::kCUDA);
}

TEST(AdamW, DecayRule) {
  EXPECT_TRUE(gmsa::AdamW::decays_by_rule("layers.0.mlp.up_proj.weight", 2));
  EXPECT_TRUE(gmsa::AdamW::decays_by_rule("embed_tokens.weight", 2));
  EXPECT_FALSE(gmsa::AdamW::decays_by_rule("layers.0.post_attention_layernorm.weight", 1));
  EXPECT_FALSE(gmsa::AdamW::decays_by_rule("norm.weight", 2));  // "norm" wins over dim
  EXPECT_FALSE(gmsa::AdamW::decays_by_rule("layers.0.q_proj.bias", 2));
  EXPECT_FALSE(gmsa::AdamW::decays_by_rule("memory_gate", 1));
  gmsa::AdamW opt(make_params(1), {});
  EXPECT_TRUE(opt.decays("layers.0.q_proj.weight"));
  EXPECT_FALSE(opt.decays("gate"));
  EXPECT_THROW(opt.decays("nope"), gmsa::Error);
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  auto p = make_params(2);
  gmsa::AdamW opt(p, {});
  set_grads(p, 0);
  p[2].second.mutable_grad() = torch::Tensor();
  const torch::Tensor before = p[2].second.detach().clone();
  opt.step(0.1);
  EXPECT_TRUE(torch::equal(p[2].second, before));
  EXPECT_EQ(opt.state_tensors()[2].second.abs().sum().item<double>(), 0.0);
  EXPECT_GT(opt.state_tensors()[1].second.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(opt.step_count(), 1);
  opt.zero_grad();
  for (const auto& [n, t] : p) EXPECT_FALSE(t.grad().defined()) << n;
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  auto pa = make_params(3);
  gmsa::AdamW a(pa, {0.9, 0.99, 1e-8, 0.1});
  for (int s = 0; s < 3; ++s) {
    set_grads(pa, s);
    a.step(0.01);
  }
  // A fresh optimizer over copies of the weights, given a's saved moments and step count.
  auto pb = clone_params(pa);
  gmsa::AdamW b(pb, {0.9, 0.99, 1e-8, 0.1});
  gmsa::NamedTensors saved;
  for (const auto& [n, t] : a.state_tensors()) saved.emplace_back(n, t.clone());
  saved.emplace_back("model/extra", torch::zeros({2}));  // other prefixes are ignored
  b.load_state(saved, a.step_count());
  EXPECT_EQ(b.step_count(), 3);
  for (int s = 3; s < 6; ++s) {
    set_grads(pa, s);
    set_grads(pb, s);
    a.step(0.01);
    b.step(0.01);
  }
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
}

TEST(AdamW, LoadStateRejectsMismatches) {
  auto p = make_params(4);
  gmsa::AdamW opt(p, {});
  auto state = opt.state_tensors();
  auto missing = state;
  missing.pop_back();
  EXPECT_THROW(opt.load_state(missing, 1), gmsa::Error);
  auto wrong_shape = state;
  wrong_shape[0].second = torch::zeros({3, 3});
  EXPECT_THROW(opt.load_state(wrong_shape, 1), gmsa::Error);
  auto unknown = state;
  unknown.emplace_back("exp_avg/not_a_param", torch::zeros({1}));
  EXPECT_THROW(opt.load_state(unknown, 1), gmsa::Error);
  EXPECT_THROW(opt.load_state(state, -1), gmsa::Error);
  EXPECT_EQ(opt.step_count(), 0);  // nothing was applied
}

TEST(AdamW, RejectsBadParameters) {
  gmsa::NamedTensors dup = {{"a", torch::zeros({2})}, {"a", torch::zeros({2})}};
  EXPECT_THROW(gmsa::AdamW(dup, {}), gmsa::Error);
  gmsa::NamedTensors ints = {{"a", torch::zeros({2}, torch::kLong)}};
  EXPECT_THROW(gmsa::AdamW(ints, {}), gmsa::Error);
  EXPECT_THROW(gmsa::AdamW(make_params(0), {1.0, 0.999, 1e-8, 0.0}), gmsa::Error);
}

TEST(AdamW, TrainableParametersNamesModulePaths) {
  torch::nn::Sequential seq(torch::nn::Linear(3, 2), torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
  seq[0]->as<torch::nn::Linear>()->bias.set_requires_grad(false);
  auto named = gmsa::trainable_parameters(*seq);
  std::vector<std::string> names;
  for (const auto& [n, t] : named) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "1.weight", "1.bias"}));
}

// ---------------------------------------------------------------- clipping

TEST(ClipGradNorm, ScalesToMaxNormLikeTorch) {
  auto p = make_params(5);
  set_grads(p, 0);
  p[4].second.mutable_grad() = torch::Tensor();  // ignored
  double sq = 0;
  std::vector<torch::Tensor> before, params;
  for (auto& [n, t] : p) {
    params.push_back(t);
    if (!t.grad().defined()) continue;
    sq += t.grad().to(torch::kDouble).pow(2).sum().item<double>();
    before.push_back(t.grad().clone());
  }
  const double norm = std::sqrt(sq);
  const double max_norm = norm / 4;
  torch::Tensor got = gmsa::clip_grad_norm(params, max_norm);
  EXPECT_EQ(got.dim(), 0);
  EXPECT_NEAR(got.item<double>(), norm, 1e-5 * norm);
  const double coef = max_norm / (norm + 1e-6);
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_LT(max_abs_diff(params[i].grad(), before[i] * coef), 1e-6);
  // Now the norm is max_norm (up to the 1e-6), and a larger limit leaves the gradients alone.
  EXPECT_NEAR(gmsa::clip_grad_norm(p, 10 * norm).item<double>(), max_norm, 1e-5);
  EXPECT_LT(max_abs_diff(params[0].grad(), before[0] * coef), 1e-6);
}

TEST(ClipGradNorm, NonPositiveMaxOnlyMeasuresAndMixedDtypesCountInFp32) {
  torch::Tensor a = torch::zeros({2}, torch::requires_grad());
  torch::Tensor b = torch::zeros({1}, torch::TensorOptions().dtype(torch::kBFloat16).requires_grad(true));
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0}, torch::kBFloat16);
  torch::Tensor n = gmsa::clip_grad_norm({a, b}, 0.0);
  EXPECT_EQ(n.scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(n.item<float>(), 5.0f);  // sqrt(3^2 + 4^2)
  EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f);
  EXPECT_EQ(gmsa::clip_grad_norm(std::vector<torch::Tensor>{torch::zeros({1})}, 1.0).item<float>(), 0.0f);
}

TEST(GradsFinite, DetectsInfAndNan) {
  auto p = make_params(6);
  set_grads(p, 0);
  std::vector<torch::Tensor> params;
  for (auto& [n, t] : p) params.push_back(t);
  EXPECT_TRUE(gmsa::grads_finite(params));
  params[3].mutable_grad()[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(gmsa::grads_finite(params));
  params[3].mutable_grad()[1] = 0;
  params[0].mutable_grad()[2][1] = std::nanf("");
  EXPECT_FALSE(gmsa::grads_finite(params));
}

// ---------------------------------------------------------------- schedules

namespace {
gmsa::LrSchedule schedule(const std::string& type, double base, int64_t warmup, int64_t total,
                          double min_ratio = 0, double warmup_ratio = 0) {
  gmsa::ScheduleOptions o;
  o.type = type;
  o.base_lr = base;
  o.warmup_steps = warmup;
  o.warmup_ratio = warmup_ratio;
  o.total_steps = total;
  o.min_lr_ratio = min_ratio;
  return gmsa::LrSchedule(o);
}
}  // namespace

TEST(LrSchedule, LinearWithWarmup) {
  auto s = schedule("linear", 2.0, 4, 12);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.5);   // 2 * 1/4
  EXPECT_DOUBLE_EQ(s.lr_at(2), 1.5);   // 2 * 3/4
  EXPECT_DOUBLE_EQ(s.lr_at(3), 2.0);   // 2 * 4/4
  EXPECT_DOUBLE_EQ(s.lr_at(4), 2.0);   // progress 0
  EXPECT_DOUBLE_EQ(s.lr_at(8), 1.0);   // progress 4/8 -> 2 * 0.5
  EXPECT_DOUBLE_EQ(s.lr_at(11), 0.25); // progress 7/8 -> 2 * 1/8
  EXPECT_DOUBLE_EQ(s.lr_at(12), 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(50), 0.0);
  auto floor = schedule("linear", 2.0, 4, 12, 0.1);
  EXPECT_DOUBLE_EQ(floor.lr_at(8), 1.1);   // 2 * (0.1 + 0.9 * 0.5)
  EXPECT_DOUBLE_EQ(floor.lr_at(99), 0.2);  // 2 * 0.1
}

TEST(LrSchedule, CosineWithFloor) {
  auto s = schedule("cosine", 1.0, 0, 10, 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1.0);
  // progress 0.2: 0.1 + 0.9 * 0.5 * (1 + cos(0.2 pi)), cos(0.2 pi) = 0.80901699437...
  EXPECT_NEAR(s.lr_at(2), 0.1 + 0.45 * 1.8090169943749475, 1e-15);
  EXPECT_NEAR(s.lr_at(5), 0.55, 1e-15);  // cos(pi/2) = 0
  EXPECT_NEAR(s.lr_at(10), 0.1, 1e-15);
  EXPECT_NEAR(s.lr_at(20), 0.1, 1e-15);
}

TEST(LrSchedule, ConstantWithWarmupAndWarmupRatio) {
  auto c = schedule("constant", 3.0, 2, 0);
  EXPECT_DOUBLE_EQ(c.lr_at(0), 1.5);
  EXPECT_DOUBLE_EQ(c.lr_at(1), 3.0);
  EXPECT_DOUBLE_EQ(c.lr_at(1000), 3.0);
  EXPECT_EQ(schedule("linear", 1, 0, 100, 0, 0.07).warmup(), 7);  // 0.07*100 = 7.000000000000001
  EXPECT_EQ(schedule("linear", 1, 0, 30, 0, 0.05).warmup(), 2);   // ceil(1.5)
  EXPECT_EQ(schedule("linear", 1, 5, 30, 0, 0.5).warmup(), 5);    // steps win over the ratio
  EXPECT_EQ(schedule("linear", 1, 0, 30).warmup(), 0);
  // Warmup equal to the total: the decay has no span and ends at the floor.
  auto all_warm = schedule("linear", 1.0, 4, 4, 0.5);
  EXPECT_DOUBLE_EQ(all_warm.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(all_warm.lr_at(4), 0.5);
}

TEST(LrSchedule, RejectsBadOptions) {
  EXPECT_THROW(schedule("step", 1, 0, 10), gmsa::Error);
  EXPECT_THROW(schedule("linear", 1, 11, 10), gmsa::Error);
  EXPECT_THROW(schedule("cosine", 1, 0, 0), gmsa::Error);
  EXPECT_THROW(schedule("linear", 1, 0, 10, 1.5), gmsa::Error);
  EXPECT_THROW(schedule("linear", -1, 0, 10), gmsa::Error);
  EXPECT_THROW(schedule("linear", 1, 0, 10).lr_at(-1), gmsa::Error);
}

// ---------------------------------------------------------------- checkpoints

namespace {
std::function<void(const std::string&)> writes(const std::string& text) {
  return [text](const std::string& dir) {
    fs::create_directories(fs::path(dir) / "sub");
    gmsa::write_file_atomic((fs::path(dir) / "sub" / "w.txt").string(), text);
  };
}
std::string content(const std::string& ckpt) { return gmsa::read_file(ckpt + "/sub/w.txt"); }
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}
}  // namespace

TEST(Checkpoint, SaveLatestAndPrune) {
  TempDir tmp;
  gmsa::CheckpointManager m(tmp.path.string(), 2);
  EXPECT_FALSE(m.latest().has_value());
  for (int64_t s : {100, 200, 300}) m.save(s, writes("at " + std::to_string(s)));
  ASSERT_TRUE(m.latest().has_value());
  EXPECT_EQ(*m.latest(), tmp / "checkpoints/step-00000300");
  EXPECT_EQ(content(*m.latest()), "at 300");
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000200", "step-00000300"}));
  auto marker = gmsa::load_json(*m.latest() + "/COMPLETE");
  EXPECT_EQ(marker["step"].get<int64_t>(), 300);
  EXPECT_EQ(marker["time"].get<std::string>().size(), 20u);  // 2024-01-02T03:04:05Z
  EXPECT_EQ(gmsa::CheckpointManager::step_of(*m.latest()), 300);
  EXPECT_EQ(gmsa::CheckpointManager::step_of(*m.latest() + "/"), 300);
  EXPECT_FALSE(gmsa::CheckpointManager::step_of("/x/step-12a").has_value());
  // Steps beyond 8 digits sort numerically, not by name.
  m.save(123456789, writes("big"));
  EXPECT_EQ(*m.latest(), tmp / "checkpoints/step-123456789");
}

TEST(Checkpoint, IgnoresAndCleansPartialSaves) {
  TempDir tmp;
  gmsa::CheckpointManager m(tmp.path.string(), 0);
  m.save(1, writes("one"));
  // A crash mid-write leaves a temp dir; a copied or truncated dir may lack the marker.
  fs::create_directories(m.dir() + "/.tmp-step-00000009/sub");
  fs::create_directories(m.dir() + "/step-00000008");
  std::ofstream(m.dir() + "/step-00000008/model.bin") << "partial";
  EXPECT_EQ(*m.latest(), m.dir() + "/step-00000001");
  EXPECT_EQ(m.complete().size(), 1u);
  m.save(2, writes("two"));
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000001", "step-00000002"}));
}

TEST(Checkpoint, FailingWriterLeavesNothingBehind) {
  TempDir tmp;
  gmsa::CheckpointManager m(tmp.path.string(), 3);
  m.save(1, writes("one"));
  auto boom = [](const std::string& dir) {
    writes("half")(dir);
    throw gmsa::Error("disk full");
  };
  EXPECT_THROW(m.save(2, boom), gmsa::Error);
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000001"}));
  EXPECT_EQ(content(*m.latest()), "one");
}

TEST(Checkpoint, ResavingAStepReplacesIt) {
  TempDir tmp;
  gmsa::CheckpointManager m(tmp.path.string(), 2);
  m.save(1, writes("one"));
  m.save(2, writes("old"));
  m.save(2, writes("new"));
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000001", "step-00000002"}));
  EXPECT_EQ(content(m.dir() + "/step-00000002"), "new");
  // A crash between the two renames of a replacement leaves only .old-step-*: restored.
  fs::rename(m.dir() + "/step-00000002", m.dir() + "/.old-step-00000002");
  EXPECT_EQ(*m.latest(), m.dir() + "/step-00000001");
  m.save(3, writes("three"));
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000002", "step-00000003"}));
  EXPECT_EQ(content(m.dir() + "/step-00000002"), "new");
}

TEST(Checkpoint, NeverPrunesTheOneJustWritten) {
  TempDir tmp;
  gmsa::CheckpointManager m(tmp.path.string(), 1);
  m.save(10, writes("ten"));
  m.save(5, writes("five"));  // e.g. a run resumed from an earlier checkpoint
  EXPECT_EQ(entries(m.dir()), (std::vector<std::string>{"step-00000005"}));
}

TEST(Json, AtomicSaveAndClearErrors) {
  TempDir tmp;
  const std::string path = tmp / "state.json";
  gmsa::save_json_atomic(path, {{"step", 7}, {"name", "x"}});
  EXPECT_EQ(gmsa::load_json(path)["step"].get<int>(), 7);
  EXPECT_EQ(entries(tmp.path.string()), (std::vector<std::string>{"state.json"}));
  gmsa::write_file_atomic(path, "{\"a\": 1,\n  oops}");
  try {
    gmsa::load_json(path);
    FAIL() << "expected an error";
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gmsa::load_json(tmp / "missing.json"), gmsa::Error);
}

TEST(Rng, CaptureRestoreAndJsonRoundTrip) {
  torch::manual_seed(11);
  std::mt19937_64 mt(5);
  mt();
  const gmsa::RngSnapshot snap = gmsa::capture_rng(mt);
  const torch::Tensor first = torch::rand({8});
  const uint64_t first_mt = mt();
  // Restore from the JSON form, after the generators moved on.
  torch::rand({100});
  mt.discard(10);
  std::mt19937_64 other;
  gmsa::restore_rng(gmsa::rng_from_json(gmsa::rng_to_json(snap)), other);
  EXPECT_TRUE(torch::equal(torch::rand({8}), first));
  EXPECT_EQ(other(), first_mt);
  EXPECT_EQ(snap.cuda.defined(), torch::cuda::is_available());

  const gmsa::RngSnapshot no_mt = gmsa::capture_rng();
  EXPECT_THROW(gmsa::restore_rng(no_mt, other), gmsa::Error);
  EXPECT_THROW(gmsa::rng_from_json({{"cpu", "abc"}}), gmsa::Error);
  EXPECT_THROW(gmsa::rng_from_json({{"cpu", "zz"}}), gmsa::Error);
}

// ---------------------------------------------------------------- rate sampler

TEST(RateSampler, DeterministicAndRestorable) {
  gmsa::RateSampler a({4, 8, 16}, {}, 42), b({4, 8, 16}, {}, 42), c({4, 8, 16}, {}, 43);
  std::vector<int64_t> xa, xb, xc;
  for (int i = 0; i < 200; ++i) {
    xa.push_back(a.next());
    xb.push_back(b.next());
    xc.push_back(c.next());
  }
  EXPECT_EQ(xa, xb);
  EXPECT_NE(xa, xc);
  const std::string mid = a.state();
  std::vector<int64_t> cont;
  for (int i = 0; i < 50; ++i) cont.push_back(a.next());
  gmsa::RateSampler d({4, 8, 16}, {}, 999);
  d.restore(mid);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(d.next(), cont[i]) << i;
  EXPECT_THROW(d.restore("not a state"), gmsa::Error);
  EXPECT_THROW(d.restore(""), gmsa::Error);
}

TEST(RateSampler, FrequenciesFollowWeights) {
  const std::vector<int64_t> rates = {2, 4, 8, 16};
  const std::vector<double> weights = {1, 2, 0, 7};
  gmsa::RateSampler s(rates, weights, 7);
  const int n = 10000;
  std::map<int64_t, int> count;
  for (int i = 0; i < n; ++i) ++count[s.next()];
  EXPECT_EQ(count.count(8), 0u);  // zero weight: never drawn
  for (size_t i = 0; i < rates.size(); ++i) {
    const double p = weights[i] / 10.0;
    const double sigma = std::sqrt(n * p * (1 - p));
    EXPECT_LE(std::abs(count[rates[i]] - n * p), 3 * sigma + 1e-9) << "rate " << rates[i];
  }
  EXPECT_EQ(s.probabilities(), (std::vector<double>{0.1, 0.2, 0.0, 0.7}));
}

TEST(RateSampler, SingleRateAndErrors) {
  gmsa::RateSampler one({8}, {}, 1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(one.next(), 8);
  EXPECT_THROW(gmsa::RateSampler({}, {}, 1), gmsa::Error);
  EXPECT_THROW(gmsa::RateSampler({4, 0}, {}, 1), gmsa::Error);
  EXPECT_THROW(gmsa::RateSampler({4, 8}, {1}, 1), gmsa::Error);
  EXPECT_THROW(gmsa::RateSampler({4, 8}, {1, -1}, 1), gmsa::Error);
  EXPECT_THROW(gmsa::RateSampler({4, 8}, {0, 0}, 1), gmsa::Error);
  EXPECT_THROW(gmsa::RateSampler({4, 8}, {1, NAN}, 1), gmsa::Error);
}
