#pragma once
// y = x W^T for a few rows of x (1 to 16: a decoding step's batch) on tensor cores. The step
// reads every weight once, so the kernel is a weight stream: each lane issues 16-byte loads of
// weight rows, kUnroll 32-column slabs at a time, and feeds them to mma.m16n8k16 with the x
// rows as the narrow operand. A block owns 16 RT output features; its warps split K and add
// their partial sums through shared memory.
//
// Fragment layout. A dot product does not care in which order K is summed, as long as W and x
// use the same order; so within a 32-column slab, lane (g = lane / 4, t = lane % 4) loads the
// 8 contiguous columns [8t, 8t + 8) of weight rows g and g + 8 and of x row g, and hands
// columns {0,1 | 2,3} to the first mma's k {2t,2t+1 | 2t+8,2t+9} and {4,5 | 6,7} to the
// second's: every register of the A and B fragments comes straight from a 16-byte load.
//
// Programmatic dependent launch (sm_90): the weights do not depend on the previous kernel, so
// the first slabs are loaded before griddepcontrol.wait and their fetch overlaps the previous
// kernel's tail; after its main loop a block lets the next kernel start launching. Launched
// without the attribute, both instructions do nothing. Then the grid fetches [warm, warm +
// warm_bytes) into L2 for a later kernel (none when warm_bytes is 0).
#include <cuda_bf16.h>

#include <cstdint>

#include "common.cuh"

namespace gmsa::kernels {

// Output modes: plain y[m, n] = x W^T; SwiGLU: W packs gate rows [0, I) over up rows [I, 2I)
// (N = 2I) and y[m, j] = silu(gate_j) * up_j, with the plain ops' bf16 roundings.
enum class SkinnyOut { kPlain, kSwiGLU };

// Weight loads: read once, so they should not displace x (re-read by every block) from L1.
// kPolicy 0: ld.global.cs; 1: ld.global.nc.L1::no_allocate; 2: the same with a 256-byte L2
// prefetch hint (a warp touches 64 bytes of each of its 16 rows per load; the hint has L2
// fetch the neighbouring slabs, which other warps of the block read next, in the same burst).
template <int kPolicy>
__device__ __forceinline__ uint4 load_weights16(const __nv_bfloat16* p) {
  uint4 v;
  if constexpr (kPolicy == 0) {
    v = __ldcs(reinterpret_cast<const uint4*>(p));
  } else if constexpr (kPolicy == 1) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  } else {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  }
  return v;
}

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One 32-column slab of one 16-row weight tile: two mma per 8-row tile of x.
template <int NT>
__device__ __forceinline__ void skinny_slab(float (&c)[NT][4], const uint4& wa, const uint4& wb,
                                            const uint4 (&xv)[NT]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    mma_bf16_16816(c[j], wa.x, wb.x, wa.y, wb.y, xv[j].x, xv[j].y);
    mma_bf16_16816(c[j], wa.z, wb.z, wa.w, wb.w, xv[j].z, xv[j].w);
  }
}

