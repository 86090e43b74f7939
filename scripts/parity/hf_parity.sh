#!/usr/bin/env bash
# Parity of the gmsa decoder with Hugging Face transformers; see docs/parity.md.
#   scripts/parity/hf_parity.sh BUILD_DIR OUT_DIR [STORIES_HF_DIR]
# BUILD_DIR holds the built gmsa executable. Results: OUT_DIR/parity.json and a table on stdout.
# The stories260K check runs on STORIES_HF_DIR (written by `gmsa convert`) or, when it is not
# given and GMSA_DATA_DIR is set, on a conversion of $GMSA_DATA_DIR/llama2c-stories260k made here.
# Extra settings through the environment: PARITY_DEVICES (e.g. "cpu,cuda"; default: cpu, and
# cuda when torch sees a GPU). Exits non-zero when any check fails.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 BUILD_DIR OUT_DIR [STORIES_HF_DIR]" >&2
  exit 2
fi
build_dir=$1
out_dir=$2
stories=${3:-}
gmsa="$(cd "$build_dir" && pwd)/gmsa"
[[ -x "$gmsa" ]] || { echo "$gmsa: not found or not executable (build first)" >&2; exit 2; }
mkdir -p "$out_dir"

if [[ -z "$stories" && -n "${GMSA_DATA_DIR:-}" ]]; then
  src="$GMSA_DATA_DIR/llama2c-stories260k"
  stories="$out_dir/stories260K"
  "$gmsa" convert --llama2c "$src/stories260K.bin" --tokenizer "$src/tok512.model" --out "$stories"
fi

args=(--gmsa "$gmsa" --out "$out_dir" --devices "${PARITY_DEVICES:-auto}")
[[ -n "$stories" ]] && args+=(--stories "$stories")
# No network on the GPU machine: never let transformers try the Hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec python3 "$(dirname "$0")/hf_parity.py" "${args[@]}"
