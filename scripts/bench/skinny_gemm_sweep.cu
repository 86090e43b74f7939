// Weight-streaming products of the decoding step, measured on their own: the skinny GEMM's
// configurations (src/kernels/skinny_gemm.cuh), the earlier CUDA-core GEMV and cuBLAS, on the
// LLaMA-2-7B shapes at 1 and 16 rows, then the step's whole weight read (32 layers of q/k/v,
// o, gate/up + SwiGLU and down, then the LM head) as one CUDA graph with and without
// programmatic dependent launch. Every figure is the median of timed graph replays over
// weight copies that together exceed the L2 cache, so each launch reads its weights from HBM.
//
//   nvcc -std=c++17 -O3 -arch=sm_90 -I src/kernels scripts/bench/skinny_gemm_sweep.cu -lcublas \
//        -o build-gpu/skinny_gemm_sweep && build-gpu/skinny_gemm_sweep
//
// It compiles the library's kernel file itself, so it measures exactly the kernels the decoding
// step launches. Output: one JSON object per line.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "../../src/kernels/decode_kernels.cu"
#include "../../src/kernels/skinny_gemm_tma.cuh"
#include "bench_util.cuh"

using namespace gmsa::kernels;

namespace sweep {

using bench::random_bf16;
using bench::time_graph;

struct Shape {
  const char* name;
  int64_t n, k;
  bool swiglu;
};

cublasHandle_t blas;

void cublas_gemm(const bf16* w, const bf16* x, bf16* y, int64_t m, int64_t n, int64_t k, cudaStream_t s) {
  const float one = 1.f, zero = 0.f;
  CHECK(cublasSetStream(blas, s));
  // Column-major: y^T [n, m] = W [n, k] (stored as k x n) ^T . x^T [k, m].
  CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                     &one, w, CUDA_R_16BF, static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &zero, y,
                     CUDA_R_16BF, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Largest relative difference of a kernel's output against cuBLAS (plain mode only).
double max_rel_diff(const bf16* a, const bf16* b, int64_t n) {
  std::vector<bf16> ha(n), hb(n);
  CHECK(cudaMemcpy(ha.data(), a, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(hb.data(), b, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = __bfloat162float(ha[i]), y = __bfloat162float(hb[i]);
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// y [m, ldy] = x [m, k] W [n, k]^T (SwiGLU: y [m, n/2]).
using Fn = std::function<void(const bf16* w, const bf16* x, bf16* y, int64_t ldy, int64_t m, int64_t n, int64_t k,
                              bool swiglu, const Launch& on)>;

struct Variant {
  std::string name;
  Fn fn;
  bool one_row_only;
};

template <int NT, int RT, int W, int U, int P, bool C>
Variant tc(const std::string& name) {
  return {name, [](const bf16* w, const bf16* x, bf16* y, int64_t ldy, int64_t m, int64_t n, int64_t k, bool sw,
                   const Launch& on) { launch_skinny<NT, RT, W, U, P, C>(w, x, k, nullptr, y, ldy, m, n, k, sw, on); },
          false};
}

// The TMA-fed skinny GEMM (skinny_gemm_tma.cuh) on its persistent grid.
template <int MT, int BK, int S, int KG = 1>
Variant tma(const std::string& name) {
  return {name, [](const bf16* w, const bf16* x, bf16* y, int64_t ldy, int64_t m, int64_t n, int64_t k, bool sw,
                   const Launch& on) {
            if (!launch_skinny_tma<MT, BK, S, KG>(w, x, k, nullptr, y, ldy, m, n, k, sw, on))
              std::fprintf(stderr, "%s: no tensor map or no room\n", __PRETTY_FUNCTION__), std::exit(1);
          },
          false};
}

template <int R, int U, int P>
Variant simt(const std::string& name) {
  return {name, [](const bf16* w, const bf16* x, bf16* y, int64_t, int64_t, int64_t n, int64_t k, bool sw,
                   const Launch& on) { launch_gemv<R, U, P>(w, x, y, n, k, sw, on); },
          true};
}

// Variant names containing this string, or all when empty (--only).
std::string only;

std::vector<Variant> all_variants(int64_t m) {
  if (m == 1)
    return {simt<4, 2, 0>("simt r4 u2 cs"), simt<4, 2, 2>("simt r4 u2 l2-256"), simt<2, 4, 0>("simt r2 u4 cs"),
            simt<1, 8, 0>("simt r1 u8 cs"), simt<1, 8, 2>("simt r1 u8 l2-256"), simt<1, 16, 0>("simt r1 u16 cs"),
            simt<2, 8, 0>("simt r2 u8 cs"), tc<1, 1, 8, 2, 2, false>("tc r1 w8 u2 l2-256"),
            tc<1, 2, 8, 2, 2, false>("tc r2 w8 u2 l2-256")};
  return {tc<2, 1, 8, 2, 0, false>("tc r1 w8 u2 cs"),         tc<2, 1, 8, 2, 1, false>("tc r1 w8 u2 noalloc"),
          tc<2, 1, 8, 2, 2, false>("tc r1 w8 u2 l2-256"),     tc<2, 1, 16, 2, 2, false>("tc r1 w16 u2 l2-256"),
          tc<2, 2, 8, 2, 2, false>("tc r2 w8 u2 l2-256"),     tc<2, 2, 4, 2, 2, false>("tc r2 w4 u2 l2-256"),
          tc<2, 2, 8, 1, 2, false>("tc r2 w8 u1 l2-256"),     tc<2, 4, 4, 1, 2, false>("tc r4 w4 u1 l2-256"),
          tc<2, 4, 8, 1, 2, false>("tc r4 w8 u1 l2-256"),     tc<2, 1, 8, 2, 2, true>("tc r1 w8 u2 l2-256 contig"),
          tc<2, 2, 8, 2, 2, true>("tc r2 w8 u2 l2-256 contig"), tc<2, 2, 8, 2, 1, true>("tc r2 w8 u2 noalloc contig"),
          // TMA-fed: m consumer warps, k columns per stage, s stages, g K groups of m warps
          tma<2, 256, 7>("tma m2 k256 s7"), tma<2, 256, 7, 2>("tma m2 k256 s7 g2"), tma<2, 256, 7, 4>("tma m2 k256 s7 g4"),
          tma<2, 128, 8, 2>("tma m2 k128 s8 g2"), tma<4, 128, 8, 2>("tma m4 k128 s8 g2"),
          tma<4, 256, 4, 2>("tma m4 k256 s4 g2"), tma<6, 128, 7>("tma m6 k128 s7"), tma<6, 128, 6, 2>("tma m6 k128 s6 g2"),
          tma<11, 64, 8>("tma m11 k64 s8"), tma<1, 256, 8, 4>("tma m1 k256 s8 g4"),
          tma<1, 256, 8>("tma m1 k256 s8"), tma<2, 256, 6>("tma m2 k256 s6"), tma<4, 256, 4>("tma m4 k256 s4"),
          tma<2, 128, 8>("tma m2 k128 s8"), tma<4, 128, 8>("tma m4 k128 s8"), tma<1, 128, 12>("tma m1 k128 s12"),
          tma<2, 256, 3>("tma m2 k256 s3"), tma<4, 256, 2>("tma m4 k256 s2"), tma<8, 128, 4>("tma m8 k128 s4"),
          tma<2, 128, 4>("tma m2 k128 s4"), tma<1, 64, 16>("tma m1 k64 s16")};
}

std::vector<Variant> variants(int64_t m) {
  std::vector<Variant> v;
  for (auto& x : all_variants(m))
    if (x.name.find(only) != std::string::npos) v.push_back(x);
  return v;
}

const Shape kShapes[] = {{"qkv", 12288, 4096, false},
                         {"o_proj", 4096, 4096, false},
                         {"gate_up", 22016, 4096, true},
                         {"down", 4096, 11008, false},
                         {"lm_head", 32000, 4096, false}};

void sweep_shape(const Shape& sh, const bf16* x, bf16* y, bf16* y_ref) {
  const int64_t bytes = sh.n * sh.k * 2;
  const int copies = static_cast<int>(std::max<int64_t>(2, (1200LL << 20) / bytes));
  std::vector<bf16*> w(copies);
  for (int c = 0; c < copies; ++c) w[c] = random_bf16(sh.n * sh.k, 17 + c, 0.02f);
  const int launches = std::max(copies, 24);
  for (int64_t m : {1, 16}) {
    auto report = [&](const std::string& kind, double ms, double err) {
      std::printf("{\"shape\": \"%s\", \"n\": %lld, \"k\": %lld, \"rows\": %lld, \"kernel\": \"%s\", \"us\": %.2f, "
                  "\"tb_per_s\": %.3f, \"rel_diff_vs_cublas\": %.2e}\n",
                  sh.name, static_cast<long long>(sh.n), static_cast<long long>(sh.k), static_cast<long long>(m),
                  kind.c_str(), ms * 1e3, bytes / (ms * 1e-3) / 1e12, err);
      std::fflush(stdout);
    };
    report("cublas",
           time_graph([&](int i, cudaStream_t s) { cublas_gemm(w[i % copies], x, y_ref, m, sh.n, sh.k, s); }, launches),
           0.0);
    for (const auto& v : variants(m)) {
      // Correctness first (plain output against cuBLAS on the same weights), then the timing
      // (with the SwiGLU epilogue where the shape is gate_up).
      cublas_gemm(w[0], x, y_ref, m, sh.n, sh.k, 0);
      v.fn(w[0], x, y, sh.n, m, sh.n, sh.k, false, Launch{0, false});
      CHECK(cudaDeviceSynchronize());
      double err = max_rel_diff(y, y_ref, m * sh.n);
      if (sh.swiglu) {  // and the SwiGLU epilogue against the library's (tested against fp32)
        skinny_gemm_bf16(w[0], x, sh.k, nullptr, y_ref, sh.n / 2, m, sh.n, sh.k, true, Launch{0, false});
        v.fn(w[0], x, y, sh.n / 2, m, sh.n, sh.k, true, Launch{0, false});
        CHECK(cudaDeviceSynchronize());
        err = std::max(err, max_rel_diff(y, y_ref, m * sh.n / 2));
      }
      const double t = time_graph(
          [&](int i, cudaStream_t s) { v.fn(w[i % copies], x, y, sh.n, m, sh.n, sh.k, sh.swiglu, {s, false}); },
          launches);
      report(v.name + (sh.swiglu ? " swiglu" : ""), t, err);
    }
  }
  for (auto* p : w) CHECK(cudaFree(p));
}

// The step's whole weight read: 32 layers of q/k/v, o, gate/up (+ SwiGLU), down; the LM head.
void step_sequence(const bf16* x, bf16* y) {
  constexpr int kLayers = 32;
  std::vector<bf16*> w;
  std::vector<Shape> order;
  double gb = 0;
  for (int l = 0; l < kLayers; ++l)
    for (int i = 0; i < 4; ++i) order.push_back(kShapes[i == 3 ? 3 : i]);
  order.push_back(kShapes[4]);
  for (const Shape& sh : order) {
    w.push_back(random_bf16(sh.n * sh.k, 1000 + static_cast<uint32_t>(w.size()), 0.02f));
    gb += sh.n * sh.k * 2 / 1e9;
  }
  const int launches = static_cast<int>(order.size());
  for (int64_t m : {1, 4, 16}) {
    auto report = [&](const std::string& kind, double ms_per_launch) {
      const double ms = ms_per_launch * launches;
      std::printf("{\"sequence\": \"7b step weights (%.2f GB)\", \"rows\": %lld, \"kernel\": \"%s\", \"ms\": %.3f, "
                  "\"tb_per_s\": %.3f}\n",
                  gb, static_cast<long long>(m), kind.c_str(), ms, gb / ms);
      std::fflush(stdout);
    };
    report("cublas (gate_up without SwiGLU)", time_graph([&](int i, cudaStream_t s) {
             cublas_gemm(w[i], x, y, m, order[i].n, order[i].k, s);
           }, launches, 5));
    for (bool pdl : {false, true})
      report(std::string("library tc") + (pdl ? ", PDL" : ""), time_graph([&](int i, cudaStream_t s) {
               const Shape& sh = order[i];
               skinny_gemm_bf16(w[i], x, sh.k, nullptr, y, sh.swiglu ? sh.n / 2 : sh.n, m, sh.n, sh.k, sh.swiglu,
                                {s, pdl});
             }, launches, 5));
    // One row through the GEMV; more: tall matrices (kSkinnyTallRows) through the skinny GEMM
    // and the others through `rest`.
    auto ldy_of = [](const Shape& sh) { return sh.swiglu ? sh.n / 2 : sh.n; };
    auto skinny = [&](int i, cudaStream_t s) {
      const Shape& sh = order[i];
      skinny_gemm_bf16(w[i], x, sh.k, nullptr, y, ldy_of(sh), m, sh.n, sh.k, sh.swiglu, {s, true});
    };
    auto cublas = [&](int i, cudaStream_t s) { cublas_gemm(w[i], x, y, m, order[i].n, order[i].k, s); };
    auto tall_plus = [&](const std::string& name, const std::function<void(int, cudaStream_t)>& rest) {
      report(name + ", PDL", time_graph([&](int i, cudaStream_t s) {
               const Shape& sh = order[i];
               if (m == 1) return gemv_bf16(w[i], x, y, sh.n, sh.k, sh.swiglu, {s, true});
               if (sh.n >= kSkinnyTallRows) return skinny(i, s);
               rest(i, s);
             }, launches, 5));
    };
    // decode_ops' auto choice (skinny_gemm_preferred); the rest through cuBLAS.
    tall_plus("library auto", [&](int i, cudaStream_t s) {
      if (skinny_gemm_preferred(m, order[i].n)) return skinny(i, s);
      cublas(i, s);
    });
    tall_plus("library tall only", cublas);
    for (const auto& v : variants(m)) {
      report(v.name + ", PDL", time_graph([&](int i, cudaStream_t s) {
               const Shape& sh = order[i];
               v.fn(w[i], x, y, ldy_of(sh), m, sh.n, sh.k, sh.swiglu, {s, true});
             }, launches, 5));
      if (m > 1) {  // the library's kernel for tall matrices, this one for the others, and the reverse
        tall_plus("library tall + " + v.name, [&](int i, cudaStream_t s) {
          const Shape& sh = order[i];
          v.fn(w[i], x, y, ldy_of(sh), m, sh.n, sh.k, sh.swiglu, {s, true});
        });
        report(v.name + " tall + library rest, PDL", time_graph([&](int i, cudaStream_t s) {
                 const Shape& sh = order[i];
                 if (sh.n >= kSkinnyTallRows) return v.fn(w[i], x, y, ldy_of(sh), m, sh.n, sh.k, sh.swiglu, {s, true});
                 skinny(i, s);
               }, launches, 5));
      }
    }
  }
  for (auto* p : w) CHECK(cudaFree(p));
}

}  // namespace sweep

int main(int argc, char** argv) {
  using namespace sweep;
  bool only_step = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--step") only_step = true;
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else std::fprintf(stderr, "usage: %s [--step] [--only SUBSTRING]\n", argv[0]), std::exit(2);
  }
  CHECK(cublasCreate(&blas));
  const int64_t kmax = 11008, nmax = 32000;
  bf16* x = random_bf16(16 * kmax, 3, 1.0f);
  bf16 *y, *y_ref;
  CHECK(cudaMalloc(&y, 16 * nmax * sizeof(bf16)));
  CHECK(cudaMalloc(&y_ref, 16 * nmax * sizeof(bf16)));
  if (!only_step)
    for (const Shape& sh : kShapes) sweep_shape(sh, x, y, y_ref);
  step_sequence(x, y);
  CHECK(cudaDeviceSynchronize());
  return 0;
}
