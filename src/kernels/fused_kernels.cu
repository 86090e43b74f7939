// Fused elementwise kernels (bf16) for RMSNorm, RoPE and SwiGLU's product, with backward
// kernels, and group merging's means. Profiling the autoencoder step put ~45% of its GPU time
// in elementwise kernels, and the CUDA-graph decoding step is a chain of small launches
// (docs/performance.md).
#include <cuda_bf16.h>

#include "common.cuh"
#include "fused_kernels.h"

namespace gmsa::kernels {
namespace {

__global__ void rms_norm_kernel(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w,
                                __nv_bfloat16* out, int64_t cols, float eps) {
  const __nv_bfloat16* row = x + blockIdx.x * x_stride;
  __nv_bfloat16* dst = out + blockIdx.x * cols;
  float sq = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = __bfloat162float(row[c]);
    sq += v * v;
  }
  const float scale = rsqrtf(block_sum(sq) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float normed = bf(__bfloat162float(row[c]) * scale);
    dst[c] = __float2bfloat16(__bfloat162float(w[c]) * normed);
  }
}

__global__ void rms_norm_vec_kernel(const __nv_bfloat16* x, int64_t x_stride, const __nv_bfloat16* w,
                                    __nv_bfloat16* out, int64_t cols, float eps) {
  rms_norm_row_vec(x + blockIdx.x * x_stride, nullptr, w, nullptr, out + blockIdx.x * cols, cols, eps);
}

// The rotated pair (i, i + half) of head h of token t of row b handled by thread `idx`.
struct RopePair {
  int64_t tokens, heads, half, i, h, bt, b, t;  // bt = b * tokens + t
  __device__ RopePair(int64_t idx, int64_t tokens_, int64_t heads_, int64_t dim)
      : tokens(tokens_), heads(heads_), half(dim / 2), i(idx % half), h((idx / half) % heads),
        bt(idx / (half * heads)), b(bt / tokens), t(bt % tokens) {}
  // Row of this (b, h, t) in a [B, heads, T, D] tensor.
  __device__ int64_t head_major_row() const { return (b * heads + h) * tokens + t; }
};

// V consecutive bf16 values as floats, and back (each rounded to bf16): one 16-byte access
// for V = 8 (the elementwise kernels below read memory at a third of the bandwidth with 2-byte
// accesses; ncu, docs/performance.md). The per-value arithmetic is the same for every V.
template <int V>
__device__ __forceinline__ void load_bf(const __nv_bfloat16* p, float (&f)[V]) {
  if constexpr (V == 8) {
    load8(p, f);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = __bfloat162float(p[j]);
  }
}

template <int V>
__device__ __forceinline__ void store_bf(__nv_bfloat16* p, const float (&f)[V]) {
  if constexpr (V == 8) {
    uint4 u;
    __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(&u);
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = __float2bfloat16(f[j]);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = __float2bfloat16(f[j]);
  }
}

// One thread per V consecutive rotated pairs (i, i + half) of one head of one token.
template <int V>
__global__ void rope_kernel(const __nv_bfloat16* x, int64_t x_token_stride,
                            const __nv_bfloat16* cos, const __nv_bfloat16* sin, __nv_bfloat16* out,
                            int64_t tokens, int64_t heads, int64_t dim, int64_t pairs, RopeOut o,
                            RopeValues values) {
  const int64_t idx = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  if (idx >= pairs) return;
  const RopePair p(idx, tokens, heads, dim);
  const int64_t i = p.i, half = p.half;
  const __nv_bfloat16* src = x + p.bt * x_token_stride + p.h * dim;
  const __nv_bfloat16* c = cos + p.bt * dim;
  const __nv_bfloat16* s = sin + p.bt * dim;
  __nv_bfloat16* dst = out + p.b * o.batch + p.h * o.head + p.t * o.token;
  float lo[V], hi[V], c_lo[V], c_hi[V], s_lo[V], s_hi[V], o_lo[V], o_hi[V];
  load_bf<V>(src + i, lo);
  load_bf<V>(src + i + half, hi);
  load_bf<V>(c + i, c_lo);
  load_bf<V>(c + i + half, c_hi);
  load_bf<V>(s + i, s_lo);
  load_bf<V>(s + i + half, s_hi);
#pragma unroll
  for (int j = 0; j < V; ++j) {  // rotate_half(x) = [-x_hi, x_lo]; negation is exact in bf16
    o_lo[j] = bf(lo[j] * c_lo[j]) + bf(-hi[j] * s_lo[j]);
    o_hi[j] = bf(hi[j] * c_hi[j]) + bf(lo[j] * s_hi[j]);
  }
  store_bf<V>(dst + i, o_lo);
  store_bf<V>(dst + i + half, o_hi);
  if (values.v != nullptr) {  // the same positions of the values, unrotated (bf16 -> fp32 -> bf16 is exact)
    const auto* v = static_cast<const __nv_bfloat16*>(values.v) + p.bt * values.token_stride + p.h * dim;
    auto* v_dst = static_cast<__nv_bfloat16*>(values.out) + (dst - out);
    load_bf<V>(v + i, lo);
    load_bf<V>(v + i + half, hi);
    store_bf<V>(v_dst + i, lo);
    store_bf<V>(v_dst + i + half, hi);
  }
}

// One thread per V consecutive outputs of a row.
template <int V>
__global__ void silu_mul_kernel(const __nv_bfloat16* gate, int64_t gate_stride, const __nv_bfloat16* up,
                                int64_t up_stride, __nv_bfloat16* out, int64_t cols, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  if (i >= n) return;
  const int64_t r = i / cols, c = i % cols;
  float g[V], u[V], o[V];
  load_bf<V>(gate + r * gate_stride + c, g);
  load_bf<V>(up + r * up_stride + c, u);
#pragma unroll
  for (int j = 0; j < V; ++j) o[j] = bf(g[j] / (1.0f + expf(-g[j]))) * u[j];
  store_bf<V>(out + i, o);
}

// One thread per V consecutive columns of one soft token (row b * groups + g): the mean of
// rows [g r_b, min((g + 1) r_b, len_b)) of sample b, summed in fp32 in token order; a group
// past the sample's end is 0 (the plain path's 0 / clamp_min(0, 1)).
template <int V>
__global__ void group_mean_kernel(const __nv_bfloat16* x, int64_t tokens, int64_t cols, const int64_t* rates,
                                  const int64_t* lengths, __nv_bfloat16* out, int64_t groups, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  if (i >= n) return;
  const int64_t row = i / cols, c = i % cols;
  const int64_t b = row / groups, g = row % groups;
  const int64_t begin = g * rates[b], end = begin + rates[b] < lengths[b] ? begin + rates[b] : lengths[b];
  float acc[V] = {};
  const __nv_bfloat16* src = x + (b * tokens + begin) * cols + c;
  for (int64_t t = begin; t < end; ++t, src += cols) {
    float v[V];
    load_bf<V>(src, v);
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += v[j];
  }
  const float size = end > begin ? static_cast<float>(end - begin) : 1.f;
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] /= size;
  store_bf<V>(out + i, acc);
}

