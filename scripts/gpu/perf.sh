#!/usr/bin/env bash
# On the GPU machine: the benchmarks behind docs/performance.md, ours and the Python reference
# in the same call. Usage: scripts/gpu/perf.sh BUILD_DIR OUT_DIR [infer] [sweep] [serve] [train] [ref]
# (no section names: all). JSON reports and logs go to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh >/dev/null
build=${1:-build-gpu}; out=${2:-/tmp/perf}; shift 2 || true
sections=${*:-infer sweep serve train ref}
mkdir -p "$out"
g="$build/gmsa"
want() { [[ " $sections " == *" $1 "* ]]; }
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$out/commands.txt"
  "$@" > "$out/$name.log" 2>&1; local rc=$?
  grep -E '^\|' "$out/$name.log" || tail -5 "$out/$name.log"
  [ $rc -eq 0 ] || echo "!! $name exited $rc"
}
nq="--arch llama2-7b --context-tokens 3000 --prompt-tokens 30 --new-tokens 100"
if want infer; then
  run infer_b1 "$g" bench infer $nq --batch 1 --rates 4,8 --repeats 5 --warmup 1 --json "$out/infer_b1.json"
  if [ "${ABLATIONS:-1}" = 1 ]; then
  run infer_b1_eager "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --no-cuda-graph --json "$out/infer_b1_eager.json"
  run infer_b1_plain_ops "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --no-fused-kernels --json "$out/infer_b1_plain_ops.json"
  run infer_b1_no_decode_kernels "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --no-decode-kernels --json "$out/infer_b1_no_decode_kernels.json"
  run infer_b1_gemv_cublas "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --gemv cublas --json "$out/infer_b1_gemv_cublas.json"
  run infer_b1_gemv_tc "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --gemv tc --json "$out/infer_b1_gemv_tc.json"
  run infer_b1_no_pdl "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --no-pdl --json "$out/infer_b1_no_pdl.json"
  run infer_b1_no_warm "$g" bench infer $nq --batch 1 --rates 4 --repeats 3 --warmup 1 --warm-mib 0 --json "$out/infer_b1_no_warm.json"
  run decode_attention python3 scripts/bench/decode_attention.py
  run decode_gemv python3 scripts/bench/decode_gemv.py
  fi
fi
if want sweep; then
  # The projection kernels one by one and as a step's sequence of weights (JSON lines).
  /usr/local/cuda/bin/nvcc -std=c++17 -O3 -arch=sm_90 -I src/kernels scripts/bench/skinny_gemm_sweep.cu -lcublas \
    -o "$build/skinny_gemm_sweep" && run skinny_gemm_sweep "$build/skinny_gemm_sweep"
fi
if want serve; then
  run serve_b16 "$g" bench infer $nq --batch 16 --rates 4,8 --repeats 3 --warmup 1 --json "$out/serve_b16.json"
  # The original prompt's largest batch on an 80 GB H100 is 32 (73,502 MiB peak since the MLP
  # runs in row chunks; docs/performance.md, eighteenth session); the compressed prompts fit more.
  for b in ${SERVE_BATCHES-32}; do
    run serve_b$b "$g" bench infer $nq --batch "$b" --rates 4,8 --repeats 3 --warmup 1 --json "$out/serve_b$b.json"
  done
  for b in ${SERVE_COMPRESSED_BATCHES-64 96}; do
    run serve_b${b}_compressed "$g" bench infer $nq --batch "$b" --rates 4,8 --repeats 3 --warmup 1 --skip-original \
      --json "$out/serve_b${b}_compressed.json"
  done
fi
if want train; then
  run train "$g" bench train --arch llama2-7b --stages ae,keft --contexts ${TRAIN_CONTEXTS:-512,3072} \
    --batches ${TRAIN_BATCHES:-4,1} --steps 10 --warmup 3 --json "$out/train.json"
  # The reference runs rates 4 alone at 3072 x 1; so does this row.
  run train_3072_rate4 "$g" bench train --arch llama2-7b --stages ae --contexts 3072 --batches 1 --rates 4 \
    --steps 10 --warmup 3 --json "$out/train_3072_rate4.json"
fi
if want ref; then
  run ref_ae_512 python3 scripts/bench/reference_gmsa.py ae-step --context 512 --batch 4 --rates 4,8 --steps 10 --warmup 3 --json "$out/ref_ae_512.json"
  run ref_ae_3072 python3 scripts/bench/reference_gmsa.py ae-step --context 3072 --batch 1 --rates 4 --steps 10 --warmup 3 --json "$out/ref_ae_3072.json"
  run ref_generate python3 scripts/bench/reference_gmsa.py generate --prompt-len 3000 --batch 1 --new-tokens 100 --json "$out/ref_generate.json"
  run ref_serve python3 scripts/bench/reference_gmsa.py serve --batch 16 --prompt-len 3000 --rate 4 --new-tokens 100 --json "$out/ref_serve.json"
fi
