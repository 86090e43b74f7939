// Hugging Face model directories: save_pretrained -> load_pretrained for every family, configs
// written by transformers 5, and one clear error per way a model directory can be broken.
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include "gmsa/io/llama2c.h"
#include "gmsa/io/safetensors.h"
#include "gmsa/model/generation.h"
#include "gmsa/model/pretrained.h"
#include "gmsa/util/error.h"
#include "gmsa/util/io.h"
#include "test_util.h"

using namespace gmsa;
using gmsa::testing::TempDir;
namespace fs = std::filesystem;

namespace {

struct Family {
  std::string name;
  ModelConfig config;
};

std::ostream& operator<<(std::ostream& os, const Family& f) { return os << f.name; }

ModelConfig with_llama3_rope(ModelConfig c) {
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  // head_dim 8, theta 1e4: wavelengths 2*pi*{1, 10, 100, 1000} = 6.3, 63, 628, 6283. With an
  // original context of 64 (low-frequency wavelength 64, high 16) the first is kept, the
  // second smoothed and the last two divided by 8: every regime of the formula is used.
  c.rope_scaling.original_max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  return c;
}

std::vector<Family> families() {
  using gmsa::testing::tiny_config;
  auto mistral_sw = tiny_config("mistral");
  mistral_sw.sliding_window = 5;  // shorter than the test input: the band matters
  return {{"llama", tiny_config("llama")},
          {"llama3_rope_tied", with_llama3_rope(tiny_config("llama"))},
          {"mistral", tiny_config("mistral")},
          {"mistral_sliding_window", mistral_sw},
          {"qwen2", tiny_config("qwen2")},
          {"qwen3", tiny_config("qwen3")}};
}

Decoder random_decoder(const ModelConfig& c, uint64_t seed = 0) {
  Decoder d(c);
  gmsa::testing::randomize(*d, seed);
  d->eval();
  return d;
}

torch::Tensor logits_of(Decoder& d, const torch::Tensor& ids) {
  torch::NoGradGuard g;
  return d->forward({ids}).logits;
}

torch::Tensor test_ids(int64_t vocab) {
  torch::manual_seed(42);
  return torch::randint(3, vocab, {2, 24}, torch::kLong);
}

// A model directory holding a random tiny llama model; returns its logits on test_ids.
torch::Tensor write_model(const std::string& dir, const ModelConfig& c = gmsa::testing::tiny_config()) {
  auto d = random_decoder(c);
  save_pretrained(dir, d);
  return logits_of(d, test_ids(c.vocab_size));
}

// Runs `f`, expecting one gmsa::Error on one line that contains every string of `parts`.
template <typename F>
void expect_error(F f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << *parts.begin();
  } catch (const gmsa::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }
void write_json(const std::string& path, const nlohmann::json& j) { write_file_atomic(path, j.dump(2)); }

// Rewrites a safetensors file's JSON header (length prefix included), keeping the data bytes.
void edit_header(const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
  std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  edit(header);
  const std::string text = header.dump();
  const uint64_t m = text.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  write_file_atomic(path, out + text + bytes.substr(8 + n));
}

}  // namespace

// ---- round trips ----

class PretrainedRoundTrip : public ::testing::TestWithParam<Family> {};

