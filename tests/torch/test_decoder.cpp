#include <fstream>

#include "gmsa/io/llama2c.h"
#include "gmsa/model/decoder.h"
#include "gmsa/model/generation.h"
#include "gmsa/text/tokenizer.h"
#include "gmsa/util/error.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::max_rel_diff;

namespace {

Decoder make(const std::string& type, uint64_t seed = 0) {
  Decoder d(gmsa::testing::tiny_config(type));
  gmsa::testing::randomize(*d, seed);
  d->eval();
  return d;
}

torch::Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, V, {B, T}, torch::kLong);
}

}  // namespace

class DecoderFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderFamilies, IncrementalDecodingMatchesFullForward) {
  auto d = make(GetParam());
  torch::NoGradGuard g;
  auto ids = random_ids(2, 12, 97, 1);
  auto full = d->forward({ids}).logits;
  auto cache = KVCache::allocate(d->config(), 2, 12, torch::TensorOptions());
  DecoderInput a;
  a.input_ids = ids.narrow(1, 0, 7);
  a.cache = &cache;
  auto first = d->forward(a).logits;
  std::vector<torch::Tensor> steps{first};
  for (int64_t t = 7; t < 12; ++t) {
    DecoderInput s;
    s.input_ids = ids.narrow(1, t, 1);
    s.cache = &cache;
    steps.push_back(d->forward(s).logits);
  }
  EXPECT_LT(max_rel_diff(torch::cat(steps, 1), full), 1e-5);
}

TEST_P(DecoderFamilies, EmbeddingsInputEqualsIds) {
  auto d = make(GetParam());
  torch::NoGradGuard g;
  auto ids = random_ids(2, 9, 97, 2);
  DecoderInput e;
  e.inputs_embeds = d->embed(ids);
  EXPECT_TRUE(torch::equal(d->forward({ids}).logits, d->forward(e).logits));
}

TEST_P(DecoderFamilies, LeftPaddedRowMatchesUnpadded) {
  auto d = make(GetParam());
  torch::NoGradGuard g;
  auto ids = random_ids(1, 6, 97, 3);
  auto alone = d->forward({ids}).logits;
  auto padded_ids = torch::cat({torch::zeros({1, 4}, torch::kLong), ids}, 1);
  DecoderInput p;
  p.input_ids = padded_ids;
  p.attention_mask = torch::cat({torch::zeros({1, 4}, torch::kLong), torch::ones({1, 6}, torch::kLong)}, 1);
  p.position_ids = positions_from_mask(p.attention_mask);
  auto out = d->forward(p).logits.narrow(1, 4, 6);
  EXPECT_LT(max_rel_diff(out, alone), 1e-5);
  EXPECT_FALSE(d->forward(p).logits.isnan().any().item<bool>());
}

