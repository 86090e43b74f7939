// The GMSA compressor against independent references: group merging vs a naive per-sample
// loop, packed batches vs rows alone, and which parameters each stage trains.
#include <optional>
#include <regex>

#include "gmsa/compressor/gmsa_model.h"
#include "gmsa/config/run_config.h"
#include "gmsa/train/stage.h"
#include "gmsa/util/error.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::small_compressor;
using gmsa::testing::max_rel_diff;

namespace {

// Naive group merging of one sample: real states in order, then means of r consecutive ones.
torch::Tensor naive_merge(const torch::Tensor& states, const torch::Tensor& mask, int64_t r) {
  std::vector<torch::Tensor> real;
  for (int64_t t = 0; t < states.size(0); ++t)
    if (mask[t].item<int64_t>()) real.push_back(states[t]);
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < real.size(); i += r) {
    auto group = std::vector<torch::Tensor>(real.begin() + i, real.begin() + std::min(real.size(), i + r));
    out.push_back(torch::stack(group).mean(0));
  }
  return torch::stack(out);
}

GmsaModel tiny_gmsa(const std::string& method, uint64_t seed = 0) {
  Decoder d(gmsa::testing::tiny_config("llama"));
  gmsa::testing::randomize(*d, seed);
  for (auto& p : d->parameters()) p.set_requires_grad(false);
  Compressor c(d, small_compressor(method));
  gmsa::testing::randomize_lora_b(*c);
  GmsaModel m(d, c);
  m.decoder->eval();
  m.compressor->eval();
  return m;
}

RunConfig stage_cfg(const std::string& type) {
  RunConfig cfg;
  cfg.stage.type = type;
  return cfg;
}

}  // namespace

TEST(GroupMerging, MatchesNaiveReferenceForAllLengthsRatesAndPadding) {
  torch::manual_seed(0);
  const int64_t H = 5;
  for (int64_t r = 1; r <= 16; ++r) {
    for (int64_t L = 1; L <= 3 * r + 1; ++L) {
      for (int left_pad : {0, 1}) {
        // Two rows: one with L real tokens padded on the chosen side, one full-width row
        // with another rate, to check rows do not interact.
        const int64_t T = L + 3;
        auto states = torch::randn({2, T, H}, torch::kDouble);
        auto mask = torch::zeros({2, T}, torch::kLong);
        if (left_pad) mask[0].narrow(0, T - L, L).fill_(1);
        else mask[0].narrow(0, 0, L).fill_(1);
        mask[1].fill_(1);
        const int64_t r2 = r % 3 + 1;
        auto soft = group_merge(states, mask, torch::tensor({r, r2}));
        const int64_t m = (L + r - 1) / r;
        ASSERT_EQ(soft.lengths[0].item<int64_t>(), m) << "L=" << L << " r=" << r;
        ASSERT_EQ(soft.lengths[1].item<int64_t>(), (T + r2 - 1) / r2);
        auto ref0 = naive_merge(states[0], mask[0], r);
        auto ref1 = naive_merge(states[1], mask[1], r2);
        ASSERT_TRUE(torch::allclose(soft.embeds[0].narrow(0, 0, m), ref0, 1e-12, 1e-12)) << "L=" << L << " r=" << r;
        ASSERT_TRUE(torch::allclose(soft.embeds[1].narrow(0, 0, ref1.size(0)), ref1, 1e-12, 1e-12));
        ASSERT_EQ(soft.mask[0].sum().item<int64_t>(), m);
      }
    }
  }
}

TEST(GroupMerging, RejectsRateBelowOne) {
  auto states = torch::randn({1, 4, 3});
  auto mask = torch::ones({1, 4}, torch::kLong);
  EXPECT_THROW(group_merge(states, mask, torch::tensor({0})), gmsa::Error);
}