__global__ void rms_norm_backward_kernel(const __nv_bfloat16* x, int64_t x_stride,
                                         const __nv_bfloat16* w, const __nv_bfloat16* dy,
                                         __nv_bfloat16* dx, int64_t cols, float eps) {
  const __nv_bfloat16* row = x + blockIdx.x * x_stride;
  const __nv_bfloat16* g = dy + blockIdx.x * cols;
  __nv_bfloat16* out = dx + blockIdx.x * cols;
  float sq = 0.f, dot = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = __bfloat162float(row[c]);
    sq += v * v;
    dot += __bfloat162float(g[c]) * __bfloat162float(w[c]) * v;
  }
  const float n = static_cast<float>(cols);
  const float r = rsqrtf(block_sum(sq) / n + eps);
  __syncthreads();  // block_sum's shared scratch is reused
  const float mean_dot = block_sum(dot) / n;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float dn = __bfloat162float(g[c]) * __bfloat162float(w[c]);
    out[c] = __float2bfloat16(r * dn - r * r * r * __bfloat162float(row[c]) * mean_dot);
  }
}

template <int V>
__global__ void rope_backward_kernel(const __nv_bfloat16* dout, const __nv_bfloat16* cos,
                                     const __nv_bfloat16* sin, __nv_bfloat16* dx, int64_t tokens,
                                     int64_t heads, int64_t dim, int64_t pairs) {
  const int64_t idx = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  if (idx >= pairs) return;
  const RopePair p(idx, tokens, heads, dim);
  const int64_t i = p.i, half = p.half, bt = p.bt;
  const __nv_bfloat16* src = dout + p.head_major_row() * dim;
  float c_lo[V], c_hi[V], s_lo[V], s_hi[V], g_lo[V], g_hi[V], d_lo[V], d_hi[V];
  load_bf<V>(cos + bt * dim + i, c_lo);
  load_bf<V>(cos + bt * dim + i + half, c_hi);
  load_bf<V>(sin + bt * dim + i, s_lo);
  load_bf<V>(sin + bt * dim + i + half, s_hi);
  load_bf<V>(src + i, g_lo);
  load_bf<V>(src + i + half, g_hi);
  // Forward: out_lo = lo c_lo - hi s_lo, out_hi = hi c_hi + lo s_hi.
#pragma unroll
  for (int j = 0; j < V; ++j) {
    d_lo[j] = g_lo[j] * c_lo[j] + g_hi[j] * s_hi[j];
    d_hi[j] = g_hi[j] * c_hi[j] - g_lo[j] * s_lo[j];
  }
  __nv_bfloat16* dst = dx + bt * heads * dim + p.h * dim;
  store_bf<V>(dst + i, d_lo);
  store_bf<V>(dst + i + half, d_hi);
}

