#pragma once
// Shared helpers for the LibTorch tests.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "gmsa/compressor/compressor_config.h"
#include "gmsa/model/config.h"

#if defined(GMSA_HAVE_C10_CUDA)
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace gmsa::testing {

#if defined(GMSA_HAVE_C10_CUDA)
// While alive, a CUDA host synchronisation made through c10 (item(), a blocking copy to or from
// the device, synchronize) throws: code run under it provably does not sync. CUDA builds only.
struct ForbidCudaSync {
  c10::cuda::SyncDebugMode saved = c10::cuda::warning_state().get_sync_debug_mode();
  ForbidCudaSync() { c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR); }
  ~ForbidCudaSync() { c10::cuda::warning_state().set_sync_debug_mode(saved); }
  ForbidCudaSync(const ForbidCudaSync&) = delete;
  ForbidCudaSync& operator=(const ForbidCudaSync&) = delete;
};
#endif

// ../shared/data, reached through GMSA_DATA_DIR; tests call GTEST_SKIP when it is unset.
inline std::string data_dir() {
  const char* d = std::getenv("GMSA_DATA_DIR");
  return d ? std::string(d) : std::string();
}

#define GMSA_REQUIRE_DATA(rel)                                                        \
  const std::string data_path = ::gmsa::testing::data_dir() + "/" + (rel);           \
  if (::gmsa::testing::data_dir().empty())                                            \
    GTEST_SKIP() << "GMSA_DATA_DIR is unset: skipping the test on real data " << (rel); \
  ASSERT_TRUE(std::filesystem::exists(data_path)) << data_path << " is missing"

// The build directory: where the test binary, the gmsa executable and the sentencepiece
// module live.
inline std::string binary_dir() {
  return std::filesystem::canonical("/proc/self/exe").parent_path().string();
}

// A fresh temporary directory, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("gmsa-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  static int& counter() { static int c = 0; return c; }
};

// A tiny model of each supported family for unit tests.
inline ModelConfig tiny_config(const std::string& type = "llama") {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.qk_norm = type == "qwen3";
  return c;
}

// A compressor small enough for the tiny models: 2 encoder layers, LoRA r 4, no dropout.
inline CompressorConfig small_compressor(const std::string& method = "gmsa") {
  CompressorConfig c;
  c.method = method;
  c.encoder_layers = 2;
  c.lora = {4, 8.0, 0.0};
  c.tcp_max_memory = 32;
  return c;
}

// LoRA B starts at zero; give it values so that the adapters matter in a test.
inline void randomize_lora_b(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters())
    if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);
}

// Random weights of a realistic scale (the default init leaves RMSNorm at 1).
inline void randomize(torch::nn::Module& m, uint64_t seed = 0) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.parameters()) p.normal_(0, 0.2);
}

inline double max_rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max() /
          b.to(torch::kDouble).abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace gmsa::testing