// Lengths given on the host (what the compressor passes) change nothing: same embeds, mask
// and lengths as lengths read from the mask, on rows of different lengths and rates.
TEST(GroupMerging, HostLengthsGiveTheSameResult) {
  torch::manual_seed(1);
  const int64_t T = 11, H = 6;
  auto states = torch::randn({4, T, H});
  const std::vector<int64_t> lens{11, 3, 7, 1};
  auto mask = torch::zeros({4, T}, torch::kLong);
  for (int64_t b = 0; b < 4; ++b) mask[b].narrow(0, 0, lens[b]).fill_(1);
  auto rates = torch::tensor({4, 2, 8, 3});
  auto from_mask = group_merge(states, mask, rates);
  auto from_host = group_merge(states, mask, rates, torch::tensor(lens));
  EXPECT_TRUE(torch::equal(from_host.embeds, from_mask.embeds));
  EXPECT_TRUE(torch::equal(from_host.mask, from_mask.mask));
  EXPECT_TRUE(torch::equal(from_host.lengths, from_mask.lengths));
  EXPECT_TRUE(torch::equal(from_host.lengths, torch::tensor({3, 2, 1, 1})));
  EXPECT_EQ(from_host.embeds.size(1), 3);
}

// Right-padded rows (the compressor's batches) give what the general path gives on their
// prefix mask, on rows of different lengths (one empty) and rates; bad sizes are clear errors.
TEST(GroupMerging, RightPaddedRowsEqualThePrefixMask) {
  torch::manual_seed(2);
  const int64_t T = 13, H = 5;
  auto states = torch::randn({4, T, H}, torch::kDouble);
  const std::vector<int64_t> lens{13, 0, 6, 9};
  auto mask = torch::zeros({4, T}, torch::kLong);
  for (int64_t b = 0; b < 4; ++b) mask[b].narrow(0, 0, lens[b]).fill_(1);
  auto rates = torch::tensor({4, 2, 5, 1});
  auto general = group_merge(states, mask, rates);
  auto padded = group_merge_right_padded(states, torch::tensor(lens), rates);
  EXPECT_TRUE(torch::equal(padded.embeds, general.embeds));
  EXPECT_TRUE(torch::equal(padded.mask, general.mask));
  EXPECT_TRUE(torch::equal(padded.lengths, torch::tensor({4, 0, 2, 9})));
  EXPECT_TRUE(torch::equal(padded.embeds[1], torch::zeros({9, H}, torch::kDouble)));
  EXPECT_THROW(group_merge_right_padded(states, torch::tensor({13, 0, 6, 14}), rates), gmsa::Error);
  EXPECT_THROW(group_merge_right_padded(states, torch::tensor({13, 0, 6}), rates), gmsa::Error);
  EXPECT_THROW(group_merge_right_padded(states, torch::tensor(lens), torch::tensor({4, 0, 5, 1})), gmsa::Error);
  EXPECT_THROW(group_merge_right_padded(states[0], torch::tensor({13}), torch::tensor({4})), gmsa::Error);
}

// Sizes live on the host: the soft-token lengths are a CPU tensor whatever hidden's device, and
// with host lengths and rates nothing is read from the device (checked on CUDA builds with a GPU).
TEST(GroupMerging, LengthsAreOnTheHost) {
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  for (const auto& device : devices) {
    auto states = torch::randn({2, 5, 3}, torch::TensorOptions().device(device));
    auto mask = torch::ones({2, 5}, torch::TensorOptions().dtype(torch::kLong).device(device));
    auto from_mask = group_merge(states, mask, torch::tensor({2, 5}));
    SoftTokens from_host;
    {
#if defined(GMSA_HAVE_C10_CUDA)
      std::optional<gmsa::testing::ForbidCudaSync> no_sync;
      if (device.is_cuda()) no_sync.emplace();
#endif
      from_host = group_merge(states, mask, torch::tensor({2, 5}), torch::tensor({5, 5}));
    }
    for (const auto& soft : {from_mask, from_host}) {
      EXPECT_TRUE(soft.lengths.is_cpu()) << device;
      EXPECT_EQ(soft.lengths.scalar_type(), torch::kLong);
      EXPECT_TRUE(torch::equal(soft.lengths, torch::tensor({3, 1})));
      EXPECT_EQ(soft.embeds.device().type(), device.type());  // "cuda:0" for "cuda"
      EXPECT_EQ(soft.mask.device().type(), device.type());
    }
  }
}

