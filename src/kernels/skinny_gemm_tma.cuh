#pragma once
// y = x W^T for 9 to 16 rows of x (the decoding step at batch 9-16), the weights streamed into
// shared memory by the Tensor Memory Accelerator (sm_90 tensor copies) instead of through
// registers as in skinny_gemm.cuh. A block is one producer warp and MT x KG consumer warps.
// Stage after stage, the producer copies BK columns of the block's 16 MT weight rows and of the
// 16 x rows into an S-deep ring (one copy per 64-column box, 128-byte swizzled); each consumer
// warp reads its 16 rows of the tile, in its K group's share of the stage's boxes, and x back
// with ldmatrix into mma.m16n8k16. The copies take no registers, so each multiprocessor keeps S
// stages of weights in flight whatever the consumers do.
//
// The grid is persistent: block b takes tiles b, b + grid, ... and its pipeline runs on through
// the tile boundaries without draining. Programmatic dependent launch (sm_90): the first S
// stages' weight copies are issued before griddepcontrol.wait, so they stream while the
// previous kernel finishes (in the decoding step this, more than the kernel alone, is what it
// gains: docs/performance.md); x is copied only after the wait.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "decode_kernels.h"
#include "skinny_gemm.cuh"

namespace gmsa::kernels {

namespace tma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals) : "memory");
}

// Makes the initialised barriers visible to the asynchronous (copy) proxy.
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One arrival that also announces `bytes` of copies the phase waits for.
__device__ __forceinline__ void barrier_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

// Announces `bytes` more of copies for the current phase, without an arrival.
__device__ __forceinline__ void barrier_expect_more(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

// `bytes` (a multiple of 16) from global src into shared dst (16-byte aligned), counted off
// `bar`'s phase when they land.
__device__ __forceinline__ void copy_bulk(uint32_t dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}

__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
}

// The box of `map` at (column col, row row) into shared dst (1024-byte aligned); the copy counts
// its bytes (the whole box: rows past the end arrive as zeros) off `bar`'s phase when it lands.
__device__ __forceinline__ void copy_box(uint32_t dst, const CUtensorMap* map, int64_t col, int64_t row,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(static_cast<int32_t>(col)), "r"(static_cast<int32_t>(row)),
      "r"(smem_addr(bar))
      : "memory");
}

// Barrier of the MT consumer warps that own the tile's epilogue (the producer warp and the
// other K groups are elsewhere): named barrier 1.
__device__ __forceinline__ void consumers_sync(int threads) {
  asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory");
}

