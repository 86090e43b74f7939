// Kernels of the CUDA-graph decoding step: one new token per row against a static KV cache.
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "common.cuh"
#include "decode_kernels.h"
#include "skinny_gemm.cuh"
#include "skinny_gemm_tma.cuh"

namespace gmsa::kernels {
namespace {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------- residual add + RMSNorm

__global__ void add_rms_norm_kernel(const bf16* x, const bf16* y, const bf16* w, bf16* h, bf16* normed,
                                    int64_t cols, float eps) {
  grid_dependency_wait();
  grid_dependents_launch();
  const int64_t off = blockIdx.x * cols;
  float sq = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = bf(__bfloat162float(x[off + c]) + __bfloat162float(y[off + c]));
    h[off + c] = __float2bfloat16(v);
    sq += v * v;
  }
  const float scale = rsqrtf(block_sum(sq) / static_cast<float>(cols) + eps);
  // Each thread reads back only what it wrote itself: no barrier needed.
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    normed[off + c] = __float2bfloat16(__bfloat162float(w[c]) * bf(__bfloat162float(h[off + c]) * scale));
}

__global__ void add_rms_norm_vec_kernel(const bf16* x, const bf16* y, const bf16* w, bf16* h, bf16* normed,
                                        int64_t cols, float eps) {
  grid_dependency_wait();
  grid_dependents_launch();
  const int64_t off = blockIdx.x * cols;
  rms_norm_row_vec(x + off, y + off, w, h + off, normed + off, cols, eps);
}

// Block per row: scaled = bf16(h * gain), partial[row] = sum of h^2 (NormFusion's first input).
__global__ void rms_partials_kernel(const bf16* h, const bf16* gain, bf16* scaled, float* partial, int64_t cols) {
  grid_dependency_wait();
  grid_dependents_launch();
  const int64_t off = blockIdx.x * cols;
  float sq = 0.f;
  for (int64_t c = 8 * static_cast<int64_t>(threadIdx.x); c < cols; c += 8 * static_cast<int64_t>(blockDim.x)) {
    float v[8], g[8];
    load8(h + off + c, v);
    load8(gain + c, g);
    uint4 out;
    bf16* o = reinterpret_cast<bf16*>(&out);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      sq += v[j] * v[j];
      o[j] = __float2bfloat16(v[j] * g[j]);
    }
    *reinterpret_cast<uint4*>(scaled + off + c) = out;
  }
  const float total = block_sum(sq);
  if (threadIdx.x == 0) partial[blockIdx.x * norm_fusion_stride(1)] = total;
}

// ---------------------------------------------------------------- split-KV decode attention

// Dims [c, c + 8) of rope(x) for one head x [D] (c % 8 == 0), as floats, rounded as the plain
// ops round them: x * cos + rotate_half(x) * sin, each product and the sum rounded to bf16.
template <int D>
__device__ __forceinline__ void rope8(const bf16* x, const bf16* cos, const bf16* sin, int c, float (&out)[8]) {
  constexpr int kHalf = D / 2;
  float v[8], partner[8], cs[8], sn[8];
  load8(x + c, v);
  load8(x + (c + kHalf) % D, partner);
  load8(cos + c, cs);
  load8(sin + c, sn);
#pragma unroll
  for (int j = 0; j < 8; ++j)
    out[j] = bf(bf(v[j] * cs[j]) + bf((c < kHalf ? -partner[j] : partner[j]) * sn[j]));
}

constexpr int kAttnWarps = 4;
constexpr int kMaxSplits = 128;

__device__ __forceinline__ uint4 load16(const bf16* p) { return *reinterpret_cast<const uint4*>(p); }

// q (8 floats) . k (8 bf16 in one 16-byte word).
__device__ __forceinline__ float dot8(const float (&q)[8], const uint4& k) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&k);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    s += q[2 * j] * f.x + q[2 * j + 1] * f.y;
  }
  return s;
}

// acc += p * v (8 bf16 in one 16-byte word).
__device__ __forceinline__ void axpy8(float p, const uint4& v, float (&acc)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    acc[2 * j] += p * f.x;
    acc[2 * j + 1] += p * f.y;
  }
}

// The splits' partial results of one (row, head) -- (max, sum, unnormalised output[D]) each --
// merged into out[D] by one block. The loads come in as few rounds as possible (this is the
// tail of the kernel, latency-bound): each thread's first kMergeChunk partial outputs and warp
// 0's maxima and sums are all issued at once, before the split weights are known; warp 0 then
// computes the weights into shared memory and each thread sums its dims over the splits in a
// fixed order. Loads bypass L1: other blocks wrote the partials.
constexpr int kMergeChunk = 32;