TEST(GroupMerging, RejectsHostLengthsOutsideTheRow) {
  auto states = torch::randn({2, 4, 3});
  auto mask = torch::ones({2, 4}, torch::kLong);
  EXPECT_THROW(group_merge(states, mask, torch::tensor({1, 1}), torch::tensor({4, 5})), gmsa::Error);
  EXPECT_THROW(group_merge(states, mask, torch::tensor({1, 1}), torch::tensor({-1, 4})), gmsa::Error);
  EXPECT_THROW(group_merge(states, mask, torch::tensor({1, 1}), torch::tensor({4})), gmsa::Error);
}

class Methods : public ::testing::TestWithParam<std::string> {};

// A mixed batch (different context lengths, rates, prompts and targets) gives each row the
// logits and loss it gets alone.
TEST_P(Methods, PackedRowsEqualRowsAlone) {
  auto m = tiny_gmsa(GetParam(), 3);
  torch::NoGradGuard g;
  std::vector<Sample> samples(3);
  samples[0] = {{5, 6, 7, 8, 9, 10, 11}, {20, 21}, {30, 31, 32}};
  samples[1] = {{12, 13, 14}, {22, 23, 24, 25}, {33}};
  samples[2] = {{40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50}, {26}, {34, 35, 36, 37, 38}};
  std::vector<int64_t> rates{4, 8, 2};
  auto to_batch = [](std::vector<const Sample*> ss, std::vector<int64_t> rs) {
    std::vector<std::vector<int>> ctx, text;
    ModelBatch b;
    int64_t L = 0, P = 0;
    for (auto* s : ss) {
      L = std::max<int64_t>(L, s->context.size());
      P = std::max<int64_t>(P, s->prompt.size() + s->target.size());
    }
    b.context_ids = torch::zeros({(int64_t)ss.size(), L}, torch::kLong);
    b.text.ids = torch::zeros({(int64_t)ss.size(), P}, torch::kLong);
    std::vector<int64_t> cl, pl, tl;
    for (size_t i = 0; i < ss.size(); ++i) {
      for (size_t j = 0; j < ss[i]->context.size(); ++j) b.context_ids[i][j] = ss[i]->context[j];
      std::vector<int> t = ss[i]->prompt;
      t.insert(t.end(), ss[i]->target.begin(), ss[i]->target.end());
      for (size_t j = 0; j < t.size(); ++j) b.text.ids[i][j] = t[j];
      cl.push_back(ss[i]->context.size());
      pl.push_back(ss[i]->prompt.size());
      tl.push_back(ss[i]->target.size());
    }
    b.context_lengths = torch::tensor(cl);
    b.rates = torch::tensor(rs);
    b.text.prompt_lengths = torch::tensor(pl);
    b.text.target_lengths = torch::tensor(tl);
    return b;
  };
  auto full = to_batch({&samples[0], &samples[1], &samples[2]}, rates);
  auto soft = m.compress(full.context_ids, full.context_lengths, full.rates);
  auto packed = pack_decoder_input(m.decoder, soft, full.text);
  DecoderInput in;
  in.inputs_embeds = packed.embeds;
  auto logits = m.decoder->forward(in).logits;
  for (int i = 0; i < 3; ++i) {
    auto one = to_batch({&samples[i]}, {rates[i]});
    auto soft1 = m.compress(one.context_ids, one.context_lengths, one.rates);
    auto packed1 = pack_decoder_input(m.decoder, soft1, one.text);
    DecoderInput in1;
    in1.inputs_embeds = packed1.embeds;
    auto logits1 = m.decoder->forward(in1).logits;
    const int64_t n = packed1.lengths[0].item<int64_t>();
    ASSERT_EQ(n, packed.lengths[i].item<int64_t>());
    EXPECT_LT((logits[i].narrow(0, 0, n) - logits1[0]).abs().max().item<double>(), 1e-5) << "row " << i;
    EXPECT_TRUE(torch::equal(packed.labels[i].narrow(0, 0, n), packed1.labels[0]));
    auto loss_alone = target_loss(m.decoder, packed1);
    EXPECT_EQ(loss_alone.tokens.item<int64_t>(), (int64_t)samples[i].target.size());
  }
  // The loss sums of the batch equal the sum of the rows' sums.
  double sum_rows = 0;
  for (int i = 0; i < 3; ++i) sum_rows += m.loss(to_batch({&samples[i]}, {rates[i]})).nll_sum.item<double>();
  EXPECT_NEAR(m.loss(full).nll_sum.item<double>(), sum_rows, 1e-3);
}