template <int V>
__global__ void silu_mul_backward_kernel(const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                         const __nv_bfloat16* dout, __nv_bfloat16* dgate,
                                         __nv_bfloat16* dup, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  if (i >= n) return;
  float g[V], u[V], d[V], dg[V], du[V];
  load_bf<V>(gate + i, g);
  load_bf<V>(up + i, u);
  load_bf<V>(dout + i, d);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const float sig = 1.0f / (1.0f + expf(-g[j]));
    dg[j] = d[j] * u[j] * sig * (1.0f + g[j] * (1.0f - sig));
    du[j] = d[j] * g[j] * sig;
  }
  store_bf<V>(dgate + i, dg);
  store_bf<V>(dup + i, du);
}

}  // namespace

void rms_norm_bf16(const void* x, int64_t x_stride, const void* w, void* out, int64_t rows,
                   int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  if (rms_norm_vec_fits(cols, {x, w, out}, {x_stride})) {
    rms_norm_vec_kernel<<<rows, cols / 8, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), x_stride,
                                                       static_cast<const __nv_bfloat16*>(w),
                                                       static_cast<__nv_bfloat16*>(out), cols, eps);
    return;
  }
  const int threads = cols >= 1024 ? 256 : 128;
  rms_norm_kernel<<<rows, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), x_stride,
                                                static_cast<const __nv_bfloat16*>(w),
                                                static_cast<__nv_bfloat16*>(out), cols, eps);
}

void rope_bf16(const void* x, int64_t x_token_stride, const void* cos, const void* sin, void* out, RopeOut o,
               RopeValues values, int64_t batch, int64_t tokens, int64_t heads, int64_t dim, cudaStream_t stream) {
  const int64_t pairs = batch * tokens * heads * (dim / 2);
  if (pairs == 0) return;
  const auto* xp = static_cast<const __nv_bfloat16*>(x);
  const auto* cp = static_cast<const __nv_bfloat16*>(cos);
  const auto* sp = static_cast<const __nv_bfloat16*>(sin);
  auto* op = static_cast<__nv_bfloat16*>(out);
  if (vec8_fits({x, cos, sin, out, values.v, values.out},
                {x_token_stride, dim / 2, o.batch, o.head, o.token, values.token_stride}))
    rope_kernel<8><<<blocks_for(pairs / 8, 256), 256, 0, stream>>>(xp, x_token_stride, cp, sp, op, tokens, heads,
                                                                   dim, pairs, o, values);
  else
    rope_kernel<1><<<blocks_for(pairs, 256), 256, 0, stream>>>(xp, x_token_stride, cp, sp, op, tokens, heads, dim,
                                                               pairs, o, values);
}