// Grid: one block per 16 RT output features (SwiGLU: per 8 RT outputs; each 16-row tile holds
// 8 gate rows and their 8 up rows). w [N, K] row-major, x [M, K] with row stride ldx, y [M, ldy];
// K % 32 == 0, 16-byte aligned rows; M <= 8 NT. bias [N] or null (plain mode only).
// NT: 8-row tiles of x; RT: 16-row weight tiles per warp (each x fragment load serves RT of
// them); kWarps split K (contiguous ranges when kContig, else slab s to warp s % kWarps);
// kUnroll slabs per step, all loads of a step issued before its first mma.
template <int NT, int RT, int kWarps, int kUnroll, int kPolicy, bool kContig, SkinnyOut kOut>
__global__ void __launch_bounds__(kWarps * 32)
    skinny_gemm_kernel(const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ x, int64_t ldx,
                       const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y, int64_t ldy,
                       int64_t n, int64_t k, int m, const void* warm, int64_t warm_bytes) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  constexpr bool kSwiGLU = kOut == SkinnyOut::kSwiGLU;
  const int64_t inter = n / 2, outs = kSwiGLU ? inter : n;
  // Rows g and g + 8 of each tile.
  const __nv_bfloat16* wa[RT];
  const __nv_bfloat16* wb[RT];
  bool ok_a[RT], ok_b[RT];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    int64_t row_a, row_b;
    if constexpr (kSwiGLU) {
      row_a = (static_cast<int64_t>(blockIdx.x) * RT + r) * 8 + g;  // gate
      row_b = inter + row_a;                                         // up
      if (row_a >= inter) row_a = row_b = n;
    } else {
      row_a = (static_cast<int64_t>(blockIdx.x) * RT + r) * 16 + g;
      row_b = row_a + 8;
    }
    ok_a[r] = row_a < n;
    ok_b[r] = row_b < n;
    wa[r] = w + (ok_a[r] ? row_a : 0) * k + 8 * t;
    wb[r] = w + (ok_b[r] ? row_b : 0) * k + 8 * t;
  }
  const int64_t slabs = k / 32;
  // This warp's slabs: [first, first + mine) step 1 (kContig) or warp + i * kWarps.
  int64_t first, mine;
  if constexpr (kContig) {
    const int64_t per = (slabs + kWarps - 1) / kWarps;
    first = min(slabs, warp * per);
    mine = min(slabs, first + per) - first;
  } else {
    first = warp;
    mine = slabs > warp ? (slabs - warp + kWarps - 1) / kWarps : 0;
  }
  auto col_of = [&](int64_t i) { return (kContig ? first + i : first + i * kWarps) * 32; };
  const int64_t steps = (mine + kUnroll - 1) / kUnroll;

  uint4 ra[kUnroll][RT], rb[kUnroll][RT];
  auto load_w = [&](int64_t step) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = step * kUnroll + u;
      const bool live = i < mine;
      const int64_t col = col_of(i);
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        ra[u][r] = live && ok_a[r] ? load_weights16<kPolicy>(wa[r] + col) : make_uint4(0, 0, 0, 0);
        rb[u][r] = live && ok_b[r] ? load_weights16<kPolicy>(wb[r] + col) : make_uint4(0, 0, 0, 0);
      }
    }
  };

  float c[RT][NT][4] = {};
  if (steps > 0) load_w(0);
  grid_dependency_wait();  // x is the previous kernel's output
  for (int64_t s = 0; s < steps; ++s) {
    uint4 xv[kUnroll][NT];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = s * kUnroll + u;
      const int64_t col = col_of(i) + 8 * t;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int r = g + 8 * j;
        xv[u][j] = i < mine && r < m ? __ldg(reinterpret_cast<const uint4*>(x + r * ldx + col)) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < RT; ++r) skinny_slab<NT>(c[r], ra[u][r], rb[u][r], xv[u]);
    if (s + 1 < steps) load_w(s + 1);
  }
  grid_dependents_launch();
  prefetch_l2_span(warm, warm_bytes);  // for a later kernel (decode_kernels.h, L2Span)

  // Sum the warps' partial tiles. Element e of lane (g, t), x tile j: W row g + 8 (e >= 2) of
  // the tile, x row 2t + (e & 1) + 8j.
  __shared__ float part[kWarps][RT * NT * 4][32];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[warp][(r * NT + j) * 4 + e][lane] = c[r][j][e];
  __syncthreads();
  if constexpr (kSwiGLU) {
    for (int v = threadIdx.x; v < RT * NT * 2 * 32; v += kWarps * 32) {
      const int l = v % 32, e = (v / 32) % 2, rj = v / 64, j = rj % NT, r = rj / NT;  // e: x row 2t + e
      float gate = 0.f, up = 0.f;
#pragma unroll
      for (int q = 0; q < kWarps; ++q) {
        gate += part[q][rj * 4 + e][l];
        up += part[q][rj * 4 + e + 2][l];
      }
      const int64_t out = (static_cast<int64_t>(blockIdx.x) * RT + r) * 8 + l / 4;
      const int xr = 2 * (l % 4) + e + 8 * j;
      if (out < outs && xr < m) {
        // As linear (bf16 outputs) then silu_mul: silu rounded, the product rounded.
        const float gb = __bfloat162float(__float2bfloat16(gate)), ub = __bfloat162float(__float2bfloat16(up));
        const float silu = __bfloat162float(__float2bfloat16(gb / (1.0f + expf(-gb))));
        y[xr * ldy + out] = __float2bfloat16(silu * ub);
      }
    }
  } else {
    for (int v = threadIdx.x; v < RT * NT * 4 * 32; v += kWarps * 32) {
      const int l = v % 32, rje = v / 32, e = rje % 4, j = (rje / 4) % NT, r = rje / (4 * NT);
      float sum = 0.f;
#pragma unroll
      for (int q = 0; q < kWarps; ++q) sum += part[q][rje][l];
      const int64_t out = (static_cast<int64_t>(blockIdx.x) * RT + r) * 16 + l / 4 + (e >= 2 ? 8 : 0);
      const int xr = 2 * (l % 4) + (e & 1) + 8 * j;
      if (out < outs && xr < m) y[xr * ldy + out] = __float2bfloat16(bias ? sum + __bfloat162float(bias[out]) : sum);
    }
  }
}

}  // namespace gmsa::kernels