TEST_P(PretrainedRoundTrip, SaveThenLoadGivesIdenticalLogitsAndConfig) {
  const auto& c = GetParam().config;
  TempDir dir;
  auto original = random_decoder(c, 3);
  save_pretrained(dir / "model", original);
  auto loaded = load_pretrained(dir / "model");
  EXPECT_EQ(loaded.tokenizer, nullptr);  // none saved, none required
  const auto& lc = loaded.decoder->config();
  EXPECT_EQ(lc.model_type, c.model_type);
  EXPECT_EQ(lc.num_key_value_heads, c.num_key_value_heads);
  EXPECT_EQ(lc.rope_scaling.type, c.rope_scaling.type);
  EXPECT_EQ(lc.rope_scaling.original_max_position_embeddings, c.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(lc.tie_word_embeddings, c.tie_word_embeddings);
  EXPECT_EQ(lc.sliding_window, c.sliding_window);
  EXPECT_EQ(lc.has_qkv_bias(), c.has_qkv_bias());
  EXPECT_EQ(lc.qk_norm, c.qk_norm);
  EXPECT_EQ(lc.eos_token_ids, c.eos_token_ids);
  auto ids = test_ids(c.vocab_size);
  // A loaded model runs packed q/k/v and gate/up GEMMs (another summation order): pack the
  // original as well, so that equal weights must give bit-identical logits.
  original->pack_projections();
  EXPECT_TRUE(torch::equal(logits_of(loaded.decoder, ids), logits_of(original, ids)));
  // Tied models store no lm_head, as transformers does.
  SafetensorsFile f(dir / "model/model.safetensors");
  EXPECT_EQ(f.has("lm_head.weight"), !c.tie_word_embeddings);
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

INSTANTIATE_TEST_SUITE_P(Families, PretrainedRoundTrip, ::testing::ValuesIn(families()),
                         [](const auto& info) { return info.param.name; });

TEST(Pretrained, Bf16RoundTripIsExactAndRecordsTheDtype) {
  TempDir dir;
  auto d = random_decoder(gmsa::testing::tiny_config("qwen3"));
  d->to(torch::kBFloat16);
  save_pretrained(dir / "m", d);
  EXPECT_EQ(read_json(dir / "m/config.json").at("torch_dtype"), "bfloat16");
  LoadOptions o;
  o.dtype = torch::kBFloat16;
  auto loaded = load_pretrained(dir / "m", o);
  for (auto& [name, t] : state_of(*d))
    EXPECT_TRUE(torch::equal(t, loaded.decoder->named_parameters()[name])) << name;
}

// ---- configs as transformers 5 writes them ----

// LLaMA-3.2-1B's config.json in the transformers 5 form: rope_theta and the llama3 scaling
// live in rope_parameters, "dtype" replaces "torch_dtype", and layer_types is present.
const char* kLlama32Config = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention",
                  "full_attention", "full_attention", "full_attention", "full_attention",
                  "full_attention", "full_attention", "full_attention", "full_attention",
                  "full_attention", "full_attention", "full_attention", "full_attention"],
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": true,
  "transformers_version": "5.0.0",
  "use_cache": true,
  "vocab_size": 128256
})";

TEST(PretrainedConfig, Transformers5Llama32IsRead) {
  TempDir dir;
  write_file_atomic(dir / "config.json", kLlama32Config);
  auto c = ModelConfig::from_file(dir / "config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  // Published size of Llama-3.2-1B, 1,235,814,400, derived: embeddings 128256*2048 =
  // 262,668,288 (tied: once); per layer q,o 2*2048*2048 + k,v 2*2048*512 = 10,485,760,
  // MLP 3*2048*8192 = 50,331,648, two norms 4096: 60,821,504, times 16 = 973,144,064;
  // final norm 2048.
  EXPECT_EQ(c.num_parameters(), 1235814400);
}

// Qwen3 in transformers 5 form: default rope in rope_parameters, explicit head_dim != H / heads,
// sliding window configured but off (use_sliding_window false, all layers full attention).
TEST(PretrainedConfig, Transformers5Qwen3IsRead) {
  nlohmann::json j = {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"},
                      {"vocab_size", 151936}, {"hidden_size", 1024}, {"intermediate_size", 3072},
                      {"num_hidden_layers", 28}, {"num_attention_heads", 16},
                      {"num_key_value_heads", 8}, {"head_dim", 128}, {"rms_norm_eps", 1e-6},
                      {"rope_parameters", {{"rope_theta", 1000000.0}, {"rope_type", "default"}}},
                      {"layer_types", std::vector<std::string>(28, "full_attention")},
                      {"use_sliding_window", false}, {"sliding_window", nullptr},
                      {"max_window_layers", 28}, {"attention_bias", false},
                      {"tie_word_embeddings", true}, {"dtype", "bfloat16"}};
  auto c = ModelConfig::from_json(j, "qwen3/config.json");
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_dim(), 2048);  // not hidden_size
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.has_qkv_bias());
  EXPECT_FALSE(c.sliding_window.has_value());
}

