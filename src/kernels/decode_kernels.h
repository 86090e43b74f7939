#pragma once
// Launchers of the decoding kernels (src/kernels/decode_kernels.cu): one new token per row
// against a static KV cache, the shape of every CUDA-graph decoding step. At batch 1 the step
// is a chain of ~18 small launches per layer whose fixed costs, not the weight read, made the
// difference between 7.8 ms and the 5.0 ms floor (docs/performance.md); these kernels merge
// the elementwise links of the chain and split the attention over the cache so that it uses
// the whole GPU. Plain pointers and a stream: nvcc never sees a LibTorch header.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gmsa::kernels {

// Bytes [p, p + bytes) that a kernel fetches into L2 for a later one once its own loads are
// done: the decoding step names the next projection's weights, so that memory keeps streaming
// while the dependent kernels between two projections drain and ramp up. A hint: nothing waits
// for it, and it changes no result.
struct L2Span {
  const void* p = nullptr;
  int64_t bytes = 0;
};

// Where and how a kernel is launched. pdl: with programmatic dependent launch (sm_90), so that
// it may start while the previous kernel drains (the GEMMs fetch their first weights then);
// every kernel here waits for its predecessor before reading its inputs. warm: taken by
// gemv_bf16, skinny_gemm_bf16 and decode_attention_bf16, ignored by the others.
struct Launch {
  cudaStream_t stream;
  bool pdl = false;
  L2Span warm = {};
};

// h = x + y (rounded to bf16), normed = w * bf16(h * rsqrt(mean(h^2) + eps)): the residual add
// that ends one sub-block fused with the RMSNorm that starts the next. All [rows, cols] bf16
// contiguous; w [cols].
void add_rms_norm_bf16(const void* x, const void* y, const void* w, void* h, void* normed, int64_t rows,
                       int64_t cols, float eps, const Launch& on);

// Attention of one query per row and head over the cache columns [0, *slot] where
// key_mask[b, column] is true: out [B, H * D] = softmax(q k^T * scale) v, GQA by h / (H / Hkv).
// The columns are split into plan.splits ranges processed by separate blocks (flash-decoding);
// the last block of each (row, head) to finish merges them. `workspace` holds
// B * H * splits * (D + 2) floats; `arrivals` B * H ints that are zero on entry and left zero
// (one set per stream of launches: concurrent launches must not share it); with one split
// neither is touched (null is fine). D in {32, 64, 128,
// 256}, splits <= 128. A row with no allowed column gets zeros. rope.qkv set (and a slot): q is
// ignored; the query is rope(q) of the packed projection rows [B, (H + 2 Hkv) * D], and column
// *slot of the caches gets rope(k) and v before any block reads it (same bf16 rounding as the
// plain ops). early_kv (with a slot and on.pdl): the kernel launched just before this one writes
// only rope.qkv, so the caches' other columns, *slot and key_mask are read while it runs.
struct RopeKV {
  const void* qkv = nullptr;  // [B, (H + 2 Hkv) * D], row stride qkv_stride, 16-byte aligned
  int64_t qkv_stride = 0;
  const void* cos = nullptr;  // [B, D]
  const void* sin = nullptr;
};
// How the kernel covers the columns: `splits` blocks per (row, head), and `steps` (4 or 8) key
// loads per lane in each round before it reduces them.
struct AttentionPlan {
  int64_t splits = 1;
  int steps = 4;
};
void decode_attention_bf16(const void* q, void* k_cache, void* v_cache, const bool* key_mask,
                           const int64_t* slot, void* out, float* workspace, int* arrivals, int64_t batch,
                           int64_t heads, int64_t kv_heads, int64_t dim, int64_t capacity, const AttentionPlan& plan,
                           float scale, bool early_kv, const Launch& on, const RopeKV& rope = {});
// Whether decode_attention_bf16 supports this head size.
bool decode_attention_supports(int64_t dim);
// The plan for a shape on `sms` multiprocessors: splits that fill whole waves at the kernel's
// occupancy; 8 steps where 4 would leave each warp at most kAttentionLatencyBoundRounds rounds
// and the 8-step blocks (5 per multiprocessor instead of 8) fill one wave (7B shape, H100:
// batch 1, original prompt, 5.585 -> 5.521 ms per token; docs/performance.md).
constexpr int64_t kAttentionLatencyBoundRounds = 8;
// Otherwise one split of 8 steps (no merge) where one block per (row, head) fills at least 75%
// of a wave and its warps have at most this many rounds (batch 16: GMSA 4x and 8x, not 2x or the
// original prompt; docs/performance.md).
constexpr int64_t kAttentionShortCacheRounds = 16;
AttentionPlan decode_attention_plan(int64_t batch, int64_t heads, int64_t capacity, int64_t dim, int sms);

