#pragma once
// Launchers of the fused CUDA kernels (src/kernels/fused_kernels.cu). Plain pointers and a
// stream, so that nvcc never sees a LibTorch header; src/model/fused_ops.cpp wraps them.
// Every kernel reproduces, rounding for rounding, the bf16 LibTorch ops it replaces.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gmsa::kernels {

// out[r, :] = w * bf16(x[r, :] * rsqrt(mean(x[r, :]^2) + eps)), computed in fp32 (HF's RMSNorm).
// x and out: [rows, cols] bf16, row-contiguous with stride `x_stride` / cols; w: [cols] bf16.
void rms_norm_bf16(const void* x, int64_t x_stride, const void* w, void* out, int64_t rows,
                   int64_t cols, float eps, cudaStream_t stream);

// Element strides of a rotated output [B, heads, T, D] whose last dimension is contiguous:
// head-major, token-major, or columns of the KV cache.
struct RopeOut {
  int64_t batch, head, token;
};

// Values copied unrotated alongside the keys (the prefill's KV-cache store): v [B, T, heads, D]
// at row stride `token_stride`, written to `out` at the rotated output's strides. v null: none.
struct RopeValues {
  const void* v = nullptr;
  int64_t token_stride = 0;
  void* out = nullptr;
};

// Rotary embedding: x [B, T, heads, D] (row stride `x_token_stride` between tokens), cos/sin
// [B, T, D] contiguous, out at the strides `o`: out = x * cos + rotate_half(x) * sin, each
// product and the sum rounded to bf16.
void rope_bf16(const void* x, int64_t x_token_stride, const void* cos, const void* sin, void* out, RopeOut o,
               RopeValues values, int64_t batch, int64_t tokens, int64_t heads, int64_t dim, cudaStream_t stream);

// out = bf16(silu(gate)) * up (SwiGLU's product) over [rows, cols] bf16: gate and up rows at
// their own strides (views of one packed gate/up projection, or contiguous), out contiguous.
void silu_mul_bf16(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                   int64_t rows, int64_t cols, cudaStream_t stream);

// Group merging's means over right-padded rows: x [batch, tokens, cols] bf16 contiguous; rates
// and lengths: [batch] int64 on the device; out [batch, groups, cols] bf16 contiguous, where
// out[b, g] = mean of x[b, g r_b .. min((g + 1) r_b, len_b) - 1] in fp32 (token order), rounded
// once, and 0 for a group past len_b.
void group_mean_bf16(const void* x, int64_t batch, int64_t tokens, int64_t cols, const int64_t* rates,
                     const int64_t* lengths, void* out, int64_t groups, cudaStream_t stream);

// Backward passes, in fp32 with one rounding to bf16 at the end.
// RMSNorm: dx = r * (dy * w) - r^3 * x * mean((dy * w) * x), r = rsqrt(mean(x^2) + eps);
// x as in the forward (row stride x_stride), dy and dx [rows, cols] contiguous.
void rms_norm_backward_bf16(const void* x, int64_t x_stride, const void* w, const void* dy, void* dx,
                            int64_t rows, int64_t cols, float eps, cudaStream_t stream);
// RoPE: the inverse rotation of dout [B, heads, T, D] (contiguous) into dx [B, T, heads, D].
void rope_backward_bf16(const void* dout, const void* cos, const void* sin, void* dx, int64_t batch,
                        int64_t tokens, int64_t heads, int64_t dim, cudaStream_t stream);
// SwiGLU product: dgate = dout * up * silu'(gate), dup = dout * silu(gate).
void silu_mul_backward_bf16(const void* gate, const void* up, const void* dout, void* dgate, void* dup,
                            int64_t n, cudaStream_t stream);

}  // namespace gmsa::kernels