TEST_P(Methods, SoftTokenCountIsCeilLOverR) {
  auto m = tiny_gmsa(GetParam());
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 90, {2, 13}, torch::kLong);
  auto soft = m.compress(ids, torch::tensor({13, 6}), torch::tensor({4, 8}));
  EXPECT_EQ(soft.lengths[0].item<int64_t>(), 4);
  EXPECT_EQ(soft.lengths[1].item<int64_t>(), 1);
  EXPECT_EQ(soft.embeds.size(1), 4);
  auto padding = soft.embeds[1].narrow(0, 1, 3);  // zero, whatever LSA or the MLP map zeros to
  EXPECT_TRUE(torch::equal(padding, torch::zeros_like(padding)));
  EXPECT_TRUE(torch::equal(soft.mask, torch::tensor({1, 1, 1, 1, 1, 0, 0, 0}).view({2, 4})));
}

// Sizes live on the host: the compressor's soft-token lengths and the packed input's lengths
// are CPU tensors, and a batch moved to a device keeps its lengths and rates on the host.
TEST_P(Methods, LengthsStayOnTheHost) {
  auto m = tiny_gmsa(GetParam());
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 90, {2, 9}, torch::kLong);
  auto soft = m.compress(ids, torch::tensor({9, 5}), torch::tensor({2, 4}));
  EXPECT_TRUE(soft.lengths.is_cpu());
  EXPECT_TRUE(torch::equal(soft.lengths, torch::tensor({5, 2})));
  TextBatch text{torch::randint(3, 90, {2, 4}, torch::kLong), torch::tensor({1, 2}), torch::tensor({3, 1})};
  auto packed = pack_decoder_input(m.decoder, soft, text);
  EXPECT_TRUE(packed.lengths.is_cpu());
  EXPECT_TRUE(torch::equal(packed.lengths, torch::tensor({9, 5})));
  EXPECT_EQ(packed.embeds.size(1), 9);
  ModelBatch b;
  b.context_ids = ids;
  b.context_lengths = torch::tensor({9, 5});
  b.rates = torch::tensor({2, 4});
  b.text = text;
  auto moved = b.to(torch::kCPU);
  EXPECT_TRUE(moved.context_lengths.is_cpu() && moved.rates.is_cpu());
  EXPECT_TRUE(moved.text.prompt_lengths.is_cpu() && moved.text.target_lengths.is_cpu());
}

TEST_P(Methods, RejectsBadLengthsAndRatesClearly) {
  auto m = tiny_gmsa(GetParam());
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 90, {2, 6}, torch::kLong);
  auto message = [&](const torch::Tensor& lengths, const torch::Tensor& rates) -> std::string {
    try {
      m.compress(ids, lengths, rates);
    } catch (const gmsa::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(torch::tensor({6, 7}), torch::tensor({2, 2})).find("[0, 6]"), std::string::npos);
  EXPECT_NE(message(torch::tensor({6, -1}), torch::tensor({2, 2})).find("[0, 6]"), std::string::npos);
  EXPECT_NE(message(torch::tensor({6, 3}), torch::tensor({2, 0})).find("rate must be >= 1"), std::string::npos);
  EXPECT_NE(message(torch::tensor({6}), torch::tensor({2, 2})).find("must be [2]"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(All, Methods, ::testing::Values("gmsa", "tcp"));

namespace {

ModelBatch one_batch() {
  ModelBatch b;
  b.context_ids = torch::tensor({{5, 6, 7, 8, 9, 10}}, torch::kLong);
  b.context_lengths = torch::tensor({6});
  b.rates = torch::tensor({4});
  b.text.ids = torch::tensor({{20, 21, 5, 6, 7, 8, 9, 10, 2}}, torch::kLong);
  b.text.prompt_lengths = torch::tensor({2});
  b.text.target_lengths = torch::tensor({7});
  return b;
}

std::set<std::string> with_grad(GmsaModel& m) {
  std::set<std::string> s;
  for (auto& p : m.decoder->named_parameters())
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) s.insert("decoder." + p.key());
  for (auto& p : m.compressor->named_parameters())
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) s.insert("compressor." + p.key());
  return s;
}

}  // namespace

TEST(Stages, AutoencoderTrainsExactlyLoraAndLsaAndLeavesDecoderUntouched) {
  auto m = tiny_gmsa("gmsa", 4);
  auto stage = make_stage(stage_cfg("ae"));
  auto trained = stage->select_trainable(m);
  std::set<std::string> names;
  for (auto& [n, t] : trained) names.insert(n);
  for (auto& n : names)
    EXPECT_TRUE(n.find("lora_") != std::string::npos || n.rfind("compressor.lsa.blocks.", 0) == 0) << n;
  EXPECT_EQ(names.count("compressor.lsa.norm.weight"), 0u);
  std::map<std::string, torch::Tensor> before;
  for (auto& p : m.decoder->named_parameters()) before[p.key()] = p.value().clone();
  m.decoder->train();
  m.compressor->train();
  m.loss(one_batch()).nll_sum.backward();
  auto got = with_grad(m);
  for (auto& n : got) EXPECT_TRUE(names.count(n)) << n << " got a gradient but is not trained";
  // Every LoRA B (and the LSA block) receives a gradient.
  for (auto& n : names)
    if (n.find("lora_B") != std::string::npos || n.find("lsa.blocks.0.mlp.down_proj") != std::string::npos)
      EXPECT_TRUE(got.count(n)) << n;
  // An update of the trained parameters leaves the decoder bit-identical.
  {
    torch::NoGradGuard g;
    for (auto& [n, t] : trained)
      if (t.grad().defined()) t.sub_(t.grad() * 0.1);
  }
  for (auto& p : m.decoder->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), before[p.key()])) << p.key();
}

