#pragma once
// One decoding step of a fixed shape, driven entirely by device tensors: the token fed in, the
// cache column it is written to, its position and the key mask all live on the device and are
// advanced by the step itself. Nothing in it depends on host values, so on CUDA it is recorded
// once as a CUDA graph and replayed for every new token. Dispatching a 7B decoder's small
// kernels one by one from the host made a batch-1 step take 26.6 ms on an H100; replayed as a
// graph it takes 9.3 ms (7.8 with the fused kernels); forward_kernels() cuts the launches per
// layer further (docs/performance.md).
#include <torch/torch.h>

#include <memory>

#include "gmsa/model/decode_ops.h"
#include "gmsa/model/decoder.h"

namespace gmsa {

class DecodeStep {
 public:
  // `cache` holds the prompt's keys and values in columns [0, cache.length) and has room for
  // every new token; `prompt_mask` [B, cache.length] marks real (1) and padding (0) columns;
  // `next_positions` [B] are the RoPE positions of the first token this step will consume.
  // `use_graph`: record a CUDA graph (CUDA devices only; an error elsewhere).
  DecodeStep(Decoder decoder, KVCache& cache, const torch::Tensor& prompt_mask,
             const torch::Tensor& next_positions, bool use_graph);
  ~DecodeStep();
  DecodeStep(const DecodeStep&) = delete;
  DecodeStep& operator=(const DecodeStep&) = delete;

  // Consumes `tokens` [B] (device int64) and returns the next-token logits [B, V] (fp32). The
  // returned tensor is overwritten by the next call. With pick_greedily: the first call consumes
  // `tokens`, later ones the previous call's pick (pass an undefined tensor), and nothing is
  // returned.
  torch::Tensor run(const torch::Tensor& tokens);

  // Greedy decoding inside the step, and so inside its graph: each call ends with
  // decode_ops::greedy_step_pick (generate()'s greedy pick: the repetition penalty on `seen`,
  // argmax, seen and finished updated), writes its rows' tokens to column 1, 2, ... of `out`
  // for its first, second, ... call and consumes them at the next call, so the host only
  // replays the step: no logits conversion, pick, copy, step-end or step-begin launch of its
  // own between two steps (the pick also embeds its tokens for the next step). Call before the
  // first run(); false, and nothing changes, where it does not apply (the step does not run the
  // decoding kernels, or decode_ops::step_pick() is off).
  struct GreedyPick {
    torch::Tensor seen;      // [B, V] bool, or undefined: no repetition penalty
    double penalty = 1.0;
    torch::Tensor eos;       // [n] int64
    torch::Tensor out;       // [B, N] int64, unit column stride
    torch::Tensor finished;  // [B] bool
  };
  bool pick_greedily(GreedyPick pick);

  bool graphed() const { return graph_ != nullptr; }
  // Whether the step runs the decoding kernels (decode_ops.h) rather than the layers' forward.
  bool uses_decode_kernels() const { return fast_; }
  // Whether its residual adds and RMSNorms ride in the projections (decode_ops::norm_fusion).
  bool fuses_norms() const { return fuse_norms_; }
  // Whether this LibTorch build can record CUDA graphs.
  static bool graphs_available();

 private:
  torch::Tensor forward();  // the recorded computation: step and advance
  // The same step through the decoding kernels: packed q/k/v and gate/up GEMVs, RoPE fused with
  // the cache store, split-KV attention that merges its splits itself, each residual add fused
  // with the next RMSNorm, SwiGLU in the gate/up GEMV's epilogue: 8 launches per layer instead
  // of ~18; 6 where the add + RMSNorm moves into the projections around it (9-16 rows).
  torch::Tensor forward_kernels();
  bool kernels_apply() const;
  bool norm_fusion_applies() const;
  bool picks() const { return pick_.out.defined(); }  // pick_greedily took effect

  Decoder dec_;
  KVCache& cache_;
  torch::Tensor tokens_;     // [B] int64: the token consumed by the next step
  torch::Tensor slot_;       // [1] int64: its cache column
  torch::Tensor positions_;  // [B, 1] int64: its RoPE position per row
  torch::Tensor key_mask_;   // [B, capacity] bool: columns a query may attend to
  torch::Tensor columns_;    // [capacity] int64: 0..capacity-1, for the sliding window
  torch::Tensor logits_;     // the graph's output buffer
  torch::Tensor arrivals_;   // [B * H] int32 zeros: decode_ops::attention's per-head counters
  GreedyPick pick_;          // the in-step pick's outputs; out undefined: no pick in the step
  torch::Tensor ticket_;     // [1] int32 zero: greedy_step_pick's count of finished rows
  int64_t first_slot_ = 0;   // the first call's cache column
  int64_t calls_ = 0;
  decode_ops::StepBegin begun_;  // the rows' embeddings and RoPE tables for the coming step
  bool chained_ = false;         // the previous step's pick made begun_ (no step_begin launch)
  struct Graph;
  std::unique_ptr<Graph> graph_;
  bool want_graph_;
  bool fast_ = false;
  bool fuse_norms_ = false;
};

}  // namespace gmsa