// Barrier of all consumer warps (every K group): named barrier 2.
__device__ __forceinline__ void all_consumers_sync(int threads) {
  asm volatile("bar.sync 2, %0;" ::"r"(threads) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

}  // namespace tma

// A 2-D bf16 tensor map over rows x cols (row stride ld elements, 16-byte aligned) whose box is
// 64 columns (128 bytes, swizzled by 128 bytes) x box_rows rows. False if the driver refuses.
inline bool make_box_map(CUtensorMap* map, const void* p, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld * 2)};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)}, unit[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(p), dims, strides, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Shared memory of skinny_tma_kernel<MT, BK, S>: S stages, each BK / 64 slices of 64 columns:
// the 16 MT weight rows (128 bytes each) and the 16 x rows; 1 KiB for alignment; 2 S barriers;
// the partial sums of a NormFusion's input rows (kNormPartBytes).
__host__ __device__ constexpr int skinny_tma_stage_bytes(int mt, int bk) { return bk * 2 * (16 * mt + 16); }
__host__ __device__ constexpr int skinny_tma_smem(int mt, int bk, int s) {
  return s * skinny_tma_stage_bytes(mt, bk) + 1024 + 16 * s + kNormPartBytes;
}

namespace norm_fusion {

// Loads that bypass L1 (another kernel wrote the data), as volatile asm so that the compiler
// keeps them where they are issued, ahead of the MMA loop, instead of sinking them to their use.
__device__ __forceinline__ __nv_bfloat16 load_cg(const __nv_bfloat16* p) {
  unsigned short v;
  asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return __ushort_as_bfloat16(v);
}

// The rows' 1 / RMS from the partial sums of squares (NormFusion::partial_in), which the
// producer copied into shared memory (`parts`, 16 rows of norm_fusion_stride(parts_in)) with the
// first stage: one bulk copy per block, where a load per consumer thread made every block read
// the same few kilobytes of L2 at once. Summed by kPerRow consumer threads per row (the largest
// power of two <= 2 MT: whole warps, shuffle groups within them) in a fixed order (results do
// not vary between runs) before the first epilogue, not before the first MMA (the ring is full
// by then: a stall there stalls the stream); 0 for rows >= m.
template <int MT>
__device__ __forceinline__ void row_inv_rms(const NormFusion& f, int m, const float* parts, float* inv_rms) {
  constexpr int kPerRow = 2 * MT >= 16 ? 16 : 2 * MT >= 8 ? 8 : 2 * MT >= 4 ? 4 : 2;
  if (threadIdx.x < 16 * kPerRow) {
    const int row = threadIdx.x / kPerRow, sub = threadIdx.x % kPerRow;
    const int64_t share = (f.parts_in + kPerRow - 1) / kPerRow, lo = min(f.parts_in, sub * share),
                  hi = min(f.parts_in, lo + share);
    const float* p = parts + row * norm_fusion_stride(f.parts_in);
    float s = 0.f;
    for (int64_t i = lo; i < hi; ++i) s += p[i];
#pragma unroll
    for (int o = kPerRow / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (sub == 0) inv_rms[row] = row < m ? rsqrtf(s / static_cast<float>(f.cols) + f.eps) : 0.f;
  }
  tma::consumers_sync(MT * 32);
}

// The residual-stream values of this lane's outputs of a plain tile (warp's 16 outputs, x rows
// 2t + e + 8j: the layout of c), loaded at the tile's start and kept as bf16 bits, so that
// nothing waits for them before the epilogue.
template <int MT>
__device__ __forceinline__ void load_resid(__nv_bfloat16 (&r)[2][4], int64_t tile, int warp, int lane,
                                           const __nv_bfloat16* y, int64_t ldy, int64_t n, int m) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int xr = 2 * t + e + 8 * j;
        const int64_t o = tile * 16 * MT + warp * 16 + g + 8 * h;
        r[j][e + 2 * h] = xr < m && o < n ? load_cg(y + xr * ldy + o) : __float2bfloat16(0.f);
      }
}

// The plain epilogue that ends a sub-block: y (the residual stream) = bf16(resid + bf16(v +
// bias)) as the separate add rounds it, scaled = bf16(y * gain) for the next projection, and
// each x row's sum of squares of the new values over the tile's 16 MT outputs into
// partial_out[row * norm_fusion_stride(parts) + tile]: a fixed shuffle tree within each warp,
// then the warps' sums in order through shared memory (`sums`, MT x 16; the two consumer
// barriers keep a fast warp's next tile from overwriting it early).
template <int MT>
__device__ __forceinline__ void residual_epilogue(const float (&c)[2][4], const __nv_bfloat16 (&resid)[2][4],
                                                  int64_t tile, int warp, int lane, const __nv_bfloat16* bias,
                                                  __nv_bfloat16* y, int64_t ldy, int64_t n, int m, int64_t parts,
                                                  const NormFusion& f, float (*sums)[16]) {
  const int g = lane / 4, t = lane % 4;
  const auto* gain = static_cast<const __nv_bfloat16*>(f.gain);
  auto* scaled = static_cast<__nv_bfloat16*>(f.scaled);
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int xr = 2 * t + e + 8 * j;
      float sq = 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t o = tile * 16 * MT + warp * 16 + g + 8 * h;
        if (xr < m && o < n) {
          const float v = c[j][e + 2 * h];
          const float sum = bf(__bfloat162float(resid[j][e + 2 * h]) + bf(bias ? v + __bfloat162float(bias[o]) : v));
          y[xr * ldy + o] = __float2bfloat16(sum);
          scaled[xr * ldy + o] = __float2bfloat16(sum * __bfloat162float(gain[o]));
          sq += sum * sum;
        }
      }
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      if (g == 0) sums[warp][xr] = sq;
    }
  tma::consumers_sync(MT * 32);
  if (threadIdx.x < 16 && static_cast<int>(threadIdx.x) < m) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < MT; ++w) s += sums[w][threadIdx.x];
    f.partial_out[threadIdx.x * norm_fusion_stride(parts) + tile] = s;
  }
  tma::consumers_sync(MT * 32);
}

}  // namespace norm_fusion

