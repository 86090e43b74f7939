#pragma once
// Batched autoregressive generation with a KV cache: greedy, or temperature / top-k / top-p
// sampling from a seed, with repetition penalty and EOS stopping. A prompt may start with
// soft tokens (embeddings), which is how GMSA's compressed context enters the decoder.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "gmsa/model/decoder.h"

namespace gmsa {

struct GenerationConfig {
  int64_t max_new_tokens = 100;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;       // 0: off
  double top_p = 1.0;      // 1: off
  // HF semantics: a logit of an already seen token is divided by the penalty when positive
  // and multiplied when negative. Seen = generated tokens, plus the prompt's token ids when
  // penalize_prompt (off by default: the official GMSA code passes prompts as embeddings, for
  // which transformers penalises only generated tokens).
  double repetition_penalty = 1.0;
  bool penalize_prompt = false;
  uint64_t seed = 0;
  std::vector<int64_t> eos_ids;  // empty: the model config's eos_token_ids
  // On CUDA, record the decoding step once as a CUDA graph and replay it per token (see
  // DecodeStep). Off: the same step runs eagerly. Ignored on the CPU, which has no graphs.
  bool cuda_graph = true;
};

struct GenerationPrompt {
  torch::Tensor prefix_embeds;  // [m, H] soft tokens, or undefined
  std::vector<int64_t> ids;     // prompt tokens after the prefix
};

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // new tokens per prompt, EOS excluded
  double prefill_ms = 0;   // prompt forward + first token, from the call's start (device clock)
  double decode_ms = 0;    // the remaining steps, from the first token to the last (device clock)
  int64_t steps = 0;       // decoding steps after the first token
  bool cuda_graph = false; // whether those steps replayed a CUDA graph
  bool decode_kernels = false;  // whether they ran the decoding kernels (decode_ops.h)
  bool step_pick = false;       // whether greedy picks ran inside the step (DecodeStep::pick_greedily)
};

GenerationResult generate(Decoder& decoder, const std::vector<GenerationPrompt>& prompts,
                          const GenerationConfig& cfg);

}  // namespace gmsa