template <int D>
__device__ void merge_splits(const float* part, int64_t splits, bf16* out) {
  __shared__ float weight[kMaxSplits];
  __shared__ float inv_sum;
  const int t = threadIdx.x;
  float p[kMergeChunk];
  auto load_chunk = [&](int d, int64_t s0) {
#pragma unroll
    for (int c = 0; c < kMergeChunk; ++c)
      p[c] = s0 + c < splits ? __ldcg(part + (s0 + c) * (D + 2) + 2 + d) : 0.f;
  };
  if (t < D) load_chunk(t, 0);
  if (t < 32) {
    constexpr int kPerLane = kMaxSplits / 32;
    float m[kPerLane], l[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t s = t + 32 * i;
      m[i] = s < splits ? __ldcg(part + s * (D + 2)) : -INFINITY;
      l[i] = s < splits ? __ldcg(part + s * (D + 2) + 1) : 0.f;
    }
    float big = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) big = fmaxf(big, m[i]);
    for (int o = 16; o > 0; o >>= 1) big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const float f = m[i] == -INFINITY ? 0.f : __expf(m[i] - big);
      if (t + 32 * i < splits) weight[t + 32 * i] = f;
      sum += l[i] * f;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (t == 0) inv_sum = sum > 0.f ? 1.f / sum : 0.f;
  }
  __syncthreads();
  for (int d = t; d < D; d += blockDim.x) {
    float total = 0.f;
    for (int64_t s0 = 0; s0 < splits; s0 += kMergeChunk) {
      if (d != t || s0 != 0) load_chunk(d, s0);
#pragma unroll
      for (int c = 0; c < kMergeChunk; ++c)
        if (s0 + c < splits) total += p[c] * weight[s0 + c];
    }
    out[d] = __float2bfloat16(total * inv_sum);
  }
}

// rope8 for the attention kernel's query, out of line for the same reason as store_rope_kv.
template <int D>
__device__ __noinline__ void rope8_noinline(const bf16* x, const bf16* cos, const bf16* sin, int c, float (&out)[8]) {
  rope8<D>(x, cos, sin, c, out);
}

// With one split the block's result is final: out = sum over warps of acc * w / sum of l * w,
// w = exp(m - big), rounded as merge_splits rounds one split's. Out of line: the attention
// loop's registers stay as they are.
template <int D>
__device__ __noinline__ void write_one_split(const float* sm_m, const float* sm_l, const float* sm_acc, float big,
                                             bf16* out) {
  float sum = 0.f;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w)
    if (sm_m[w] != -INFINITY) sum += sm_l[w] * __expf(sm_m[w] - big);
  const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) a += sm_acc[w * D + d] * __expf(sm_m[w] - big);
    out[d] = __float2bfloat16(a * inv_sum);
  }
}

// The block's threads store rope(k) and v (one head each, D) into a cache column. Not inlined:
// the attention loop's registers stay as they are (64 at D = 128, 8 blocks per multiprocessor).
template <int D>
__device__ __noinline__ void store_rope_kv(const bf16* k, const bf16* v, const bf16* cos, const bf16* sin,
                                           bf16* k_col, bf16* v_col) {
  for (int c = threadIdx.x * 8; c < D; c += blockDim.x * 8) {
    float kr[8];
    rope8<D>(k, cos, sin, c, kr);
    uint4 packed;
    bf16* o = reinterpret_cast<bf16*>(&packed);
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = __float2bfloat16(kr[j]);
    *reinterpret_cast<uint4*>(k_col + c) = packed;
    *reinterpret_cast<uint4*>(v_col + c) = *reinterpret_cast<const uint4*>(v + c);
  }
}

// Block (split, h, b): online softmax over its share of the columns, one warp per sub-range.
// Each lane loads 16 bytes (8 dims) of a key row per step, so D / 8 lanes form a group that
// holds one key and a warp reads 256 / D keys per step; a round issues the loads of S steps
// before it reduces them (memory parallelism; AttentionPlan picks S). Keys and values stay
// packed bf16 in registers until used (fewer registers: more resident blocks). Each group keeps
// its own running (max, sum, output), merged across the warp's groups and then across the
// block's warps through shared memory. With one split the block writes out itself; otherwise it
// writes (max, sum, unnormalised output[D]) to the workspace and the last block of (h, b) to
// finish merges all splits into out (flash-decoding without a second kernel); arrivals[b * H + h]
// counts finished blocks and is left at zero.
// rope.qkv set: the query is rope(q) of the packed q/k/v rows, and the blocks whose columns hold
// *slot first store rope(k) and v there (one launch fewer per layer than a separate kernel for
// that). early_kv: the previous kernel writes only rope.qkv (the projection), so
// *slot is read and the first keys and values are fetched into L2 before the wait for it
// (programmatic dependent launch): the kernels before that one have finished, since it started
// only after its own wait. After its loads the grid fetches `warm` into L2.
template <int D, int S>
__global__ void __launch_bounds__(kAttnWarps * 32)
    decode_attention_kernel(const bf16* q, bf16* k_cache, bf16* v_cache, const bool* key_mask,
                            const int64_t* slot, float* workspace, int* arrivals, bf16* attn_out, int64_t heads,
                            int64_t kv_heads, int64_t capacity, int64_t splits, float scale, bool early_kv,
                            const void* warm, int64_t warm_bytes, const RopeKV rope) {
  constexpr int G = D / 8;           // lanes per key
  constexpr int kKeysPerStep = 32 / G;
  const int64_t split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % G, grp = lane / G;  // dims [8 sub, 8 sub + 8) of key grp of a step
  if (!early_kv) grid_dependency_wait();
  const int64_t live = slot ? min(*slot + 1, capacity) : capacity;  // later columns are unwritten
  const int64_t chunk = (live + splits - 1) / splits;
  const int64_t start = min(live, split * chunk), end = min(live, start + chunk);
  const int64_t per_warp = (end - start + kAttnWarps - 1) / kAttnWarps;
  const int64_t w_start = min(end, start + warp * per_warp), w_end = min(end, w_start + per_warp);

  const int64_t kvh = h / (heads / kv_heads);
  const bf16* kb = k_cache + (b * kv_heads + kvh) * capacity * D + sub * 8;
  const bf16* vb = v_cache + (b * kv_heads + kvh) * capacity * D + sub * 8;
  const bool* mb = key_mask + b * capacity;

  // With early_kv the first step's lines are fetched into L2 while the previous kernel runs
  // (memory would idle otherwise); one lane per 128-byte line. A line of column *slot may come
  // in before the store to it (below): harmless, the store updates the L2 line.
  if (early_kv) {
    if (sub % 8 == 0)
      for (int64_t j = w_start + grp; j < min(w_end, w_start + kKeysPerStep * S); j += kKeysPerStep) {
        prefetch_l2(kb + j * D);
        prefetch_l2(vb + j * D);
      }
    grid_dependency_wait();
  }
  float qf[8];
  if (rope.qkv) {
    const bf16* row = static_cast<const bf16*>(rope.qkv) + b * rope.qkv_stride;
    const bf16* cs = static_cast<const bf16*>(rope.cos) + b * D;
    const bf16* sn = static_cast<const bf16*>(rope.sin) + b * D;
    rope8_noinline<D>(row + h * D, cs, sn, sub * 8, qf);
    const int64_t s = *slot;
    if (start <= s && s < end) {  // block-uniform
      const int64_t col = ((b * kv_heads + kvh) * capacity + s) * D;
      store_rope_kv<D>(row + (heads + kvh) * D, row + (heads + kv_heads + kvh) * D, cs, sn, k_cache + col,
                       v_cache + col);
      __syncthreads();  // the column is read below, by any warp of the block
    }
  } else {
    load8(q + (b * heads + h) * D + sub * 8, qf);
  }

  float m = -INFINITY, l = 0.f, acc[8] = {};
  for (int64_t j0 = w_start; j0 < w_end; j0 += kKeysPerStep * S) {
    uint4 kr[S], vr[S];
    float s[S];
    bool ok[S];
#pragma unroll
    for (int u = 0; u < S; ++u) {
      const int64_t j = j0 + u * kKeysPerStep + grp;
      ok[u] = j < w_end && mb[j];
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (j < w_end) {
        kr[u] = load16(kb + j * D);
        vr[u] = load16(vb + j * D);
      }
    }
#pragma unroll
    for (int u = 0; u < S; ++u) s[u] = dot8(qf, kr[u]);
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)  // within the key's group of lanes
#pragma unroll
      for (int u = 0; u < S; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], o);
    float mx = m;
