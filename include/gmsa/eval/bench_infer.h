#pragma once
// Inference latency of the uncompressed prompt vs GMSA at several rates (docs/evaluation.md):
// compression, prefill (time to first token), decoding a fixed number of new tokens, end to
// end, and peak memory. Without a checkpoint the model is random weights of a named
// architecture's shape: latency does not depend on the values.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "gmsa/model/config.h"

namespace gmsa {

struct BenchInferOptions {
  std::string model;       // HF directory or llama2.c .bin; empty: random weights of `arch`
  std::string arch;        // llama2-7b | llama3-8b | qwen2-7b | tiny
  std::string compressor;  // a compressor directory; empty: a random GMSA compressor
  int64_t context_tokens = 3000;
  int64_t prompt_tokens = 16;  // question tokens after the context / soft tokens
  int64_t new_tokens = 100;
  int64_t batch = 1;
  std::vector<int64_t> rates{4, 8};
  int64_t repeats = 5;
  int64_t warmup = 1;
  std::string device = "auto";
  std::string dtype = "auto";  // fp32 | bf16 | auto (bf16 on CUDA, fp32 on the CPU)
  uint64_t seed = 0;
  bool cuda_graph = true;      // decode by replaying a CUDA graph (CUDA devices)
  bool fused_kernels = true;   // fused RMSNorm / RoPE / SwiGLU kernels where they apply
  bool decode_kernels = true;  // the decoding step's kernels (decode_ops.h) where they apply
  std::string gemv;            // decode_ops::Projection by name (auto | cublas | tc); empty: as is
  bool pdl = true;             // programmatic dependent launch of the decoding kernels (false: off)
  bool norm_fusion = true;     // add + RMSNorm in the projections at 9-16 rows (false: off)
  bool step_pick = true;       // greedy picks inside the decoding step (false: after it, on the host's call)
  int64_t warm_mib = -1;       // decode_ops::set_warm_bytes in MiB; negative: as is
  bool merge_lora = true;      // fold the encoder's LoRA into private weights (Encoder::merge_lora)
  bool skip_original = false;  // time the compressed cases only (e.g. at a batch the original cannot fit)
};

// One timed run (milliseconds).
struct BenchSample {
  double compress_ms = 0;  // 0 for the original prompt
  double prefill_ms = 0;   // decoder input built, prompt forward, first token
  double decode_ms = 0;    // the remaining new_tokens - 1 steps
  double total_ms = 0;     // compress start to last token
  int64_t generated = 0;   // new tokens per row (always new_tokens: EOS does not stop)
};

struct BenchCase {
  std::string name;            // "original", "gmsa@4x"
  int64_t rate = 0;            // 0 for the original prompt
  int64_t decoder_tokens = 0;  // decoder input length per row (BOS + context or soft, + prompt)
  std::vector<BenchSample> samples;
  BenchSample median;          // field-wise medians over samples
  double tokens_per_s = 0;     // batch * new_tokens / median end-to-end time
  double answers_per_s = 0;    // batch / median end-to-end time
  bool cuda_graph = false;     // the decoding steps replayed a CUDA graph
  bool decode_kernels = false; // ... and ran the decoding kernels
  bool step_pick = false;      // ... and picked inside the step (DecodeStep::pick_greedily)
  int64_t peak_bytes = -1;     // CUDA: peak allocated in this case; CPU: process max RSS
};

struct BenchInferReport {
  nlohmann::json setup;  // device, torch version, shapes, options
  std::vector<BenchCase> cases;
  nlohmann::json to_json() const;
  std::string table() const;  // markdown
};

// The decoder shape of a named architecture (Hugging Face config values); throws gmsa::Error
// for an unknown name.
ModelConfig arch_config(const std::string& name);

BenchInferReport run_bench_infer(const BenchInferOptions& opts);

}  // namespace gmsa