// Tile t's K loop starts at stage (13 t) mod (stages per tile) and wraps around, so that the
// blocks of a wave read different columns at once, not the same columns of rows K * 2 bytes
// apart: 0.04-0.07 ms off a batch-16 decoding step (docs/performance.md; 13 is coprime with the
// 7B shapes' 16, 32 and 43 stages per tile, and measured best of 1, 5, 7 and 13). The summation
// order is then a function of the tile: fixed for a weight and its layout, the same on any grid,
// but a row's plain and SwiGLU tiles (the tests' linear + silu_mul against swiglu_linear) start
// at different stages unless K fits one stage.
constexpr int64_t kSkinnyTmaStartStride = 13;

// KG > 1: the consumer warps form KG groups of MT; group g takes slices g, g + KG, ... of each
// stage, so that a tile of 16 MT rows has KG times the warps reading the ring (a short weight
// has too few tiles to give every multiprocessor more rows); at the tile's end the groups' sums
// meet in group 0 (a fixed order) through shared memory, which runs the epilogue.
// wmap: W [N, K] with boxes of 16 MT rows (plain) or 8 MT rows (SwiGLU: W packs gate rows
// [0, N/2) over up rows [N/2, N); a tile's 8 MT gate rows come first, then its up rows, and
// warp w takes gate rows 8w.. and up rows 8 MT + 8w.., so lane (g, t) holds gate and up of the
// same output in c[.][e] and c[.][e + 2]). xmap: x [M, K], boxes of 16 rows (rows >= M read as
// zeros). y [M, ldy]; 1 <= M <= 16; K % 8 == 0 (columns past K read as zeros). fuse: the
// residual add + RMSNorm between two projections (NormFusion), where its pointers are set.
template <int MT, int BK, int S, SkinnyOut kOut, int KG = 1>
__global__ void __launch_bounds__((MT * KG + 1) * 32)
    skinny_tma_kernel(const __grid_constant__ CUtensorMap wmap, const __grid_constant__ CUtensorMap xmap,
                      const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y, int64_t ldy, int64_t n,
                      int64_t k, int m, const void* warm, int64_t warm_bytes, const NormFusion fuse) {
  static_assert(BK % 64 == 0, "whole 64-column boxes");
  static_assert(KG >= 1 && (BK / 64) % KG == 0, "every K group takes as many slices of a stage");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kSwiGLU = kOut == SkinnyOut::kSwiGLU;
  constexpr int kSlices = BK / 64, kStageBytes = skinny_tma_stage_bytes(MT, BK);
  constexpr int kWRows = 16 * MT, kSliceW = kWRows * 128, kXBase = kSlices * kSliceW, kSliceX = 16 * 128;
  constexpr int kOutsPerTile = kSwiGLU ? 8 * MT : 16 * MT;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = tma::smem_addr(smem_raw), smem0 = (raw + 1023) & ~1023u;  // swizzle atoms: 1 KiB
  uint64_t* full = reinterpret_cast<uint64_t*>(smem_raw + (smem0 - raw) + S * kStageBytes);
  uint64_t* empty = full + S;
  float* norm_parts = reinterpret_cast<float*>(smem_raw + (smem0 - raw) + S * kStageBytes + 16 * S);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t inter = n / 2, outs = kSwiGLU ? inter : n;
  const int64_t tiles = (outs + kOutsPerTile - 1) / kOutsPerTile, chunks = (k + BK - 1) / BK;  // columns past K read as zeros
  const int64_t my_tiles = tiles > blockIdx.x ? (tiles - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const int64_t steps = my_tiles * chunks;

  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      tma::barrier_init(&full[s], 1);
      tma::barrier_init(&empty[s], MT * KG);
    }
    tma::barrier_init_fence();
  }
  __syncthreads();

  if (warp == MT * KG) {  // producer: one lane issues every copy
    if (lane == 0) {
      auto issue = [&](int64_t q, bool weights, bool xs) {
        const int stage = static_cast<int>(q % S);
        const int64_t tile = blockIdx.x + (q / chunks) * gridDim.x;
        const int64_t col = ((q % chunks + tile * kSkinnyTmaStartStride) % chunks) * BK;
        const uint32_t base = smem0 + stage * kStageBytes;
        if (weights) {
          tma::barrier_expect(&full[stage], kStageBytes);
          for (int j = 0; j < kSlices; ++j) {
            const uint32_t dst = base + j * kSliceW;
            if constexpr (kSwiGLU) {
              tma::copy_box(dst, &wmap, col + 64 * j, tile * kOutsPerTile, &full[stage]);
              tma::copy_box(dst + kSliceW / 2, &wmap, col + 64 * j, inter + tile * kOutsPerTile, &full[stage]);
            } else {
              tma::copy_box(dst, &wmap, col + 64 * j, tile * kOutsPerTile, &full[stage]);
            }
          }
        }
        if (xs)
          for (int j = 0; j < kSlices; ++j)
            tma::copy_box(base + kXBase + j * kSliceX, &xmap, col + 64 * j, 0, &full[stage]);
      };
      const int64_t head = min(static_cast<int64_t>(S), steps);
      for (int64_t q = 0; q < head; ++q) issue(q, true, false);
      grid_dependency_wait();  // x is the previous kernel's output
      if (fuse.partial_in && steps > 0) {  // so are the partial sums: they land with stage 0
        const uint32_t bytes = 16 * norm_fusion_stride(fuse.parts_in) * sizeof(float);
        tma::barrier_expect_more(&full[0], bytes);
        tma::copy_bulk(tma::smem_addr(norm_parts), fuse.partial_in, bytes, &full[0]);
      }
      for (int64_t q = 0; q < head; ++q) issue(q, false, true);
      for (int64_t q = S; q < steps; ++q) {
        tma::barrier_wait(&empty[q % S], static_cast<uint32_t>((q / S - 1) & 1));
        issue(q, true, true);
      }
    }
  } else {  // consumers
    const int g = lane / 4, t = lane % 4;
    const int rw = warp % MT, kg = warp / MT;  // the warp's 16 rows of the tile, its K group
    // ldmatrix rows: A matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) of this warp's tile; B (x
    // rows 0-7 | 8-15) x (k 0-7 | 8-15). Row r's 16-byte chunk c sits at chunk c ^ (r % 8).
    const int ar = lane % 8 + (lane / 8 % 2) * 8;
    const int a_row = kSwiGLU ? (ar < 8 ? rw * 8 + ar : 8 * MT + rw * 8 + ar - 8) : rw * 16 + ar;
    const int a_hi = lane / 16, b_row = lane % 8 + (lane / 16) * 8, b_hi = lane / 8 % 2;
    // The fused RMSNorm (NormFusion): a projection that ends a sub-block reads the residual
    // stream, which earlier kernels wrote; one that starts a sub-block gets the rows' partial
    // sums with stage 0.
    const bool ends_block = !kSwiGLU && fuse.partial_out != nullptr, starts_block = fuse.partial_in != nullptr;
    __shared__ float inv_rms[16], warp_sums[MT][16];
    // The other groups' sums, double-buffered by tile (one barrier per tile): [tile % 2][group - 1].
    __shared__ float4 group_sums[KG > 1 ? 2 : 1][KG > 1 ? KG - 1 : 1][MT][32][2];
    if (ends_block) grid_dependency_wait();
    int64_t q = 0;
    for (int64_t i = 0; i < my_tiles; ++i) {
      const int64_t tile = blockIdx.x + i * gridDim.x;
      float c[2][4] = {};
      __nv_bfloat16 resid[2][4];
      if (ends_block && kg == 0) norm_fusion::load_resid<MT>(resid, tile, rw, lane, y, ldy, n, m);
      for (int64_t ch = 0; ch < chunks; ++ch, ++q) {
        const int stage = static_cast<int>(q % S);
        tma::barrier_wait(&full[stage], static_cast<uint32_t>((q / S) & 1));
        const uint32_t base = smem0 + stage * kStageBytes;
#pragma unroll
        for (int j = kg; j < kSlices; j += KG)
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) {
            uint32_t a[4], b[4];
            tma::ldmatrix_x4(a, base + j * kSliceW + a_row * 128 + (((2 * kk + a_hi) ^ (a_row % 8)) << 4));
            tma::ldmatrix_x4(b, base + kXBase + j * kSliceX + b_row * 128 + (((2 * kk + b_hi) ^ (b_row % 8)) << 4));
            mma_bf16_16816(c[0], a[0], a[1], a[2], a[3], b[0], b[1]);
            mma_bf16_16816(c[1], a[0], a[1], a[2], a[3], b[2], b[3]);
          }
        __syncwarp();
        if (lane == 0) tma::barrier_arrive(&empty[stage]);
      }
      if constexpr (KG > 1) {
        auto& mine = group_sums[i % 2];
        if (kg > 0) {
          mine[kg - 1][rw][lane][0] = make_float4(c[0][0], c[0][1], c[0][2], c[0][3]);
          mine[kg - 1][rw][lane][1] = make_float4(c[1][0], c[1][1], c[1][2], c[1][3]);
        }
        tma::all_consumers_sync(MT * KG * 32);
        if (kg > 0) continue;
#pragma unroll
        for (int o = 0; o < KG - 1; ++o)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const float4 v = mine[o][rw][lane][j];
            c[j][0] += v.x, c[j][1] += v.y, c[j][2] += v.z, c[j][3] += v.w;
          }
      }
      // Group 0 from here. c[j][e]: A row g (e < 2) or g + 8 of this warp's tile, x row 2t + (e & 1) + 8j.
      if (ends_block) {
        norm_fusion::residual_epilogue<MT>(c, resid, tile, rw, lane, bias, y, ldy, n, m, tiles, fuse, warp_sums);
        continue;
      }
      if (starts_block && i == 0) norm_fusion::row_inv_rms<MT>(fuse, m, norm_parts, inv_rms);
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int xr = 2 * t + e + 8 * j;
          if (xr >= m) continue;
          const float r = starts_block ? inv_rms[xr] : 1.f;  // x W^T of RMSNorm's rows: exact when 1
          if constexpr (kSwiGLU) {
            const int64_t out = tile * kOutsPerTile + rw * 8 + g;
            if (out >= outs) continue;
            const float gb = bf(c[j][e] * r), ub = bf(c[j][e + 2] * r);
            y[xr * ldy + out] = __float2bfloat16(bf(gb / (1.0f + expf(-gb))) * ub);
          } else {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int64_t o = tile * kOutsPerTile + rw * 16 + g + 8 * h;
              const float v = c[j][e + 2 * h] * r;
              if (o < n) y[xr * ldy + o] = __float2bfloat16(bias ? v + __bfloat162float(bias[o]) : v);
            }
          }
        }
    }
  }
  grid_dependents_launch();
  prefetch_l2_span(warm, warm_bytes);
#else
  __trap();  // launched only where skinny_tma_supported() (sm_90 and later)
#endif
}

}  // namespace gmsa::kernels