#pragma unroll
    for (int u = 0; u < S; ++u) {
      s[u] = ok[u] ? s[u] * scale : -INFINITY;
      mx = fmaxf(mx, s[u]);
    }
    if (mx != -INFINITY) {  // nothing allowed yet in this group otherwise
      const float corr = __expf(m - mx);
      float psum = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] *= corr;
#pragma unroll
      for (int u = 0; u < S; ++u) {
        const float p = __expf(s[u] - mx);
        psum += p;
        axpy8(p, vr[u], acc);
      }
      l = l * corr + psum;
      m = mx;
    }
  }
  grid_dependents_launch();
  prefetch_l2_span(warm, warm_bytes);
  // Merge the warp's groups: lanes with the same dims (same sub) exchange their states.
#pragma unroll
  for (int o = G; o < 32; o <<= 1) {
    const float mo = __shfl_xor_sync(0xffffffffu, m, o), lo = __shfl_xor_sync(0xffffffffu, l, o);
    float ao[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) ao[e] = __shfl_xor_sync(0xffffffffu, acc[e], o);
    const float big = fmaxf(m, mo);
    const float fa = m == -INFINITY ? 0.f : __expf(m - big), fb = mo == -INFINITY ? 0.f : __expf(mo - big);
    l = l * fa + lo * fb;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = acc[e] * fa + ao[e] * fb;
    m = big;
  }

  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_acc[kAttnWarps][D];
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
  if (grp == 0)
#pragma unroll
    for (int e = 0; e < 8; ++e) sm_acc[warp][sub * 8 + e] = acc[e];
  __syncthreads();
  float big = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) big = fmaxf(big, sm_m[w]);
  if (splits == 1) {  // nothing to merge
    write_one_split<D>(sm_m, sm_l, &sm_acc[0][0], big, attn_out + (b * heads + h) * D);
    return;
  }
  float* part = workspace + (b * heads + h) * splits * (D + 2);
  float* out = part + split * (D + 2);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) a += sm_acc[w][d] * __expf(sm_m[w] - big);
    out[2 + d] = a;
  }
  if (threadIdx.x == 0) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) sum += sm_l[w] * __expf(sm_m[w] - big);
    out[0] = big;
    out[1] = sum;
  }

  // Publish this split (each thread fences its own stores), then count it; the last to arrive
  // merges and resets the counter for the next launch.
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) {
    int* count = arrivals + b * heads + h;
    last = atomicAdd(count, 1) == static_cast<int>(splits) - 1;
    if (last) *count = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_splits<D>(part, splits, attn_out + (b * heads + h) * D);
}

// ---------------------------------------------------------------- step begin / end

// Row b of a step's beginning, by every thread of its block: resid[b] = embed[token] (16-byte
// copies), cos/sin[b] as rope_tables() makes them for `position` (fp32 position * inv_freq, the
// halves repeated, cosf / sinf rounded to bf16), and key_mask[b, column] = true.
__device__ void begin_row(int64_t b, int64_t token, int64_t position, int64_t column, const NextStepBegin& at) {
  const auto* embed = static_cast<const bf16*>(at.embed);
  const uint4* src = reinterpret_cast<const uint4*>(embed + token * at.hidden);
  uint4* dst = reinterpret_cast<uint4*>(static_cast<bf16*>(at.resid) + b * at.hidden);
  for (int64_t c = threadIdx.x; c < at.hidden / 8; c += blockDim.x) dst[c] = src[c];
  const float pos = static_cast<float>(position);
  const int64_t dim = at.dim, half = dim / 2;
  auto* cos_out = static_cast<bf16*>(at.cos);
  auto* sin_out = static_cast<bf16*>(at.sin);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float f = pos * at.inv_freq[d % half];
    cos_out[b * dim + d] = __float2bfloat16(cosf(f));
    sin_out[b * dim + d] = __float2bfloat16(sinf(f));
  }
  if (threadIdx.x == 0) at.key_mask[b * at.capacity + column] = true;
}

