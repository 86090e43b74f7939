#pragma once
// The decoding step's own CUDA kernels (src/kernels/decode_kernels.cu) for bf16 tensors: one
// new token per row against a static KV cache, no autograd. Each returns undefined tensors when
// its kernel does not apply (CPU, another dtype or layout, a CPU-only build, switched off) and
// the caller runs the plain ops, which define the semantics.
#include <torch/torch.h>

#include <utility>

namespace gmsa::decode_ops {

// Whether the kernels are built and switched on: fused::enabled() and, at start-up, the
// environment's GMSA_DECODE_KERNELS is not "0".
bool enabled();
void set_enabled(bool on);
// The batch-1 GEMV kernel instead of cuBLAS (GMSA_DECODE_GEMV=cublas switches it off).
bool custom_gemv();
void set_custom_gemv(bool on);

// {h, normed}: h = x + y, normed = RMSNorm(h) with weight w. x, y [rows, H] contiguous.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& y,
                                                     const torch::Tensor& w, double eps);

// qkv [B, (H + 2 Hkv) * D] (a packed projection's output, rows may be strided): returns q
// [B, H, D] with RoPE applied, and writes rope(k) and v into column *slot of k_cache / v_cache
// [B, Hkv, capacity, D]. cos/sin [B, D] as rope_tables() makes them for one position.
torch::Tensor rope_store_kv(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                            torch::Tensor& k_cache, torch::Tensor& v_cache, const torch::Tensor& slot,
                            int64_t heads, int64_t kv_heads);

// softmax(q k^T * scale + mask) v of one query per row over cache columns [0, *slot] where
// key_mask [B, capacity] (bool) is true; q [B, H, D]; returns [B, H * D].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                        const torch::Tensor& key_mask, const torch::Tensor& slot, double scale);

// Whether attention() supports this head size (32, 64, 128, 256) in this build.
bool attention_supports(int64_t head_dim);

// x W^T (+ bias) with the GEMV kernel when x is one bf16 row and custom_gemv(); else torch::linear.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {});

}  // namespace gmsa::decode_ops