// The rope parameters are not only parsed but used: a model saved with top-level rope_scaling
// and reloaded from a transformers-5 config (rope_parameters only) computes the same logits.
TEST(PretrainedConfig, RopeParametersDriveTheModel) {
  TempDir dir;
  auto c = with_llama3_rope(gmsa::testing::tiny_config("llama"));
  c.rope_theta = 5000;
  auto d = random_decoder(c, 5);
  save_pretrained(dir / "m", d);
  auto j = read_json(dir / "m/config.json");
  j["rope_parameters"] = j["rope_scaling"];
  j["rope_parameters"]["rope_theta"] = j["rope_theta"];
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["layer_types"] = std::vector<std::string>(c.num_hidden_layers, "full_attention");
  write_json(dir / "m/config.json", j);
  auto loaded = load_pretrained(dir / "m");
  EXPECT_EQ(loaded.decoder->config().rope_theta, 5000);
  auto ids = test_ids(c.vocab_size);
  d->pack_projections();  // as the loaded model (see the round trip above)
  EXPECT_TRUE(torch::equal(logits_of(loaded.decoder, ids), logits_of(d, ids)));
  // And the scaling matters at these positions: without it the logits differ.
  j["rope_parameters"]["rope_type"] = "default";
  write_json(dir / "m/config.json", j);
  auto unscaled = load_pretrained(dir / "m");
  EXPECT_FALSE(torch::allclose(logits_of(unscaled.decoder, ids), logits_of(d, ids)));
}

TEST(PretrainedConfig, Qwen2WithoutAttentionBiasKeyHasQkvBiases) {
  nlohmann::json j = {{"model_type", "qwen2"}, {"vocab_size", 97}, {"hidden_size", 32},
                      {"intermediate_size", 48}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
  auto c = ModelConfig::from_json(j, "qwen2/config.json");
  EXPECT_TRUE(c.has_qkv_bias());
  EXPECT_FALSE(c.o_proj_bias);
  Decoder d(c);
  auto params = d->named_parameters();
  for (const char* p : {"q_proj", "k_proj", "v_proj"})
    EXPECT_TRUE(params.contains(std::string("model.layers.1.self_attn.") + p + ".bias")) << p;
  EXPECT_FALSE(params.contains("model.layers.1.self_attn.o_proj.bias"));
}

// ---- broken model directories: one gmsa::Error naming the file ----

TEST(PretrainedErrors, MissingModelDirectory) {
  TempDir dir;
  expect_error([&] { load_pretrained(dir / "no-such-model"); }, {dir / "no-such-model", "no such"});
}

TEST(PretrainedErrors, DirectoryWithoutConfig) {
  TempDir dir;
  fs::create_directories(dir / "m");
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m", "config.json"});
}

TEST(PretrainedErrors, ConfigMissingKey) {
  TempDir dir;
  write_model(dir / "m");
  auto j = read_json(dir / "m/config.json");
  j.erase("hidden_size");
  write_json(dir / "m/config.json", j);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m/config.json", "\"hidden_size\"", "missing"});
}

TEST(PretrainedErrors, ConfigWrongType) {
  TempDir dir;
  write_model(dir / "m");
  auto j = read_json(dir / "m/config.json");
  j["num_hidden_layers"] = "3";
  write_json(dir / "m/config.json", j);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m/config.json", "\"num_hidden_layers\"", "integer", "string"});
}

TEST(PretrainedErrors, UnknownArchitecture) {
  TempDir dir;
  write_model(dir / "m");
  auto j = read_json(dir / "m/config.json");
  j["model_type"] = "gpt2";
  write_json(dir / "m/config.json", j);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m/config.json", "\"gpt2\"", "llama"});
}

