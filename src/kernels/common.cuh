#pragma once
// Device helpers shared by the kernel files.
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

namespace gmsa::kernels {

// Programmatic dependent launch (sm_90): a kernel launched with the attribute may start while
// the previous one drains. grid_dependency_wait() blocks until that kernel has finished and its
// writes are visible: call it before reading anything it writes. grid_dependents_launch() lets
// the next kernel start launching. Without the attribute both do nothing.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Fetches one 128-byte line into L2 (no register result, nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Fetches bytes [p, p + bytes) into L2, one line per prefetch, spread over every thread of the
// grid (1-D blocks): called by a kernel after its own loads, for a kernel that runs later.
__device__ __forceinline__ void prefetch_l2_span(const void* p, int64_t bytes) {
  const int64_t threads = static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z * blockDim.x;
  const int64_t block = (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const char* base = static_cast<const char*>(p);
  for (int64_t i = block * blockDim.x + threadIdx.x; i * 128 < bytes; i += threads) prefetch_l2(base + i * 128);
}

// Rounds an fp32 value to bf16 and back: reproduces a LibTorch bf16 op's output rounding.
__device__ __forceinline__ float bf(float v) { return __bfloat162float(__float2bfloat16(v)); }

// Eight consecutive bf16 values as floats, in one 16-byte load (p 16-byte aligned).
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&out)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    out[2 * j] = f.x;
    out[2 * j + 1] = f.y;
  }
}

// Sum of v over the block (every thread gets it). Uses shared scratch: a second call needs a
// __syncthreads() between.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? warp_sums[threadIdx.x] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// RMSNorm of one row of `cols` = 8 * blockDim.x bf16 values, one 16-byte load per thread: a
// single round trip to memory (a strided loop paid one memory latency per step: 12 us for one
// 4096-wide row). If y is given the row is h = x + y (rounded to bf16), stored to h_out when
// that is given. normed = w * bf16(h * rsqrt(mean(h^2) + eps)), as HF's LlamaRMSNorm.
// x, y, w, outs 16-byte aligned.
__device__ __forceinline__ void rms_norm_row_vec(const __nv_bfloat16* x, const __nv_bfloat16* y,
                                                 const __nv_bfloat16* w, __nv_bfloat16* h_out,
                                                 __nv_bfloat16* out, int64_t cols, float eps) {
  const int64_t c = 8 * static_cast<int64_t>(threadIdx.x);
  float v[8];
  load8(x + c, v);
  if (y) {
    const uint4 yv = *reinterpret_cast<const uint4*>(y + c);
    const __nv_bfloat162* yp = reinterpret_cast<const __nv_bfloat162*>(&yv);
    uint4 hv;
    __nv_bfloat16* hp = reinterpret_cast<__nv_bfloat16*>(&hv);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(yp[j]);
      hp[2 * j] = __float2bfloat16(v[2 * j] + f.x);
      hp[2 * j + 1] = __float2bfloat16(v[2 * j + 1] + f.y);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(hp[j]);
    if (h_out) *reinterpret_cast<uint4*>(h_out + c) = hv;
  }
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) sq += v[j] * v[j];
  const float scale = rsqrtf(block_sum(sq) / static_cast<float>(cols) + eps);
  const uint4 wv = *reinterpret_cast<const uint4*>(w + c);
  const __nv_bfloat16* wp = reinterpret_cast<const __nv_bfloat16*>(&wv);
  uint4 ov;
  __nv_bfloat16* op = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
  for (int j = 0; j < 8; ++j) op[j] = __float2bfloat16(__bfloat162float(wp[j]) * bf(v[j] * scale));
  *reinterpret_cast<uint4*>(out + c) = ov;
}

// Whether 16-byte (8-value) accesses serve: every pointer 16-byte aligned (null counts as
// aligned), every count and stride a multiple of 8 values.
inline bool vec8_fits(std::initializer_list<const void*> ptrs, std::initializer_list<int64_t> counts) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  for (int64_t c : counts)
    if (c % 8 != 0) return false;
  return true;
}

// Whether rms_norm_row_vec serves rows of `cols` values at these addresses and row strides.
inline bool rms_norm_vec_fits(int64_t cols, std::initializer_list<const void*> ptrs,
                              std::initializer_list<int64_t> strides) {
  return cols % 256 == 0 && cols / 8 <= 1024 && vec8_fits(ptrs, strides);  // whole warps, <= 1024 threads
}

inline int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

}  // namespace gmsa::kernels