// The fixed-shape decoding step (static cache written at a device column, attention over the
// whole capacity under a mask) must give what recomputing the full sequence gives.
TEST_P(DecoderFamilies, GreedyGenerationMatchesFullRecomputation) {
  auto cfg = gmsa::testing::tiny_config(GetParam());
  if (GetParam() == "mistral") cfg.sliding_window = 5;  // bites within the prompt and the decoding
  Decoder d(cfg);
  gmsa::testing::randomize(*d, 21);
  d->eval();
  GenerationConfig g;
  g.max_new_tokens = 10;
  g.eos_ids = {-1};
  std::vector<GenerationPrompt> prompts = {{{}, {5, 9, 11}}, {{}, {7, 8, 9, 10, 12, 30, 31, 40}}};
  auto batched = generate(d, prompts, g);
  EXPECT_EQ(batched.steps, 9);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> seq = prompts[i].ids, expect;
    torch::NoGradGuard no_grad;
    for (int t = 0; t < 10; ++t) {
      DecoderInput in;
      in.input_ids = torch::tensor(seq, torch::kLong).unsqueeze(0);
      auto next = d->forward(in).logits[0][-1].argmax().item<int64_t>();
      expect.push_back(next);
      seq.push_back(next);
    }
    EXPECT_EQ(batched.tokens[i], expect) << "prompt " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(All, DecoderFamilies, ::testing::Values("llama", "mistral", "qwen2", "qwen3"));

TEST(Decoder, FirstKLayersAndHiddenAfterLayer) {
  auto d = make("llama");
  torch::NoGradGuard g;
  auto ids = random_ids(1, 5, 97, 4);
  DecoderInput a;
  a.input_ids = ids;
  a.num_layers = 2;
  a.final_norm = false;
  a.compute_logits = false;
  auto two = d->forward(a).last_hidden;
  DecoderInput b;
  b.input_ids = ids;
  b.hidden_after_layer = 2;
  auto full = d->forward(b);
  EXPECT_TRUE(torch::equal(two, full.hidden_at));
  EXPECT_FALSE(torch::equal(two, full.last_hidden));
}

TEST(Decoder, QwenHasQkvBiasAndQwen3HasQkNorm) {
  auto names = [](Decoder d) {
    std::set<std::string> s;
    for (auto& p : d->named_parameters()) s.insert(p.key());
    return s;
  };
  auto q2 = names(Decoder(gmsa::testing::tiny_config("qwen2")));
  EXPECT_TRUE(q2.count("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(q2.count("model.layers.0.self_attn.o_proj.bias"));
  auto q3 = names(Decoder(gmsa::testing::tiny_config("qwen3")));
  EXPECT_TRUE(q3.count("model.layers.2.self_attn.k_norm.weight"));
  EXPECT_FALSE(q3.count("model.layers.0.self_attn.q_proj.bias"));
  auto ll = names(Decoder(gmsa::testing::tiny_config("llama")));
  EXPECT_TRUE(ll.count("lm_head.weight"));
}

TEST(Generation, BatchOfDifferentLengthsMatchesOneByOne) {
  auto d = make("llama", 7);
  GenerationConfig cfg;
  cfg.max_new_tokens = 8;
  cfg.eos_ids = {-1};
  std::vector<GenerationPrompt> prompts = {{{}, {5, 9, 11}}, {{}, {7, 8, 9, 10, 12, 30, 31}}};
  auto batched = generate(d, prompts, cfg);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = generate(d, {prompts[i]}, cfg);
    EXPECT_EQ(batched.tokens[i], alone.tokens[0]) << "prompt " << i;
  }
}

TEST(Generation, EachRowStopsAtItsFirstEos) {
  auto d = make("llama", 7);
  GenerationConfig cfg;
  cfg.max_new_tokens = 12;
  cfg.eos_ids = {-1};
  std::vector<GenerationPrompt> prompts = {{{}, {5, 9, 11}}, {{}, {7, 8, 9, 10}}};
  auto full = generate(d, prompts, cfg).tokens;
  ASSERT_EQ(full[0].size(), 12u);
  cfg.eos_ids = {full[0][2]};  // row 0 ends after two tokens (or earlier if it repeats)
  auto cut = generate(d, prompts, cfg);
  for (size_t r = 0; r < full.size(); ++r) {
    auto end = std::find(full[r].begin(), full[r].end(), full[0][2]);
    EXPECT_EQ(cut.tokens[r], std::vector<int64_t>(full[r].begin(), end)) << "row " << r;
  }
  EXPECT_LE(cut.tokens[0].size(), 2u);
}

// Generation stops soon after every row has ended: the host reads the finished flag a few steps
// late (FinishedFlag), never at the token budget.
TEST(Generation, StopsOnceEveryRowHasEnded) {
  auto d = make("llama", 7);
  GenerationConfig cfg;
  cfg.max_new_tokens = 40;
  cfg.eos_ids = {-1};
  std::vector<GenerationPrompt> prompts = {{{}, {5, 9, 11}}, {{}, {7, 8, 9, 10}}};
  auto full = generate(d, prompts, cfg).tokens;
  cfg.eos_ids = {full[0][1], full[1][1]};  // both rows end by their second token
  auto cut = generate(d, prompts, cfg);
  EXPECT_LT(cut.steps, 8);
  for (size_t r = 0; r < full.size(); ++r) {
    auto end = std::find_first_of(full[r].begin(), full[r].end(), cfg.eos_ids.begin(), cfg.eos_ids.end());
    EXPECT_EQ(cut.tokens[r], std::vector<int64_t>(full[r].begin(), end)) << "row " << r;
  }
}

TEST(Generation, TokenOutsideTheVocabularyIsAClearError) {
  auto d = make("llama", 7);
  GenerationConfig cfg;
  cfg.max_new_tokens = 2;
  const int64_t V = d->config().vocab_size;
  try {
    generate(d, {{{}, {5, 9}}, {{}, {7, V}}}, cfg);
    FAIL();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt 1 has token id " + std::to_string(V)), std::string::npos) << e.what();
  }
}

TEST(Generation, SoftPrefixEqualsItsTokens) {
  auto d = make("llama", 8);
  GenerationConfig cfg;
  cfg.max_new_tokens = 6;
  cfg.eos_ids = {-1};
  std::vector<int64_t> ids{4, 5, 6, 7, 8};
  auto prefix = d->embed(torch::tensor(std::vector<int64_t>{4, 5, 6}, torch::kLong)).detach();
  auto a = generate(d, {{{}, ids}}, cfg);
  auto b = generate(d, {{prefix, {7, 8}}}, cfg);
  EXPECT_EQ(a.tokens[0], b.tokens[0]);
}

TEST(Generation, RepetitionPenaltyChangesGreedyAndSamplingIsSeeded) {
  auto d = make("llama", 9);
  GenerationConfig g;
  g.max_new_tokens = 20;
  g.eos_ids = {-1};
  auto plain = generate(d, {{{}, {3, 4}}}, g).tokens[0];
  g.repetition_penalty = 5.0;
  auto pen = generate(d, {{{}, {3, 4}}}, g).tokens[0];
  std::set<int64_t> distinct_plain(plain.begin(), plain.end()), distinct_pen(pen.begin(), pen.end());
  EXPECT_GT(distinct_pen.size(), distinct_plain.size());
  GenerationConfig s;
  s.max_new_tokens = 10;
  s.do_sample = true;
  s.top_k = 20;
  s.top_p = 0.9;
  s.seed = 123;
  s.eos_ids = {-1};
  auto s1 = generate(d, {{{}, {3, 4}}}, s).tokens[0];
  auto s2 = generate(d, {{{}, {3, 4}}}, s).tokens[0];
  EXPECT_EQ(s1, s2);
  s.seed = 124;
  EXPECT_NE(generate(d, {{{}, {3, 4}}}, s).tokens[0], s1);
}

TEST(Llama2c, Stories260kGreedyReproducesPublishedSample) {
  GMSA_REQUIRE_DATA("llama2c-stories260k/stories260K.bin");
  auto ck = read_llama2c(data_path);
  Decoder d(ck.config);
  load_parameters(*d, ck.tensors, data_path);
  auto tok = load_tokenizer(gmsa::testing::data_dir() + "/llama2c-stories260k/tok512.model");
  auto ids = tok->encode("Once upon a time", /*add_bos=*/true, false);
  GenerationConfig cfg;
  cfg.max_new_tokens = 60;
  auto out = generate(d, {{{}, std::vector<int64_t>(ids.begin(), ids.end())}}, cfg);
  std::vector<int> all(ids.begin(), ids.end());
  all.insert(all.end(), out.tokens[0].begin(), out.tokens[0].end());
  const std::string text = tok->decode(all);
  const std::string published =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball.";
  EXPECT_EQ(text.substr(0, published.size()), published) << text;
}

TEST(Llama2c, TruncatedFileIsAClearError) {
  gmsa::testing::TempDir dir;
  std::ofstream(dir / "bad.bin", std::ios::binary) << std::string(40, '\x01');
  try {
    read_llama2c(dir / "bad.bin");
    FAIL();
  } catch (const gmsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.bin"), std::string::npos) << e.what();
  }
}

// LoRA (Hu et al. 2021): y = x W^T + b + (alpha / r) * (x A^T) B^T, values and gradients.
TEST(Lora, ForwardAndGradientsFollowTheDefinition) {
  torch::manual_seed(3);
  Linear lin(12, 10, true);
  lin->add_lora({4, 8.0, 0.0});
  torch::NoGradGuard off;
  lin->lora_B.normal_(0, 0.3);
  torch::AutoGradMode on(true);
  auto x = torch::randn({2, 5, 12});
  auto y = lin(x);
  auto A = lin->lora_A.detach().clone().requires_grad_(true), Bm = lin->lora_B.detach().clone().requires_grad_(true);
  auto expect = torch::matmul(x, lin->weight.t()) + lin->bias + 2.0 * torch::matmul(torch::matmul(x, A.t()), Bm.t());
  EXPECT_LT(max_rel_diff(y.detach(), expect.detach()), 1e-5);
  auto w = torch::randn({2, 5, 10});
  (y * w).sum().backward();
  (expect * w).sum().backward();
  EXPECT_LT(max_rel_diff(lin->lora_A.grad(), A.grad()), 1e-5);
  EXPECT_LT(max_rel_diff(lin->lora_B.grad(), Bm.grad()), 1e-5);
}

// residual + x W^T with the residual as the GEMM's accumulator (inference): the sum of the
// plain ops; the residual is overwritten only when handed over; in training mode (a
// checkpointed layer's first pass), with autograd, LoRA or a bias the plain ops run.
TEST(Linear, ForwardAddEqualsTheSumAndOnlyReusesWhenAllowed) {
  torch::manual_seed(4);
  Linear lin(12, 10, false);
  auto x = torch::randn({2, 5, 12}), r = torch::randn({2, 5, 10});
  {
    torch::NoGradGuard off;
    auto kept = r.clone();
    ASSERT_TRUE(lin->is_training());
    EXPECT_TRUE(torch::allclose(lin->forward_add(x, kept, /*reuse=*/true), r + lin(x), 1e-6, 1e-6));
    EXPECT_TRUE(torch::equal(kept, r));  // training mode: the plain sum
  }
  lin->eval();
  torch::Tensor expect;
  {
    torch::NoGradGuard off;
    expect = r + lin(x);
    auto kept = r.clone();
    EXPECT_TRUE(torch::allclose(lin->forward_add(x, kept), expect, 1e-6, 1e-6));
    EXPECT_TRUE(torch::equal(kept, r));  // not handed over: untouched
    auto sum = lin->forward_add(x, kept, /*reuse=*/true);
    EXPECT_TRUE(torch::allclose(sum, expect, 1e-6, 1e-6));
    EXPECT_EQ(sum.data_ptr(), kept.data_ptr());  // handed over: the sum is written into it
  }
  auto leaf = x.clone().requires_grad_(true);
  auto traced = lin->forward_add(leaf, r, /*reuse=*/true);
  EXPECT_TRUE(traced.requires_grad());
  EXPECT_TRUE(torch::allclose(traced.detach(), expect, 1e-6, 1e-6));
  EXPECT_FALSE(torch::equal(r, expect));  // autograd: the plain sum, the residual left alone
  Linear biased(12, 10, true);
  biased->eval();
  torch::NoGradGuard off;
  auto kept = r.clone();
  EXPECT_TRUE(torch::allclose(biased->forward_add(x, kept, true), r + biased(x), 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(kept, r));
}

// Packed projections: q/k/v (gate/up) weights become views of one tensor and no-grad forwards
// run one GEMM per group; the model's function, names and trainability are unchanged.
TEST_P(DecoderFamilies, PackedProjectionsKeepTheFunction) {
  auto plain = make(GetParam(), 4), packed = make(GetParam(), 4);
  packed->pack_projections();
  auto names = [](torch::nn::Module& m) {
    std::vector<std::string> out;
    for (const auto& p : m.named_parameters(true)) out.push_back(p.key());
    return out;
  };
  EXPECT_EQ(names(*packed), names(*plain));
  auto attn = packed->model->layer(0)->self_attn;
  auto pq = attn->packed_qkv();
  ASSERT_TRUE(pq.defined());
  EXPECT_EQ(pq.weight.size(0), attn->q_proj->out_features + 2 * attn->k_proj->out_features);
  EXPECT_TRUE(packed->model->layer(0)->mlp->packed_gate_up().defined());
  auto ids = random_ids(2, 9, 97, 5);
  {
    torch::NoGradGuard g;
    EXPECT_LT(max_rel_diff(packed->forward({ids}).logits, plain->forward({ids}).logits), 1e-5);
  }
  // With gradients recorded the separate projections run: the same ops as the plain model.
  EXPECT_TRUE(torch::equal(packed->forward({ids}).logits, plain->forward({ids}).logits));
  // Loading into a projection (copy_) writes through to the packed tensor.
  {
    torch::NoGradGuard g;
    for (auto* d : {&plain, &packed}) (*d)->model->layer(0)->self_attn->k_proj->weight.mul_(1.5);
    EXPECT_TRUE(attn->packed_qkv().defined());
    EXPECT_LT(max_rel_diff(packed->forward({ids}).logits, plain->forward({ids}).logits), 1e-5);
  }
}

TEST(MLP, InferenceOnManyRowsRunsInRowChunks) {
  // Chunks of at most 7 of the 30 rows (5 chunks of 6): the block's output is what it is whole,
  // summed in place into the residual, which comes back itself (the whole-rows path returns a
  // view of it).
  auto d = make("llama", 6);
  d->pack_projections();
  d->eval();
  torch::NoGradGuard g;
  auto mlp = d->model->layer(0)->mlp;
  const int64_t hidden = mlp->gate_proj->in_features;
  auto x = torch::randn({3, 10, hidden}), residual = torch::randn({3, 10, hidden});
  struct Restore {
    int64_t rows = MLPImpl::chunk_rows();
    ~Restore() { MLPImpl::set_chunk_rows(rows); }
  } restore;
  MLPImpl::set_chunk_rows(0);
  auto whole_in = residual.clone();
  auto whole = mlp->forward(x, whole_in, /*reuse=*/true);
  EXPECT_FALSE(whole.is_same(whole_in));
  MLPImpl::set_chunk_rows(7);
  auto chunked_in = residual.clone();
  auto chunked = mlp->forward(x, chunked_in, /*reuse=*/true);
  EXPECT_TRUE(chunked.is_same(chunked_in));
  EXPECT_LT(max_rel_diff(chunked, whole), 1e-6);
  // Without reuse the residual is left alone, so the rows run whole.
  auto kept = residual.clone();
  EXPECT_LT(max_rel_diff(mlp->forward(x, kept), whole), 1e-6);
  EXPECT_TRUE(torch::equal(kept, residual));
  // The whole decoder, chunked and not.
  auto ids = random_ids(3, 10, 97, 11);
  auto logits_chunked = d->forward({ids}).logits;
  MLPImpl::set_chunk_rows(0);
  EXPECT_LT(max_rel_diff(logits_chunked, d->forward({ids}).logits), 1e-5);
  EXPECT_THROW(MLPImpl::set_chunk_rows(-1), std::exception);
}

TEST(PackedProjections, ReplacedOrAdaptedWeightsBreakThePack) {
  auto d = make("llama", 6);
  d->pack_projections();
  auto layer = d->model->layer(0);
  layer->self_attn->v_proj->untie_base();  // a private copy: no longer a view of the pack
  EXPECT_FALSE(layer->self_attn->packed_qkv().defined());
  EXPECT_TRUE(layer->mlp->packed_gate_up().defined());
  layer->mlp->up_proj->add_lora({2, 4.0, 0.0});
  EXPECT_FALSE(layer->mlp->packed_gate_up().defined());
  // Layers with LoRA are not packed in the first place.
  auto e = make("llama", 6);
  e->model->layer(0)->self_attn->q_proj->add_lora({2, 4.0, 0.0});
  e->pack_projections();
  EXPECT_FALSE(e->model->layer(0)->self_attn->packed_qkv().defined());
  EXPECT_TRUE(e->model->layer(1)->self_attn->packed_qkv().defined());
  // Unpacked layers compute what an unpacked model computes.
  auto plain = make("llama", 6);
  plain->model->layer(0)->mlp->up_proj->add_lora({2, 4.0, 0.0});
  torch::NoGradGuard g;
  plain->model->layer(0)->mlp->up_proj->lora_A.copy_(layer->mlp->up_proj->lora_A);
  auto ids = random_ids(1, 7, 97, 7);
  EXPECT_LT(max_rel_diff(d->forward({ids}).logits, plain->forward({ids}).logits), 1e-5);
}