TEST(Stages, KeftTrainsOnlyDecoderQkvAndEncoderKeepsItsWeights) {
  auto m = tiny_gmsa("gmsa", 5);
  torch::NoGradGuard outer;
  auto b = one_batch();
  auto soft_before = m.compress(b.context_ids, b.context_lengths, b.rates).embeds.clone();
  auto stage = make_stage(stage_cfg("keft"));
  auto trained = stage->select_trainable(m);
  for (auto& [n, t] : trained)
    EXPECT_TRUE(std::regex_search(n, std::regex(R"(self_attn\.(q|k|v)_proj)"))) << n;
  EXPECT_EQ(trained.size(), 3u * 3u);  // 3 layers x q, k, v weights (llama: no biases)
  {
    torch::AutoGradMode on(true);
    m.loss(b).nll_sum.backward();
  }
  auto got = with_grad(m);
  for (auto& n : got) EXPECT_TRUE(std::regex_search(n, std::regex(R"(^decoder\..*self_attn\.(q|k|v)_proj)"))) << n;
  for (auto& [n, t] : trained) t.sub_(t.grad() * 0.5);
  auto soft_after = m.compress(b.context_ids, b.context_lengths, b.rates).embeds;
  EXPECT_TRUE(torch::equal(soft_before, soft_after)) << "the encoder's output moved after decoder updates";
}

TEST(Stages, FullFinetuneWithPatterns) {
  auto m = tiny_gmsa("gmsa", 6);
  auto cfg = stage_cfg("ft");
  cfg.stage.train_patterns = {"mlp\\.down_proj"};
  auto trained = make_stage(cfg)->select_trainable(m);
  EXPECT_EQ(trained.size(), 3u);
  cfg.stage.train_patterns = {};
  auto all = make_stage(cfg)->select_trainable(m);
  EXPECT_EQ(all.size(), m.decoder->parameters().size());
}

TEST(Stages, TcpAutoencoderTrainsMemoryMlpAndLora) {
  auto m = tiny_gmsa("tcp", 7);
  auto trained = make_stage(stage_cfg("ae"))->select_trainable(m);
  std::set<std::string> names;
  for (auto& [n, t] : trained) names.insert(n);
  EXPECT_TRUE(names.count("compressor.memory.memory"));
  EXPECT_TRUE(names.count("compressor.memory.mlp.0.weight"));
  m.decoder->train();
  m.compressor->train();
  m.loss(one_batch()).nll_sum.backward();
  auto got = with_grad(m);
  EXPECT_TRUE(got.count("compressor.memory.memory"));
  for (auto& n : got) EXPECT_TRUE(names.count(n)) << n;
}

