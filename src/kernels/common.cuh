#pragma once
// Device helpers shared by the kernel files.
#include <cuda_bf16.h>

namespace gmsa::kernels {

// Rounds an fp32 value to bf16 and back: reproduces a LibTorch bf16 op's output rounding.
__device__ __forceinline__ float bf(float v) { return __bfloat162float(__float2bfloat16(v)); }

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

inline int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

}  // namespace gmsa::kernels