// Block b: begin_row for tokens[b] at positions[b] and column *slot: what took ~8 small
// LibTorch launches at the top of each step.
__global__ void decode_step_begin_kernel(const int64_t* tokens, const int64_t* positions, const int64_t* slot,
                                         NextStepBegin at) {
  const int64_t b = blockIdx.x;
  begin_row(b, tokens[b], positions[b], *slot, at);
}

// positions[b] += 1 for every row, then *slot += 1: the step's last launch.
__global__ void decode_step_end_kernel(int64_t* positions, int64_t batch, int64_t* slot) {
  for (int64_t b = threadIdx.x; b < batch; b += blockDim.x) positions[b] += 1;
  if (threadIdx.x == 0) *slot += 1;
}

// ---------------------------------------------------------------- greedy pick

// The argmax order of torch.argmax: NaN above everything, ties to the lower index.
__device__ __forceinline__ bool ranks_above(float a, int64_t ia, float b, int64_t ib) {
  if (isnan(a)) return !isnan(b) || ia < ib;
  if (isnan(b)) return false;
  return a > b || (a == b && ia < ib);
}

// (best, best_i) of the whole warp in every lane, in that order.
__device__ __forceinline__ void warp_argmax(float& best, int64_t& best_i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (ranks_above(ob, oi, best, best_i)) best = ob, best_i = oi;
  }
}

__device__ __forceinline__ float logit(float v) { return v; }
__device__ __forceinline__ float logit(bf16 v) { return __bfloat162float(v); }

// One block per row: the repetition penalty (as apply_repetition_penalty: seen tokens' logits
// l * p below zero, l * (1 / p) otherwise, the way LibTorch divides by a scalar), the argmax,
// and the bookkeeping of generate(): seen[next] = true, out[b * out_stride + column] = next,
// finished[b] |= next in eos. One launch instead of about ten. bf16 logits are compared as the
// fp32 values they convert to, so the pick is the one of their fp32 copy.
template <typename T>
__global__ void __launch_bounds__(1024) greedy_pick_kernel(const T* logits, int64_t vocab, bool* seen, float penalty,
                                                           const int64_t* eos, int64_t n_eos, int64_t* next,
                                                           int64_t* out, int64_t out_stride, bool* finished,
                                                           StepAdvance advance) {
  grid_dependency_wait();
  const int64_t b = blockIdx.x;
  const T* row = logits + b * vocab;
  const bool* seen_row = seen ? seen + b * vocab : nullptr;
  const float inv_penalty = 1.0f / penalty;
  float best = -INFINITY;
  int64_t best_i = INT64_MAX;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    float l = logit(row[v]);
    if (seen_row && seen_row[v]) l = l < 0.f ? l * penalty : l * inv_penalty;
    if (ranks_above(l, v, best, best_i)) best = l, best_i = v;
  }
  warp_argmax(best, best_i);
  __shared__ float warp_best[32];
  __shared__ int64_t warp_i[32];
  __shared__ int64_t picked, position, column;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  if (lane == 0) warp_best[warp] = best, warp_i[warp] = best_i;
  __syncthreads();
  if (warp == 0) {
    best = lane < warps ? warp_best[lane] : -INFINITY;
    best_i = lane < warps ? warp_i[lane] : INT64_MAX;
    warp_argmax(best, best_i);
  }
  if (threadIdx.x == 0) {  // vocab > 0: best_i is a column
    next[b] = best_i;
    const int64_t slot = advance.slot ? *advance.slot : 0;
    const int64_t col = slot - advance.slot_base;
    if (col >= 0 && col < advance.columns) out[b * out_stride + col] = best_i;
    if (seen) seen[b * vocab + best_i] = true;
    bool stop = false;
    for (int64_t e = 0; e < n_eos; ++e) stop |= eos[e] == best_i;
    finished[b] = finished[b] || stop;
    if (advance.slot) {
      picked = best_i;
      position = advance.positions[b] += 1;
      column = slot + 1;
      // Every block has read *slot before it counts itself in (the fence orders them).
      __threadfence();
      if (atomicAdd(advance.ticket, 1) == static_cast<int>(gridDim.x) - 1) {
        *advance.ticket = 0;
        *advance.slot += 1;
      }
    }
  }
  if (!advance.slot || !advance.begin.embed) return;
  __syncthreads();
  if (column < advance.begin.capacity) begin_row(b, picked, position, column, advance.begin);
}

// ---------------------------------------------------------------- GEMV

constexpr int kGemvThreads = 256;

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 fx = __bfloat1622float2(x[j]), fy = __bfloat1622float2(y[j]);
    s += fx.x * fy.x + fx.y * fy.y;
  }
  return s;
}