TEST(CompressorFiles, SaveLoadRoundTripAndMismatchErrors) {
  gmsa::testing::TempDir dir;
  auto m = tiny_gmsa("gmsa", 8);
  save_compressor(dir.path.string(), m.compressor, m.decoder->config(), "base-model-path");
  auto b = one_batch();
  torch::NoGradGuard g;
  auto before = m.compress(b.context_ids, b.context_lengths, b.rates).embeds;
  auto loaded = load_compressor(dir.path.string(), m.decoder);
  loaded->eval();
  auto after = loaded->forward(b.context_ids, b.context_lengths, b.rates).embeds;
  EXPECT_TRUE(torch::equal(before, after));
  EXPECT_EQ(compressor_base_model(dir.path.string()), "base-model-path");
  auto other_cfg = gmsa::testing::tiny_config("llama");
  other_cfg.hidden_size = 64;
  other_cfg.head_dim = 16;
  Decoder other(other_cfg);
  try {
    load_compressor(dir.path.string(), other);
    FAIL();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
  }
}

// Activation checkpointing recomputes each layer in backward: same loss and gradients, with
// LoRA dropout on (the forward's RNG draws are replayed in the recomputation).
TEST(ActivationCheckpointing, SameLossAndGradients) {
  auto run = [](bool checkpointing) {
    Decoder d(gmsa::testing::tiny_config("llama"));
    gmsa::testing::randomize(*d, 21);
    for (auto& p : d->parameters()) p.set_requires_grad(false);
    auto cc = small_compressor("gmsa");
    cc.lora.dropout = 0.2;
    torch::manual_seed(22);
    Compressor c(d, cc);
    GmsaModel m(d, c);
    auto trained = make_stage(stage_cfg("ae"))->select_trainable(m);
    m.decoder->train();
    m.compressor->train();
    m.decoder->set_activation_checkpointing(checkpointing);
    torch::manual_seed(5);
    auto sums = m.loss(one_batch());
    sums.nll_sum.backward();
    std::vector<torch::Tensor> grads;
    for (auto& [n, t] : trained) grads.push_back(t.grad().defined() ? t.grad().clone() : torch::zeros_like(t));
    return std::make_pair(sums.nll_sum.item<double>(), grads);
  };
  auto plain = run(false), ckpt = run(true);
  EXPECT_DOUBLE_EQ(plain.first, ckpt.first);
  ASSERT_EQ(plain.second.size(), ckpt.second.size());
  for (size_t i = 0; i < plain.second.size(); ++i)
    EXPECT_TRUE(torch::allclose(plain.second[i], ckpt.second[i], 1e-5, 1e-7)) << i;
}

// Inference with the adapters merged into private encoder weights computes the same soft
// tokens, leaves the decoder's shared weights alone, and refuses to be saved.
TEST(Compressor, MergedLoraGivesTheSameSoftTokens) {
  Decoder d(gmsa::testing::tiny_config());
  gmsa::testing::randomize(*d, 2);
  d->eval();
  d->pack_projections();
  Compressor c(d, gmsa::testing::small_compressor());
  gmsa::testing::randomize_lora_b(*c);
  c->eval();
  torch::NoGradGuard g;
  auto ids = torch::randint(3, 97, {2, 13}, torch::kLong);
  auto before = c->forward(ids, torch::tensor({13, 9}), torch::tensor({4, 2})).embeds;
  auto decoder_q = d->model->layer(0)->self_attn->q_proj->weight.clone();
  c->encoder->merge_lora();
  EXPECT_TRUE(c->encoder->lora_merged());
  EXPECT_FALSE(c->encoder->layers[0]->self_attn->q_proj->has_lora());
  EXPECT_TRUE(c->encoder->layers[0]->self_attn->packed_qkv().defined());
  auto after = c->forward(ids, torch::tensor({13, 9}), torch::tensor({4, 2})).embeds;
  EXPECT_LT(gmsa::testing::max_rel_diff(after, before), 1e-5);
  EXPECT_TRUE(torch::equal(d->model->layer(0)->self_attn->q_proj->weight, decoder_q));
  gmsa::testing::TempDir dir;
  EXPECT_THROW(save_compressor(dir / "c", c, d->config(), ""), gmsa::Error);
}
