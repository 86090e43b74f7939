#pragma once
// The decoding step's own CUDA kernels (src/kernels/decode_kernels.cu) for bf16 tensors: one
// new token per row against a static KV cache, no autograd. Each returns undefined tensors when
// its kernel does not apply (CPU, another dtype or layout, a CPU-only build, switched off) and
// the caller runs the plain ops, which define the semantics.
#include <torch/torch.h>

#include <string>
#include <utility>

namespace gmsa::decode_ops {

// Whether the kernels are built and switched on: fused::enabled() and, at start-up, the
// environment's GMSA_DECODE_KERNELS is not "0".
bool enabled();
void set_enabled(bool on);
// Which kernel multiplies the step's 1 to 16 rows by a weight matrix (linear, swiglu_linear).
// kAuto, the default, takes the faster of each pair in scripts/bench/skinny_gemm_sweep.cu on an
// H100 (docs/performance.md): one row through the CUDA-core GEMV; 2 to 8 rows through the
// tensor-core skinny GEMM for tall matrices (N >= 16384: gate/up with its SwiGLU, the LM head)
// and cuBLAS for the others; 9 to 16 rows through the TMA-fed skinny GEMM for every matrix
// where tma_projection(), else as 2 to 8 rows plus the skinny GEMM for short matrices (N <= 4096:
// o_proj, down, where cuBLAS adds a split-K reduce kernel). kCublas: cuBLAS for all;
// kTensorCores: the skinny GEMM for all.
// At start-up GMSA_DECODE_GEMV=auto|cublas|tc picks it (any other value is an error).
enum class Projection { kAuto, kCublas, kTensorCores };
Projection projection();
void set_projection(Projection p);
// Whether 9 to 16 rows run the TMA-fed skinny GEMM (src/kernels/skinny_gemm_tma.cuh): the
// kernels are on and the GPU is sm_90 or later with a driver that makes tensor maps.
bool tma_projection();
// "auto", "cublas", "tc"; parse_projection throws std::invalid_argument naming the value.
const char* projection_name(Projection p);
Projection parse_projection(const std::string& name);
// Programmatic dependent launch of the kernels (GMSA_DECODE_PDL=0 switches it off).
bool programmatic_launch();
void set_programmatic_launch(bool on);
// How many bytes of a later projection's weights (the `warm` argument below) one of our kernels
// fetches into L2 after its own loads, so that memory keeps streaming across the dependent,
// latency-bound kernels between two weight reads. 0 switches it off; at start-up the
// environment's GMSA_DECODE_WARM_MIB sets it (a whole number of MiB, else an error).
constexpr int64_t kDefaultWarmBytes = int64_t{8} << 20;
constexpr int64_t kMaxWarmMiB = int64_t{1} << 20;
int64_t warm_bytes();
void set_warm_bytes(int64_t bytes);
// Whether a step of `rows` rows runs its projections through the TMA-fed kernel: 9-16 rows where
// tma_projection() and projection() is not kCublas.
bool tma_fed_rows(int64_t rows);
// Whether the kernels of a step of `rows` rows warm the next weights: warm_bytes() > 0 and not
// tma_fed_rows(rows); the TMA-fed kernel copies its own first stages before it waits for the
// previous kernel, and warming L2 for it as well made the batch-16 step slower
// (docs/performance.md).
bool warms_l2(int64_t rows);

// The residual add + RMSNorm between two projections carried by the projections themselves at
// 9-16 rows (kernels::NormFusion, no launch between them): applies where tma_projection() and
// projection() is not kCublas, unless switched off here or by GMSA_DECODE_NORM_FUSION=0 at
// start-up. Only roundings differ from add_rms_norm then linear (the tests bound them).
bool norm_fusion();
void set_norm_fusion(bool on);
// Whether it serves a model of this hidden size (a kernel limit on the partial sums per row).
bool norm_fusion_fits(int64_t hidden);
// An RMSNorm's input in that form: scaled = bf16(h * gain) [rows, H] (bf16) and partial
// [16, stride] (fp32, stride a multiple of 4), whose first `parts` columns hold the sums of
// squares of h's rows over parts of the columns (rows >= `rows` unused); eps the norm's.
struct NormedInput {
  torch::Tensor scaled, partial;
  int64_t parts = 0;
  double eps = 0.0;
  bool defined() const { return scaled.defined(); }
};
// The first sub-block's input: h [rows, H] (the embeddings), RMSNorm weight gain [H].
NormedInput rms_partials(const torch::Tensor& h, const torch::Tensor& gain, double eps);
// Ends a sub-block: resid [rows, N] += x W^T + bias in place (rounded as linear, then the add),
// and returns the next RMSNorm's input (weight gain [N], eps).
NormedInput residual_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                            torch::Tensor& resid, const torch::Tensor& gain, double eps,
                            const torch::Tensor& warm = {});
// Starts one: RMSNorm(h) W^T (+ bias), or with swiglu silu(gate) * up for a packed gate_up.
torch::Tensor normed_linear(const NormedInput& in, const torch::Tensor& w, const torch::Tensor& bias, bool swiglu,
                            const torch::Tensor& warm = {});

// {h, normed}: h = x + y, normed = RMSNorm(h) with weight w. x, y [rows, H] contiguous.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& y,
                                                     const torch::Tensor& w, double eps);