// Warp w computes rows [w * kRows, (w + 1) * kRows) (SwiGLU: gate rows [w * kRows / 2, ...)
// and their up rows, kRows / 2 outputs); lane l reads 8 values (16 bytes) of each row per
// 256-value chunk, kUnroll chunks per step, all issued before the first use: kRows * kUnroll
// loads in flight per lane (a K that is not a multiple of the step is handled by predicated
// loads, not by a serial tail). The first step's weights are loaded before the wait for the
// previous kernel (programmatic dependent launch). After its loads the grid fetches `warm` into
// L2 (Launch::warm).
template <int kRows, int kUnroll, int kPolicy, SkinnyOut kOut>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const bf16* __restrict__ w, const bf16* __restrict__ x,
                                                            bf16* __restrict__ y, int64_t n, int64_t k,
                                                            const void* warm, int64_t warm_bytes) {
  constexpr bool kSwiGLU = kOut == SkinnyOut::kSwiGLU;
  constexpr int kOuts = kSwiGLU ? kRows / 2 : kRows;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t outs = kSwiGLU ? n / 2 : n, out0 = warp * kOuts;
  if (out0 >= outs) return;
  const bf16* wr[kRows];
  bool ok[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t o = out0 + r % kOuts;
    ok[r] = o < outs;
    const int64_t row = kSwiGLU && r >= kOuts ? outs + o : o;
    wr[r] = w + (ok[r] ? row : 0) * k + lane * 8;
  }
  const int64_t steps = (k + 256 * kUnroll - 1) / (256 * kUnroll);
  uint4 wv[kUnroll][kRows];
  auto load_w = [&](int64_t s) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = (s * kUnroll + u) * 256;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        wv[u][r] = ok[r] && c + lane * 8 < k ? load_weights16<kPolicy>(wr[r] + c) : make_uint4(0, 0, 0, 0);
    }
  };
  float sum[kRows] = {};
  load_w(0);
  grid_dependency_wait();  // x is the previous kernel's output
  for (int64_t s = 0; s < steps; ++s) {
    uint4 xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = (s * kUnroll + u) * 256 + lane * 8;
      xv[u] = c < k ? *reinterpret_cast<const uint4*>(x + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r) sum[r] += dot8(wv[u][r], xv[u]);
    if (s + 1 < steps) load_w(s + 1);
  }
  grid_dependents_launch();
  prefetch_l2_span(warm, warm_bytes);
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    for (int o = 16; o > 0; o >>= 1) sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], o);
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kOuts; ++r) {
    if (!ok[r]) continue;
    if constexpr (kSwiGLU) {  // as linear then silu_mul: each output rounded, silu rounded
      const float gb = bf(sum[r]), ub = bf(sum[r + kOuts]);
      y[out0 + r] = __float2bfloat16(bf(gb / (1.0f + expf(-gb))) * ub);
    } else {
      y[out0 + r] = __float2bfloat16(sum[r]);
    }
  }
}

// Launches with the programmatic-stream-serialization attribute when on.pdl: the kernel may
// start while the previous one drains; each kernel here waits (griddepcontrol.wait) before it
// touches anything the previous one writes. smem: dynamic shared memory bytes.
template <typename... Params, typename... Args>
void launch_smem(void (*kernel)(Params...), dim3 grid, dim3 block, unsigned smem, const Launch& on, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = on.stream;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = on.pdl ? 1 : 0;
  cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, const Launch& on, Args... args) {
  launch_smem(kernel, grid, block, 0, on, args...);
}

unsigned grid1(int64_t blocks) { return static_cast<unsigned>(blocks); }

template <int kRows, int kUnroll, int kPolicy = 0>
void launch_gemv(const bf16* w, const bf16* x, bf16* y, int64_t n, int64_t k, bool swiglu, const Launch& on) {
  constexpr int kPairs = kRows < 2 ? 2 : kRows;  // SwiGLU rows come in (gate, up) pairs
  const int64_t outs = swiglu ? n / 2 : n, per_warp = swiglu ? kPairs / 2 : kRows;
  const unsigned grid = grid1(blocks_for((outs + per_warp - 1) / per_warp * 32, kGemvThreads));
  if (swiglu)
    launch(gemv_kernel<kPairs, kUnroll, kPolicy, SkinnyOut::kSwiGLU>, grid, kGemvThreads, on, w, x, y, n, k,
           on.warm.p, on.warm.bytes);
  else
    launch(gemv_kernel<kRows, kUnroll, kPolicy, SkinnyOut::kPlain>, grid, kGemvThreads, on, w, x, y, n, k,
           on.warm.p, on.warm.bytes);
}

template <int NT, int RT, int kWarps, int kUnroll, int kPolicy = 0, bool kContig = false>
void launch_skinny(const bf16* w, const bf16* x, int64_t ldx, const bf16* bias, bf16* y, int64_t ldy, int64_t m,
                   int64_t n, int64_t k, bool swiglu, const Launch& on) {
  const int mm = static_cast<int>(m);
  if (swiglu)
    launch(skinny_gemm_kernel<NT, RT, kWarps, kUnroll, kPolicy, kContig, SkinnyOut::kSwiGLU>,
           grid1((n / 2 + 8 * RT - 1) / (8 * RT)), kWarps * 32, on, w, x, ldx, bias, y, ldy, n, k, mm, on.warm.p,
           on.warm.bytes);
  else
    launch(skinny_gemm_kernel<NT, RT, kWarps, kUnroll, kPolicy, kContig, SkinnyOut::kPlain>,
           grid1((n + 16 * RT - 1) / (16 * RT)), kWarps * 32, on, w, x, ldx, bias, y, ldy, n, k, mm, on.warm.p,
           on.warm.bytes);
}

