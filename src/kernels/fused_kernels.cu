// Fused elementwise kernels (bf16) for RMSNorm, RoPE and SwiGLU's product, with backward
// kernels. Profiling the autoencoder step put ~45% of its GPU time in elementwise kernels, and
// the CUDA-graph decoding step is a chain of small launches (docs/performance.md).
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

// One thread per rotated pair (i, i + half) of one head of one token.
__global__ void rope_kernel(const __nv_bfloat16* x, int64_t x_token_stride,
                            const __nv_bfloat16* cos, const __nv_bfloat16* sin, __nv_bfloat16* out,
                            int64_t tokens, int64_t heads, int64_t dim, int64_t pairs) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= pairs) return;
  const RopePair p(idx, tokens, heads, dim);
  const int64_t i = p.i, half = p.half;
  const __nv_bfloat16* src = x + p.bt * x_token_stride + p.h * dim;
  const __nv_bfloat16* c = cos + p.bt * dim;
  const __nv_bfloat16* s = sin + p.bt * dim;
  __nv_bfloat16* dst = out + p.head_major_row() * dim;
  const float lo = __bfloat162float(src[i]), hi = __bfloat162float(src[i + half]);
  // rotate_half(x) = [-x_hi, x_lo]; negation is exact in bf16.
  dst[i] = __float2bfloat16(bf(lo * __bfloat162float(c[i])) + bf(-hi * __bfloat162float(s[i])));
  dst[i + half] = __float2bfloat16(bf(hi * __bfloat162float(c[i + half])) +
                                   bf(lo * __bfloat162float(s[i + half])));
}

__global__ void silu_mul_kernel(const __nv_bfloat16* gate, int64_t gate_stride, const __nv_bfloat16* up,
                                int64_t up_stride, __nv_bfloat16* out, int64_t cols, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t r = i / cols, c = i % cols;
  const float g = __bfloat162float(gate[r * gate_stride + c]);
  const float silu = bf(g / (1.0f + expf(-g)));
  out[i] = __float2bfloat16(silu * __bfloat162float(up[r * up_stride + c]));
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

__global__ void rope_backward_kernel(const __nv_bfloat16* dout, const __nv_bfloat16* cos,
                                     const __nv_bfloat16* sin, __nv_bfloat16* dx, int64_t tokens,
                                     int64_t heads, int64_t dim, int64_t pairs) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= pairs) return;
  const RopePair p(idx, tokens, heads, dim);
  const int64_t i = p.i, half = p.half, bt = p.bt;
  const __nv_bfloat16* src = dout + p.head_major_row() * dim;
  const float c_lo = __bfloat162float(cos[bt * dim + i]), c_hi = __bfloat162float(cos[bt * dim + i + half]);
  const float s_lo = __bfloat162float(sin[bt * dim + i]), s_hi = __bfloat162float(sin[bt * dim + i + half]);
  const float g_lo = __bfloat162float(src[i]), g_hi = __bfloat162float(src[i + half]);
  // Forward: out_lo = lo c_lo - hi s_lo, out_hi = hi c_hi + lo s_hi.
  __nv_bfloat16* dst = dx + bt * heads * dim + p.h * dim;
  dst[i] = __float2bfloat16(g_lo * c_lo + g_hi * s_hi);
  dst[i + half] = __float2bfloat16(g_hi * c_hi - g_lo * s_lo);
}

__global__ void silu_mul_backward_kernel(const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                         const __nv_bfloat16* dout, __nv_bfloat16* dgate,
                                         __nv_bfloat16* dup, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), d = __bfloat162float(dout[i]);
  const float sig = 1.0f / (1.0f + expf(-g));
  dgate[i] = __float2bfloat16(d * u * sig * (1.0f + g * (1.0f - sig)));
  dup[i] = __float2bfloat16(d * g * sig);
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

void rope_bf16(const void* x, int64_t x_token_stride, const void* cos, const void* sin, void* out,
               int64_t batch, int64_t tokens, int64_t heads, int64_t dim, cudaStream_t stream) {
  const int64_t pairs = batch * tokens * heads * (dim / 2);
  if (pairs == 0) return;
  rope_kernel<<<blocks_for(pairs, 256), 256, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), x_token_stride, static_cast<const __nv_bfloat16*>(cos),
      static_cast<const __nv_bfloat16*>(sin), static_cast<__nv_bfloat16*>(out), tokens, heads, dim, pairs);
}

void silu_mul_bf16(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                   int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(gate), gate_stride,
                                                          static_cast<const __nv_bfloat16*>(up), up_stride,
                                                          static_cast<__nv_bfloat16*>(out), cols, n);
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
  rope_backward_kernel<<<blocks_for(pairs, 256), 256, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(dout), static_cast<const __nv_bfloat16*>(cos),
      static_cast<const __nv_bfloat16*>(sin), static_cast<__nv_bfloat16*>(dx), tokens, heads, dim, pairs);
}

void silu_mul_backward_bf16(const void* gate, const void* up, const void* dout, void* dgate, void* dup,
                            int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  silu_mul_backward_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(gate), static_cast<const __nv_bfloat16*>(up),
      static_cast<const __nv_bfloat16*>(dout), static_cast<__nv_bfloat16*>(dgate),
      static_cast<__nv_bfloat16*>(dup), n);
}

}  // namespace gmsa::kernels
