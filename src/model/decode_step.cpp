#include "gmsa/model/decode_step.h"

#include "gmsa/model/compat.h"
#include "gmsa/util/error.h"

// CUDA graphs exist in CUDA builds of LibTorch 2.x (whose CMake package puts the CUDA headers
// on the include path); the CPU build of the development machine runs the same step eagerly.
#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>) && GMSA_TORCH_AT_LEAST(2, 1)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define GMSA_HAVE_CUDA_GRAPHS 1
#endif

namespace gmsa {

#ifdef GMSA_HAVE_CUDA_GRAPHS
struct DecodeStep::Graph {
  at::cuda::CUDAGraph graph;
};
#else
struct DecodeStep::Graph {};
#endif

bool DecodeStep::graphs_available() {
#ifdef GMSA_HAVE_CUDA_GRAPHS
  return true;
#else
  return false;
#endif
}

DecodeStep::DecodeStep(Decoder decoder, KVCache& cache, const torch::Tensor& prompt_mask,
                       const torch::Tensor& next_positions, bool use_graph)
    : dec_(std::move(decoder)), cache_(cache), want_graph_(use_graph) {
  const int64_t B = prompt_mask.size(0), filled = cache.length, capacity = cache.capacity();
  GMSA_CHECK(prompt_mask.size(1) == filled, "decode step: prompt mask covers {} columns, the cache holds {}",
             prompt_mask.size(1), filled);
  GMSA_CHECK(filled < capacity, "decode step: the KV cache is full ({} columns)", capacity);
  auto device = cache.k.at(0).device();
  GMSA_CHECK(!use_graph || (device.is_cuda() && graphs_available()),
             "decode step: CUDA graphs need a CUDA device and a CUDA build of LibTorch >= 2.1 (device {})",
             device.str());
  auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  tokens_ = torch::zeros({B}, longs);
  slot_ = torch::full({1}, filled, longs);
  positions_ = next_positions.to(device, torch::kLong).reshape({B, 1}).clone();
  key_mask_ = torch::zeros({B, capacity}, longs.dtype(torch::kBool));
  key_mask_.narrow(1, 0, filled).copy_(prompt_mask.to(device, torch::kBool));
  columns_ = torch::arange(capacity, longs);
  auto& inv_freq = dec_->inv_freq;
  if (inv_freq.device() != device) inv_freq = inv_freq.to(device);
}

DecodeStep::~DecodeStep() = default;

torch::Tensor DecodeStep::forward() {
  const auto& mc = dec_->config();
  key_mask_.index_fill_(1, slot_, true);
  auto allowed = key_mask_;
  if (mc.sliding_window) allowed = allowed.logical_and(columns_ > slot_ - *mc.sliding_window);
  // Additive (0 / -inf) rather than boolean: SDPA would convert a boolean mask in every layer.
  auto mask = torch::zeros(allowed.sizes(), allowed.options().dtype(dec_->compute_dtype()))
                  .masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity())
                  .unsqueeze(1).unsqueeze(1);  // [B, 1, 1, capacity]
  auto x = dec_->embed(tokens_.unsqueeze(1));
  Rope rope = rope_tables(dec_->inv_freq, positions_, x.scalar_type());
  const int64_t layers = static_cast<int64_t>(cache_.k.size());
  for (int64_t i = 0; i < layers; ++i) {
    AttentionContext ctx{&rope, mask, &cache_, i, slot_};
    x = dec_->model->layer(i)->forward(x, ctx);
  }
  auto logits = dec_->logits(dec_->model->norm(x).select(1, 0));
  positions_.add_(1);
  slot_.add_(1);
  return logits;
}

torch::Tensor DecodeStep::run(const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  tokens_.copy_(tokens, /*non_blocking=*/true);
  ++cache_.length;  // host bookkeeping only; the step itself reads slot_
  GMSA_CHECK(cache_.length <= cache_.capacity(), "decode step: KV cache overflow (capacity {})", cache_.capacity());
  if (!want_graph_) return forward();
#ifdef GMSA_HAVE_CUDA_GRAPHS
  if (graph_) {
    graph_->graph.replay();
    return logits_;
  }
  // First call: run the step for real on a side stream (this also initialises cuBLAS there),
  // then record it. Recording does not execute, so the state advanced exactly once.
  const auto device_index = tokens_.device().index();
  auto main = c10::cuda::getCurrentCUDAStream(device_index);
  auto side = c10::cuda::getStreamFromPool(false, device_index);
  at::cuda::CUDAEvent ready;
  ready.record(main);
  ready.block(side);
  torch::Tensor first;
  graph_ = std::make_unique<Graph>();
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    first = forward();
    graph_->graph.capture_begin();
    logits_ = forward();
    graph_->graph.capture_end();
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(main);
  // `first` was allocated on the side stream and is read on the main one.
  c10::cuda::CUDACachingAllocator::recordStream(first.storage().data_ptr(), main);
  return first;
#else
  fail("decode step: CUDA graphs are not available in this build");
#endif
}

}  // namespace gmsa