// Where a decoding step's beginning writes, per row b: resid[b] = embed[token] (bf16 [V, hidden],
// hidden % 8 == 0, 16-byte aligned), cos/sin [b, dim] for the row's position exactly as
// rope_tables() computes them (bf16), key_mask[b, column] = true (bool [B, capacity]).
struct NextStepBegin {
  const void* embed = nullptr;
  int64_t hidden = 0;
  const float* inv_freq = nullptr;  // [dim / 2]
  int64_t dim = 0;
  bool* key_mask = nullptr;
  int64_t capacity = 0;
  void* resid = nullptr;
  void* cos = nullptr;
  void* sin = nullptr;
};
// The decoding step's first launch: the beginning of row b for tokens[b] at positions[b] and
// column *slot. And its last: positions[b] += 1, *slot += 1.
void decode_step_begin(const int64_t* tokens, const int64_t* positions, const int64_t* slot, const NextStepBegin& at,
                       int64_t batch, cudaStream_t stream);
void decode_step_end(int64_t* positions, int64_t batch, int64_t* slot, cudaStream_t stream);

// Greedy decoding's pick for rows of logits [batch, vocab] (fp32, or bf16 with bf16_logits):
// the repetition penalty on the tokens seen[b] marks (seen null: none; penalty as generate()
// applies it), the argmax (torch's: NaN first, ties to the lower index), then seen[b, next] =
// true, out[b * out_stride + column] = next, finished[b] |= next is one of eos[0..n_eos).
// next [batch] int64. Without an advance column is 0. With one (slot set) the pick ends a
// decoding step that consumes `next` at its following call: column = *slot - slot_base (not
// written unless in [0, columns)), positions[b] += 1, and once every row has read *slot (the
// last block, counted in `ticket`: one int, zero on entry and left zero) *slot += 1. With
// begin.embed set too, each row also begins the next step for its pick: begin_row at the
// advanced position and column *slot + 1 (nothing where that column is past the capacity).
struct StepAdvance {
  int64_t* positions = nullptr;
  int64_t* slot = nullptr;
  int64_t slot_base = 0;
  int64_t columns = 1;
  int* ticket = nullptr;
  NextStepBegin begin = {};
};
void greedy_pick(const void* logits, bool bf16_logits, int64_t batch, int64_t vocab, bool* seen, float penalty,
                 const int64_t* eos, int64_t n_eos, int64_t* next, int64_t* out, int64_t out_stride, bool* finished,
                 const StepAdvance& advance, const Launch& on);

// y [N] = W [N, K] x [K] for one row (bf16 in and out, fp32 accumulation): a bandwidth-bound
// GEMV with 16-byte loads, K a multiple of 8, rows 16-byte aligned. swiglu: as for
// skinny_gemm_bf16 below, y [N/2].
void gemv_bf16(const void* w, const void* x, void* y, int64_t n, int64_t k, bool swiglu, const Launch& on);