// The TMA-fed kernel (skinny_gemm_tma.cuh) on a persistent grid: as many blocks as fit at once,
// at most one per tile. False where a tensor map cannot be made (the caller then launches the
// register-fed kernel).
template <int MT, int BK, int S, int KG = 1>
bool launch_skinny_tma(const bf16* w, const bf16* x, int64_t ldx, const bf16* bias, bf16* y, int64_t ldy, int64_t m,
                       int64_t n, int64_t k, bool swiglu, const Launch& on, const NormFusion& fuse = {}) {
  constexpr int smem = skinny_tma_smem(MT, BK, S);
  constexpr int threads = (MT * KG + 1) * 32;
  auto* plain = skinny_tma_kernel<MT, BK, S, SkinnyOut::kPlain, KG>;
  auto* glu = skinny_tma_kernel<MT, BK, S, SkinnyOut::kSwiGLU, KG>;
  // Blocks that fit on the GPU at once, for each output mode (once per process).
  static const std::array<int64_t, 2> slots = [&] {
    int sms = 0, device = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    std::array<int64_t, 2> n_slots{};
    for (int i = 0; i < 2; ++i) {
      auto* fn = i ? glu : plain;
      int per_sm = 0;
      if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess ||
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, threads, smem) != cudaSuccess)
        per_sm = 0;
      n_slots[i] = static_cast<int64_t>(per_sm) * sms;
    }
    return n_slots;
  }();
  const int64_t fit = slots[swiglu], outs = swiglu ? n / 2 : n, per_tile = (swiglu ? 8 : 16) * MT;
  CUtensorMap wmap, xmap;
  if (fit < 1 || !make_box_map(&wmap, w, n, k, k, static_cast<int>(per_tile)) ||
      !make_box_map(&xmap, x, m, k, ldx, 16))
    return false;
  const unsigned grid = grid1(std::min((outs + per_tile - 1) / per_tile, fit));
  launch_smem(swiglu ? glu : plain, grid, threads, smem, on, wmap, xmap, bias, y, ldy, n, k,
              static_cast<int>(m), on.warm.p, on.warm.bytes, fuse);
  return true;
}

// The TMA-fed kernel's configuration for an n-row weight (skinny_gemm_sweep.cu and the decoding
// step, H100): tall matrices with tiles of 4 x 16 rows, 4 consumer warps and 128-column stages 8
// deep; the others with tiles of 2 x 16 rows and 256-column stages 7 deep, read by 2 K groups of
// 2 warps. A short weight has too few tiles (128-384) to give a multiprocessor more rows; the
// second K group of warps on the same tiles took q/k/v, o_proj and down from 38.5, 15.2 and 38.2
// us to 37.2, 14.5 and 36.3 alone, and 0.08 ms off the batch-16 step (docs/performance.md).
int tma_row_warps(int64_t n) { return n >= kSkinnyTallRows ? 4 : 2; }

bool launch_skinny_tma_for(const bf16* w, const bf16* x, int64_t ldx, const bf16* bias, bf16* y, int64_t ldy,
                           int64_t m, int64_t n, int64_t k, bool swiglu, const Launch& on,
                           const NormFusion& fuse = {}) {
  if (tma_row_warps(n) == 4) return launch_skinny_tma<4, 128, 8>(w, x, ldx, bias, y, ldy, m, n, k, swiglu, on, fuse);
  return launch_skinny_tma<2, 256, 7, 2>(w, x, ldx, bias, y, ldy, m, n, k, swiglu, on, fuse);
}

}  // namespace

void add_rms_norm_bf16(const void* x, const void* y, const void* w, void* h, void* normed, int64_t rows,
                       int64_t cols, float eps, const Launch& on) {
  if (rows == 0) return;
  const auto* xp = static_cast<const bf16*>(x);
  const auto* yp = static_cast<const bf16*>(y);
  const auto* wp = static_cast<const bf16*>(w);
  auto* hp = static_cast<bf16*>(h);
  auto* np = static_cast<bf16*>(normed);
  if (rms_norm_vec_fits(cols, {x, y, w, h, normed}, {})) {
    launch(add_rms_norm_vec_kernel, grid1(rows), static_cast<unsigned>(cols / 8), on, xp, yp, wp, hp, np, cols, eps);
    return;
  }
  launch(add_rms_norm_kernel, grid1(rows), cols >= 1024 ? 256 : 128, on, xp, yp, wp, hp, np, cols, eps);
}

bool decode_attention_supports(int64_t dim) { return dim == 32 || dim == 64 || dim == 128 || dim == 256; }

namespace {

// Blocks of decode_attention_kernel<dim, steps> one multiprocessor holds at once (registers bound
// it), asked once per process for each kernel (thread-safe static initialisation).
int attention_blocks_per_sm(int64_t dim, int steps) {
  static const std::array<int, 8> per_sm = [] {
    const void* fns[8] = {reinterpret_cast<const void*>(decode_attention_kernel<32, 4>),
                          reinterpret_cast<const void*>(decode_attention_kernel<64, 4>),
                          reinterpret_cast<const void*>(decode_attention_kernel<128, 4>),
                          reinterpret_cast<const void*>(decode_attention_kernel<256, 4>),
                          reinterpret_cast<const void*>(decode_attention_kernel<32, 8>),
                          reinterpret_cast<const void*>(decode_attention_kernel<64, 8>),
                          reinterpret_cast<const void*>(decode_attention_kernel<128, 8>),
                          reinterpret_cast<const void*>(decode_attention_kernel<256, 8>)};
    std::array<int, 8> n{};
    for (int i = 0; i < 8; ++i)
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n[i], fns[i], kAttnWarps * 32, 0) != cudaSuccess || n[i] < 1)
        n[i] = 1;  // a failed query only costs speed: one block per multiprocessor is always valid
    return n;
  }();
  return per_sm[(steps == 8 ? 4 : 0) + (dim == 32 ? 0 : dim == 64 ? 1 : dim == 128 ? 2 : 3)];
}

