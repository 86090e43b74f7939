#!/usr/bin/env bash
# The whole GMSA pipeline on a CPU, from nothing to a results table (docs/quickstart.md):
# synthetic data -> sentencepiece tokenizer -> decoder pretraining -> GMSA and TCP autoencoder
# pretraining -> KEFT -> restoration / QA evaluation -> latency -> runs/quickstart/report.md.
# Needs no downloads and nothing outside the repository.
#
#   bash scripts/quickstart.sh [--keep] [--seed N] [--skip-build]
#
# --keep        resume: keep runs/quickstart and skip the steps whose outputs exist (training
#               stages resume from their last checkpoint); by default the directory is
#               deleted first and everything is recomputed.
# --seed N      the data, model initialisation and training seed (default 1234).
# --skip-build  do not run scripts/setup.sh and scripts/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0 seed=1234 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --seed) seed="$2"; shift ;;
    --skip-build) build=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$build" = 1 ]; then
  bash scripts/setup.sh
  bash scripts/build.sh
fi
gmsa="${GMSA_BUILD_DIR:-build}/gmsa"
# OpenMP threads that sleep instead of spinning while they wait: on cores shared with other
# work, spinning threads made training steps up to 10 times slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
[ -x "$gmsa" ] || { echo "quickstart: $gmsa not found; build first (scripts/build.sh)" >&2; exit 1; }

run=runs/quickstart
data=$run/data
[ "$keep" = 1 ] || rm -rf "$run"
mkdir -p "$run"
[ "$keep" = 1 ] || : > "$run/timings.tsv"  # --keep appends the steps it runs

steps_total=9
step_no=0
t_pipeline=$(date +%s.%N)
set_seed=(--set "run.seed=$seed")

# step NAME OUTPUT COMMAND...: runs COMMAND unless --keep and OUTPUT exists; logs its wall time.
step() {
  local name="$1" output="$2"
  shift 2
  step_no=$((step_no + 1))
  local elapsed
  elapsed=$(awk -v a="$t_pipeline" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  if [ "$keep" = 1 ] && [ -e "$output" ]; then
    echo "=== [$step_no/$steps_total] $name: $output exists, skipped (--keep)"
    return
  fi
  echo "=== [$step_no/$steps_total] $name (pipeline time so far ${elapsed}s)"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s\t%.1f\n", n, b - a }' >> "$run/timings.tsv"
  awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "=== %s: %.1f s\n", n, b - a }'
}

train() { "$gmsa" train -c "configs/quickstart/$1.yaml" "${set_seed[@]}"; }

step "synthetic data" "$data/qa_eval.jsonl" \
  "$gmsa" data synth --out "$data" --seed "$seed"
step "tokenizer" "$run/tokenizer/tokenizer.model" \
  "$gmsa" tokenizer train --input "$data/corpus.txt" --input "$data/qa_train.jsonl" \
  --out "$run/tokenizer" --vocab-size 1000 --model-type bpe
step "decoder pretraining (lm)" "$run/lm/final/DONE" train lm
step "GMSA autoencoder (ae)" "$run/gmsa/final/DONE" train gmsa
step "TCP autoencoder (ae)" "$run/tcp/final/DONE" train tcp
step "KEFT" "$run/keft/final/DONE" train keft

# Evaluation settings of the GMSA paper: greedy decoding, repetition penalty 1.3. Restoration
# may need a whole document (at most ~110 tokens here); answers are a few tokens.
model=$run/lm/final
step "restoration eval" "$run/eval/restore/metrics.json" \
  "$gmsa" eval --task restore --model "$model" --data "$data/corpus_eval.txt" \
  --compressor "$run/gmsa/final" --compressor "$run/tcp/final" --methods gmsa,tcp --rates 4,8 \
  --max-new-tokens 128 --repetition-penalty 1.3 --max-context-tokens 320 --device cpu \
  --out "$run/eval/restore"
step "QA eval" "$run/eval/qa/metrics.json" \
  "$gmsa" eval --task qa --model "$model" --data "$data/qa_eval.jsonl" \
  --compressor "$run/keft/final" --methods original,closed-book,gmsa --rates 4,8 \
  --max-new-tokens 16 --repetition-penalty 1.3 --max-context-tokens 320 --device cpu \
  --out "$run/eval/qa"
# Latency of the trained decoder and compressor on a context as long as a QA context.
step "latency" "$run/eval/latency.json" \
  "$gmsa" bench infer --model "$model" --compressor "$run/keft/final" --context-tokens 304 \
  --prompt-tokens 16 --new-tokens 16 --rates 4,8 --repeats 5 --device cpu \
  --json "$run/eval/latency.json"

echo "=== report"
"$gmsa" report --run "$run" --out "$run/report.md"
awk -v a="$t_pipeline" -v b="$(date +%s.%N)" \
  'BEGIN { printf "=== quickstart done in %.1f s (after the build); report: runs/quickstart/report.md\n", b - a }'