// y [M, N] (row stride ldy) = x [M, K] (row stride ldx) W [N, K]^T for 1 <= M <= 16 on tensor
// cores, fp32 accumulation, bf16 out: the weights through registers (src/kernels/skinny_gemm.cuh)
// up to 8 rows, through TMA copies into shared memory (skinny_gemm_tma.cuh) at 9-16 rows where
// skinny_tma_supported(). swiglu: W packs gate rows [0, N/2) over up rows [N/2, N) and
// y [M, N/2] = silu(gate) * up. bias [N] or null (not with swiglu). K % 32 == 0, W, x and their
// row strides 16-byte aligned.
constexpr int64_t kSkinnyMaxRows = 16;
// The fewest rows that take the TMA-fed kernel (up to kSkinnyMaxRows).
constexpr int64_t kSkinnyTmaMinRows = 9;
// Weights with at least this many rows ("tall": gate/up, the LM head of the 7B shape) give the
// skinny GEMM enough tiles to beat cuBLAS at 2-16 rows on an H100; shorter ones do not, alone
// (scripts/bench/skinny_gemm_sweep.cu). It also picks the kernel's tile configuration.
constexpr int64_t kSkinnyTallRows = 16384;
// At 9-16 rows without TMA: cuBLAS splits K for weights with at most this many rows (o_proj,
// down) and adds a reduce kernel; the skinny GEMM does not, and in the decoding step its PDL and
// L2 warming make up for its slower GEMM alone.
constexpr int64_t kSkinnyShortRows = 4096;
bool skinny_gemm_supports(int64_t m, int64_t k);
// Whether 9 to 16 rows run the TMA-fed skinny GEMM (src/kernels/skinny_gemm_tma.cuh): an sm_90
// or later GPU whose driver makes tensor maps. It then serves every weight shape at those rows.
bool skinny_tma_supported();
// Whether decode_ops' automatic choice gives m rows (2 <= m <= 16) times an n-row weight to
// skinny_gemm_bf16 rather than cuBLAS: tall weights always; at 9-16 rows short ones too, and
// every weight where skinny_tma_supported(). (One row goes to the GEMV.)
bool skinny_gemm_preferred(int64_t m, int64_t n);
void skinny_gemm_bf16(const void* w, const void* x, int64_t ldx, const void* bias, void* y, int64_t ldy, int64_t m,
                      int64_t n, int64_t k, bool swiglu, const Launch& on);

// The residual add + RMSNorm between two projections at 9-16 rows, carried by the projections
// themselves where skinny_tma_supported(), instead of a launch of add_rms_norm_bf16 between
// them (~3 us each in the batch-16 step, docs/performance.md). RMSNorm(h) W^T = r * ((h * g)
// W^T) for the row's r = rsqrt(mean(h^2) + eps), so the gain g goes with the projection that
// ends a sub-block and r with the one that starts the next, which sees the row's sum of squares
// only as partial sums. Ends one (partial_out set, plain output): y is the residual stream h,
// updated in place, h = bf16(h + bf16(x W^T + bias)) as the separate add rounds it; scaled
// [M, ldy] = bf16(h * gain) is the next projection's x; partial_out [16, stride] gets the rows'
// sums of squares of h over norm_fusion_parts(n) parts of the columns. Starts one (partial_in set):
// x is that `scaled`, and each output is r * (x W^T) before its rounding (and before SwiGLU),
// r from the parts_in partial sums of each row over `cols` columns. Against the separate ops
// only roundings differ: h * g is rounded once to bf16 where RMSNorm rounds h * r, then
// multiplies by g, and the squares are summed in another (fixed) order.
struct NormFusion {
  float* partial_out = nullptr;
  const void* gain = nullptr;
  void* scaled = nullptr;
  const float* partial_in = nullptr;
  int64_t parts_in = 0;
  int64_t cols = 0;
  float eps = 0.f;
};
// Partial sums per row that a sub-block-ending projection with n outputs leaves, and the row
// stride of a partial-sum buffer of `parts` (a multiple of 4 floats). Buffers hold 16 rows
// (rows >= M unused) and at most kNormPartBytes: norm_fusion_parts(n) <= kNormMaxParts.
int64_t norm_fusion_parts(int64_t n);
__host__ __device__ constexpr int64_t norm_fusion_stride(int64_t parts) { return (parts + 3) / 4 * 4; }
constexpr int kNormPartBytes = 16 * 1024;
constexpr int64_t kNormMaxParts = kNormPartBytes / (16 * 4);
// skinny_gemm_bf16 at 9-16 rows with a NormFusion (not partial_out with swiglu); false where it
// does not apply (no TMA, other row counts, K % 32 != 0), launching nothing.
bool skinny_gemm_fused_bf16(const void* w, const void* x, int64_t ldx, const void* bias, void* y, int64_t ldy,
                            int64_t m, int64_t n, int64_t k, bool swiglu, const NormFusion& fuse, const Launch& on);
// The first sub-block's input in the same form: scaled = bf16(h * gain) and partial [16, 4]
// with one part, the rows' sums of squares, for h [rows <= 16, cols] (bf16, contiguous,
// cols % 8 == 0, 16-byte aligned).
void rms_partials_bf16(const void* h, const void* gain, void* scaled, float* partial, int64_t rows, int64_t cols,
                       const Launch& on);

}  // namespace gmsa::kernels