// softmax(q k^T * scale + mask) v of one query per row over cache columns [0, *slot] where
// key_mask [B, capacity] (bool) is true; q [B, H, D]; returns [B, H * D]. arrivals: B * H int32
// zeros on the device, left zero, that the kernel's blocks count themselves in (reuse one per
// stream of steps; undefined: allocated per call).
// warm (here, in rope_attention, linear and swiglu_linear): a contiguous weight whose first
// warm_bytes() bytes the kernel fetches into L2 when done with its own loads, where
// warms_l2(rows); a hint for a later launch (cuBLAS ignores it).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                        const torch::Tensor& key_mask, const torch::Tensor& slot, double scale,
                        const torch::Tensor& arrivals = {}, const torch::Tensor& warm = {});

// The decoding step's attention from the packed projection's output qkv [B, (H + 2 Hkv) * D]
// (rows may be strided, 16-byte aligned), in one launch: RoPE on the query, rope(k) and v stored
// into column *slot of k_cache / v_cache [B, Hkv, capacity, D], then attention() over [0, *slot]
// (bit for bit as attention() of the rotated query). cos/sin [B, D] as rope_tables() makes them
// for one position. Launched straight after the projection, it reads the caches' older columns
// while the projection still runs (programmatic launch). Undefined where the kernels do not apply.
torch::Tensor rope_attention(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                             torch::Tensor& k_cache, torch::Tensor& v_cache, const torch::Tensor& key_mask,
                             const torch::Tensor& slot, int64_t heads, double scale, const torch::Tensor& arrivals = {},
                             const torch::Tensor& warm = {});

// Whether attention() supports this head size (32, 64, 128, 256) in this build.
bool attention_supports(int64_t head_dim);
// How attention() covers a cache of this shape on the current GPU: blocks per (row, head) and
// key loads per lane in each round (4, or 8 where a warp would otherwise have only a few rounds:
// the latency-bound batch-1 case), and the multiprocessors of the GPU it was made for. Zeros in a
// build without the kernels.
struct AttentionPlan {
  int64_t splits = 0;
  int steps = 0;
  int multiprocessors = 0;
};
AttentionPlan attention_plan(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim);

// x W^T (+ bias) with the kernel projection() picks when x [..., K] holds 1 to 16 contiguous
// bf16 rows (K % 32 == 0; one row: K % 8 == 0); else torch::linear.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias = {},
                     const torch::Tensor& warm = {});

// The decoding step's first launch: the rows' embeddings embed[tokens] ([B, H], bf16 embed
// [V, H]), their RoPE tables for `positions` [B] as rope_tables() makes them (cos, sin [B, dim]
// bf16, inv_freq [dim / 2] fp32), and key_mask[:, *slot] = true. Undefined tensors where the
// kernel does not apply (the caller runs the LibTorch ops). step_end: positions += 1 and
// *slot += 1 in one launch; false where it does not apply.
struct StepBegin {
  torch::Tensor embeds, cos, sin;
};
StepBegin step_begin(const torch::Tensor& tokens, const torch::Tensor& embed, const torch::Tensor& positions,
                     const torch::Tensor& inv_freq, const torch::Tensor& slot, torch::Tensor& key_mask, int64_t dim);
bool step_end(torch::Tensor& positions, torch::Tensor& slot);

// Greedy decoding's pick in one kernel: logits [B, V] fp32 (contiguous), the repetition penalty
// on the tokens `seen` [B, V] (bool; undefined: no penalty) marks, argmax as torch.argmax; then
// seen[b, next] = true, out_column[b] = next ([B] int64, any stride), finished[b] |= next in eos
// ([n] int64). Returns next [B]; undefined where the kernel does not apply (the caller runs the
// plain ops, which define the semantics).
torch::Tensor greedy_pick(const torch::Tensor& logits, const torch::Tensor& seen, double penalty,
                          const torch::Tensor& eos, torch::Tensor& out_column, torch::Tensor& finished);

// greedy_pick as the last launch of a decoding step (DecodeStep::pick_greedily), so that the
// step feeds itself: logits [B, V] bf16 or fp32 (compared as their fp32 values: the pick of the
// fp32 copy); the pick goes to next [B] (the step's input) and to out[b, *slot - slot_base]
// (out [B, N] int64, unit column stride; a column outside [0, N) is not written), and the step
// advances: positions [B] += 1, then *slot += 1 once every row has read it (ticket: one int32
// zero on the device, left zero, per stream of steps). With next_begin the same launch also
// does step_begin's work for the next step: the picked tokens' embeddings and RoPE tables at
// the advanced positions into next_begin->into (a StepBegin from step_begin, which the next
// step then reads instead of launching step_begin), and key_mask's next column (none past its
// capacity). False where the kernel does not apply.
struct NextBegin {
  StepBegin into;
  torch::Tensor embed, inv_freq, key_mask;  // as for step_begin
};
bool greedy_step_pick(const torch::Tensor& logits, const torch::Tensor& seen, double penalty, const torch::Tensor& eos,
                      torch::Tensor& next, torch::Tensor& out, int64_t slot_base, torch::Tensor& finished,
                      torch::Tensor& positions, torch::Tensor& slot, torch::Tensor& ticket,
                      const NextBegin* next_begin = nullptr);
// Whether greedy generation picks inside the decoding step where it can (DecodeStep::
// pick_greedily): the kernels are on, unless switched off here or by GMSA_DECODE_STEP_PICK=0 at
// start-up (then generate() picks after each step, as for sampling).
bool step_pick();
void set_step_pick(bool on);

// silu(x G^T) * (x U^T) for a packed gate_up [2I, K] (G over U), as linear() then silu_mul with
// their roundings, in one kernel; undefined where projection() gives these rows to cuBLAS or no
// kernel applies.
torch::Tensor swiglu_linear(const torch::Tensor& x, const torch::Tensor& gate_up, const torch::Tensor& warm = {});

}  // namespace gmsa::decode_ops