// Whole waves: the blocks' columns are equal, so a partial last wave leaves multiprocessors idle
// for a whole block's time. The fewest waves that fill at least 90% of the slots.
int64_t whole_wave_splits(int64_t batch, int64_t heads, int64_t capacity, int64_t slots) {
  const int64_t blocks = std::max<int64_t>(batch * heads, 1);
  int64_t best = 1;
  double best_use = 0.0;
  for (int64_t waves = 1; waves <= 4; ++waves) {
    const int64_t s = waves * slots / blocks;
    if (s < 1) continue;
    const double use = static_cast<double>(blocks * s) / static_cast<double>(waves * slots);
    if (use > best_use + 1e-9) best = s, best_use = use;
    if (use >= 0.9) break;
  }
  best = std::min(best, (capacity + 31) / 32);  // at least ~8 columns per warp
  return std::clamp<int64_t>(best, 1, kMaxSplits);
}

}  // namespace

AttentionPlan decode_attention_plan(int64_t batch, int64_t heads, int64_t capacity, int64_t dim, int sms) {
  const AttentionPlan four{whole_wave_splits(batch, heads, capacity, attention_blocks_per_sm(dim, 4) * int64_t{sms}), 4};
  const int64_t slots = attention_blocks_per_sm(dim, 8) * int64_t{sms}, blocks = std::max<int64_t>(batch * heads, 1);
  // A warp's rounds of key loads: each round waits out one memory latency.
  const auto rounds = [&](const AttentionPlan& p) {
    const int64_t per_round = p.splits * kAttnWarps * (256 / dim) * p.steps;
    return (capacity + per_round - 1) / per_round;
  };
  // Where the 4-step rounds are few (batch 1: ~3) the kernel is latency-bound, and eight steps
  // per round halve them, at fewer blocks per multiprocessor (registers). Only where those blocks
  // still make one wave of at least 90% of the slots: a second wave costs more than the rounds
  // save (GMSA 8x at batch 16: 6.51 -> 6.74 ms per step with 5 splits over 4 waves).
  if (rounds(four) <= kAttentionLatencyBoundRounds) {
    const AttentionPlan eight{whole_wave_splits(batch, heads, capacity, slots), 8};
    const int64_t used = blocks * eight.splits;
    if (used <= slots && 10 * used >= 9 * slots) return eight;
  }
  // Short caches where one block per (row, head) fills most of one wave (batch 16: 512 blocks,
  // 78% of 660): one split of 8 steps, whose blocks write their output themselves, no merge
  // (GMSA 4x at batch 16, 880 columns, 14 rounds: 7.581 -> 7.538 ms per step; 2x, 1,630
  // columns, 26 rounds: 9.636 -> 9.70, so longer caches keep the split).
  const AttentionPlan single{1, 8};
  if (blocks <= slots && 4 * blocks >= 3 * slots && rounds(single) <= kAttentionShortCacheRounds) return single;
  return four;
}

void decode_attention_bf16(const void* q, void* k_cache, void* v_cache, const bool* key_mask,
                           const int64_t* slot, void* out, float* workspace, int* arrivals, int64_t batch,
                           int64_t heads, int64_t kv_heads, int64_t dim, int64_t capacity, const AttentionPlan& plan,
                           float scale, bool early_kv, const Launch& on, const RopeKV& rope) {
  if (batch == 0 || heads == 0 || (rope.qkv && !slot)) return;
  const int64_t splits = plan.splits;
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(heads), static_cast<unsigned>(batch));
  const auto* qp = static_cast<const bf16*>(q);
  auto* kp = static_cast<bf16*>(k_cache);
  auto* vp = static_cast<bf16*>(v_cache);
  auto* op = static_cast<bf16*>(out);
#define GMSA_DECODE_ATTENTION(D)                                                                                 \
  launch(plan.steps == 8 ? decode_attention_kernel<D, 8> : decode_attention_kernel<D, 4>, grid, kAttnWarps * 32, on, \
         qp, kp, vp, key_mask, slot, workspace, arrivals, op, heads, kv_heads, capacity, splits, scale,               \
         early_kv && slot && on.pdl, on.warm.p, on.warm.bytes, rope)
  switch (dim) {
    case 32: GMSA_DECODE_ATTENTION(32); break;
    case 64: GMSA_DECODE_ATTENTION(64); break;
    case 128: GMSA_DECODE_ATTENTION(128); break;
    case 256: GMSA_DECODE_ATTENTION(256); break;
    default: return;  // the caller checks decode_attention_supports()
  }
#undef GMSA_DECODE_ATTENTION
}

void gemv_bf16(const void* w, const void* x, void* y, int64_t n, int64_t k, bool swiglu, const Launch& on) {
  if (n == 0) return;
  const auto* wp = static_cast<const bf16*>(w);
  const auto* xp = static_cast<const bf16*>(x);
  auto* yp = static_cast<bf16*>(y);
  // Two rows per warp, 8 loads in flight: the fastest of scripts/bench/skinny_gemm_sweep.cu on
  // every 7B shape (2.56-3.05 TB/s), or within 1% of it.
  launch_gemv<2, 8>(wp, xp, yp, n, k, swiglu, on);
}