void silu_mul_bf16(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                   int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const auto* gp = static_cast<const __nv_bfloat16*>(gate);
  const auto* up_ = static_cast<const __nv_bfloat16*>(up);
  auto* op = static_cast<__nv_bfloat16*>(out);
  if (vec8_fits({gate, up, out}, {gate_stride, up_stride, cols}))
    silu_mul_kernel<8><<<blocks_for(n / 8, 256), 256, 0, stream>>>(gp, gate_stride, up_, up_stride, op, cols, n);
  else
    silu_mul_kernel<1><<<blocks_for(n, 256), 256, 0, stream>>>(gp, gate_stride, up_, up_stride, op, cols, n);
}

void group_mean_bf16(const void* x, int64_t batch, int64_t tokens, int64_t cols, const int64_t* rates,
                     const int64_t* lengths, void* out, int64_t groups, cudaStream_t stream) {
  const int64_t n = batch * groups * cols;
  if (n == 0) return;
  const auto* xp = static_cast<const __nv_bfloat16*>(x);
  auto* op = static_cast<__nv_bfloat16*>(out);
  if (vec8_fits({x, out}, {cols}))
    group_mean_kernel<8><<<blocks_for(n / 8, 256), 256, 0, stream>>>(xp, tokens, cols, rates, lengths, op, groups, n);
  else
    group_mean_kernel<1><<<blocks_for(n, 256), 256, 0, stream>>>(xp, tokens, cols, rates, lengths, op, groups, n);
}

void rms_norm_backward_bf16(const void* x, int64_t x_stride, const void* w, const void* dy, void* dx,
                            int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  const int threads = cols >= 1024 ? 256 : 128;
  rms_norm_backward_kernel<<<rows, threads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), x_stride, static_cast<const __nv_bfloat16*>(w),
      static_cast<const __nv_bfloat16*>(dy), static_cast<__nv_bfloat16*>(dx), cols, eps);
}

void rope_backward_bf16(const void* dout, const void* cos, const void* sin, void* dx, int64_t batch,
                        int64_t tokens, int64_t heads, int64_t dim, cudaStream_t stream) {
  const int64_t pairs = batch * tokens * heads * (dim / 2);
  if (pairs == 0) return;
  const auto* gp = static_cast<const __nv_bfloat16*>(dout);
  const auto* cp = static_cast<const __nv_bfloat16*>(cos);
  const auto* sp = static_cast<const __nv_bfloat16*>(sin);
  auto* dp = static_cast<__nv_bfloat16*>(dx);
  if (vec8_fits({dout, cos, sin, dx}, {dim / 2}))
    rope_backward_kernel<8><<<blocks_for(pairs / 8, 256), 256, 0, stream>>>(gp, cp, sp, dp, tokens, heads, dim, pairs);
  else
    rope_backward_kernel<1><<<blocks_for(pairs, 256), 256, 0, stream>>>(gp, cp, sp, dp, tokens, heads, dim, pairs);
}

void silu_mul_backward_bf16(const void* gate, const void* up, const void* dout, void* dgate, void* dup,
                            int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const auto* gp = static_cast<const __nv_bfloat16*>(gate);
  const auto* up_ = static_cast<const __nv_bfloat16*>(up);
  const auto* dp = static_cast<const __nv_bfloat16*>(dout);
  auto* dg = static_cast<__nv_bfloat16*>(dgate);
  auto* du = static_cast<__nv_bfloat16*>(dup);
  if (vec8_fits({gate, up, dout, dgate, dup}, {n}))
    silu_mul_backward_kernel<8><<<blocks_for(n / 8, 256), 256, 0, stream>>>(gp, up_, dp, dg, du, n);
  else
    silu_mul_backward_kernel<1><<<blocks_for(n, 256), 256, 0, stream>>>(gp, up_, dp, dg, du, n);
}

}  // namespace gmsa::kernels