TEST(PretrainedErrors, TruncatedSafetensors) {
  TempDir dir;
  write_model(dir / "m");
  const std::string st = dir / "m/model.safetensors";
  fs::resize_file(st, fs::file_size(st) - 100);
  expect_error([&] { load_pretrained(dir / "m"); }, {st, "outside"});
}

TEST(PretrainedErrors, HeaderOffsetsLie) {
  TempDir dir;
  write_model(dir / "m");
  const std::string st = dir / "m/model.safetensors";
  // The final norm claims to start 4 bytes later than it does: its range no longer has the
  // size its shape needs.
  edit_header(st, [](nlohmann::json& h) { h["model.norm.weight"]["data_offsets"][0] = h["model.norm.weight"]["data_offsets"][0].get<uint64_t>() + 4; });
  expect_error([&] { load_pretrained(dir / "m"); }, {st, "model.norm.weight"});
}

TEST(PretrainedErrors, TensorOfTheWrongShape) {
  TempDir dir;
  auto c = gmsa::testing::tiny_config();
  write_model(dir / "m", c);
  auto sd = load_state_dict(dir / "m");
  sd["model.norm.weight"] = torch::ones({c.hidden_size + 1});
  save_sharded(dir / "m", sd, 1ull << 30);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m", "model.norm.weight", "[33]", "[32]"});
}

TEST(PretrainedErrors, MissingTensor) {
  TempDir dir;
  write_model(dir / "m");
  auto sd = load_state_dict(dir / "m");
  StateDict partial;
  for (const auto& item : sd)
    if (item.key() != "model.layers.1.mlp.up_proj.weight") partial.insert(item.key(), item.value());
  save_sharded(dir / "m", partial, 1ull << 30);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m", "model.layers.1.mlp.up_proj.weight", "missing"});
}

TEST(PretrainedErrors, UnexpectedTensor) {
  TempDir dir;
  write_model(dir / "m");
  auto sd = load_state_dict(dir / "m");
  sd.insert("model.layers.9.mlp.up_proj.weight", torch::zeros({2, 2}));
  save_sharded(dir / "m", sd, 1ull << 30);
  expect_error([&] { load_pretrained(dir / "m"); }, {dir / "m", "model.layers.9.mlp.up_proj.weight", "unexpected"});
}

// ---- a real checkpoint through the HF format ----

TEST(Pretrained, Stories260kConvertedReproducesPublishedSample) {
  GMSA_REQUIRE_DATA("llama2c-stories260k/stories260K.bin");
  const std::string tok_model = gmsa::testing::data_dir() + "/llama2c-stories260k/tok512.model";
  TempDir dir;
  auto ck = read_llama2c(data_path);
  Decoder d(ck.config);
  load_parameters(*d, ck.tensors, data_path);
  save_pretrained(dir / "stories260K", d, tok_model);
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(file_exists(dir / ("stories260K/" + std::string(f)))) << f;

  LoadOptions opts;
  opts.require_tokenizer = true;
  auto pm = load_pretrained(dir / "stories260K", opts);  // the tokenizer comes from the directory
  ASSERT_NE(pm.tokenizer, nullptr);
  auto ids = pm.tokenizer->encode("Once upon a time", /*add_bos=*/true, false);
  EXPECT_EQ(ids, (std::vector<int>{1, 403, 407, 261, 378}));  // SOURCES.md
  GenerationConfig cfg;
  cfg.max_new_tokens = 60;
  auto out = generate(pm.decoder, {{{}, std::vector<int64_t>(ids.begin(), ids.end())}}, cfg);
  std::vector<int> all(ids.begin(), ids.end());
  all.insert(all.end(), out.tokens[0].begin(), out.tokens[0].end());
  const std::string text = pm.tokenizer->decode(all);
  const std::string published =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball.";
  EXPECT_EQ(text.substr(0, published.size()), published) << text;
}