void decode_step_begin(const int64_t* tokens, const int64_t* positions, const int64_t* slot, const NextStepBegin& at,
                       int64_t batch, cudaStream_t stream) {
  if (batch == 0) return;
  decode_step_begin_kernel<<<grid1(batch), 256, 0, stream>>>(tokens, positions, slot, at);
}

void decode_step_end(int64_t* positions, int64_t batch, int64_t* slot, cudaStream_t stream) {
  decode_step_end_kernel<<<1, 128, 0, stream>>>(positions, batch, slot);
}

void greedy_pick(const void* logits, bool bf16_logits, int64_t batch, int64_t vocab, bool* seen, float penalty,
                 const int64_t* eos, int64_t n_eos, int64_t* next, int64_t* out, int64_t out_stride, bool* finished,
                 const StepAdvance& advance, const Launch& on) {
  if (batch == 0 || vocab == 0) return;
  if (bf16_logits)
    launch(greedy_pick_kernel<bf16>, grid1(batch), 1024, on, static_cast<const bf16*>(logits), vocab, seen, penalty,
           eos, n_eos, next, out, out_stride, finished, advance);
  else
    launch(greedy_pick_kernel<float>, grid1(batch), 1024, on, static_cast<const float*>(logits), vocab, seen, penalty,
           eos, n_eos, next, out, out_stride, finished, advance);
}

// Whether this GPU runs the TMA-fed kernel: sm_90 or later and a driver that makes tensor maps.
bool skinny_tma_supported() {
  static const bool ok = [] {
    int device = 0, major = 0;
    CUtensorMap probe;
    static const uint4 dummy[64] = {};
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9 &&
           make_box_map(&probe, dummy, 16, 64, 64, 16);
  }();
  return ok;
}

bool skinny_gemm_preferred(int64_t m, int64_t n) {
  return n >= kSkinnyTallRows || (m >= kSkinnyTmaMinRows && (n <= kSkinnyShortRows || skinny_tma_supported()));
}

int64_t norm_fusion_parts(int64_t n) {  // one per tile of 16 MT outputs (plain output)
  const int64_t mt = tma_row_warps(n);
  return (n + 16 * mt - 1) / (16 * mt);
}

bool skinny_gemm_fused_bf16(const void* w, const void* x, int64_t ldx, const void* bias, void* y, int64_t ldy,
                            int64_t m, int64_t n, int64_t k, bool swiglu, const NormFusion& fuse, const Launch& on) {
  if (m < kSkinnyTmaMinRows || m > kSkinnyMaxRows || n == 0 || k % 32 != 0 || (swiglu && fuse.partial_out) ||
      (fuse.partial_out && norm_fusion_parts(n) > kNormMaxParts) ||
      (fuse.partial_in && fuse.parts_in > kNormMaxParts) ||
      !skinny_tma_supported())
    return false;
  const auto* wp = static_cast<const bf16*>(w);
  const auto* xp = static_cast<const bf16*>(x);
  const auto* bp = static_cast<const bf16*>(bias);
  auto* yp = static_cast<bf16*>(y);
  return launch_skinny_tma_for(wp, xp, ldx, bp, yp, ldy, m, n, k, swiglu, on, fuse);
}

void rms_partials_bf16(const void* h, const void* gain, void* scaled, float* partial, int64_t rows, int64_t cols,
                       const Launch& on) {
  if (rows == 0 || rows > kSkinnyMaxRows) return;
  launch(rms_partials_kernel, grid1(rows), 256, on, static_cast<const bf16*>(h), static_cast<const bf16*>(gain),
         static_cast<bf16*>(scaled), partial, cols);
}

bool skinny_gemm_supports(int64_t m, int64_t k) { return m >= 1 && m <= kSkinnyMaxRows && k % 32 == 0; }

void skinny_gemm_bf16(const void* w, const void* x, int64_t ldx, const void* bias, void* y, int64_t ldy, int64_t m,
                      int64_t n, int64_t k, bool swiglu, const Launch& on) {
  if (m == 0 || n == 0) return;
  const auto* wp = static_cast<const bf16*>(w);
  const auto* xp = static_cast<const bf16*>(x);
  const auto* bp = static_cast<const bf16*>(bias);
  auto* yp = static_cast<bf16*>(y);
  // From scripts/bench/skinny_gemm_sweep.cu and the decoding step (H100): up to 8 rows, one
  // 8-column MMA tile. 9 to 16 rows: the TMA-fed kernel, whose first stages of weights are copied
  // while the previous kernel still runs (configuration: launch_skinny_tma_for). Without TMA: tall
  // matrices 32 weight rows per warp, others 16 rows per block with 16 warps (more blocks to
  // spread over the multiprocessors). Register-fed weight loads prefetch 256 B into L2.
  if (m < kSkinnyTmaMinRows) return launch_skinny<1, 1, 8, 2, 2>(wp, xp, ldx, bp, yp, ldy, m, n, k, swiglu, on);
  if (skinny_tma_supported() && launch_skinny_tma_for(wp, xp, ldx, bp, yp, ldy, m, n, k, swiglu, on)) return;
  if (n >= kSkinnyTallRows) return launch_skinny<2, 2, 8, 1, 2>(wp, xp, ldx, bp, yp, ldy, m, n, k, swiglu, on);
  launch_skinny<2, 1, 16, 2, 2>(wp, xp, ldx, bp, yp, ldy, m, n, k, swiglu, on);
}

}  // namespace gmsa::kernels
