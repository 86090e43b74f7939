#pragma once
// What the CUDA benchmark drivers here share: error checks, random bf16 buffers and the timing
// of a captured sequence of launches. Include after the kernel file (for gmsa::kernels::bf16).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define CHECK(x)                                                                              \
  do {                                                                                        \
    auto e = (x);                                                                             \
    if (e != 0) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #x, static_cast<int>(e)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

namespace bench {

using gmsa::kernels::bf16;

__global__ void fill_kernel(bf16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16(scale * (static_cast<float>(h & 0xffff) / 32768.f - 1.f));
  }
}

bf16* random_bf16(int64_t n, uint32_t seed, float scale) {
  bf16* p;
  CHECK(cudaMalloc(&p, n * sizeof(bf16)));
  fill_kernel<<<1024, 256>>>(p, n, seed, scale);
  CHECK(cudaGetLastError());
  return p;
}

// Records `launches` calls of f(i) into a graph; returns the median ms per call over replays.
double time_graph(const std::function<void(int, cudaStream_t)>& f, int launches, int replays = 7) {
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  for (int i = 0; i < launches; ++i) f(i, s);
  CHECK(cudaStreamEndCapture(s, &g));
  CHECK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  CHECK(cudaGraphLaunch(ge, s));  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < replays; ++r) {
    CHECK(cudaEventRecord(a, s));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float t;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t / launches);
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaGraphExecDestroy(ge));
  CHECK(cudaGraphDestroy(g));
  CHECK(cudaStreamDestroy(s));
  return ms[ms.size() / 2];
}

}  // namespace bench
