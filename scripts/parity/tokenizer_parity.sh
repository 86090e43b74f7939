#!/usr/bin/env bash
# Token-for-token parity of `gmsa tokenize` with Hugging Face `tokenizers` (run where
# `tokenizers` is installed, e.g. the GPU machine). Trains LLaMA-3-, Qwen2- and GPT-2-style
# byte-level BPE tokenizers on DATA_DIR text, encodes every corpus text and edge case with both,
# and exits non-zero on any difference in ids or decoded text.
#   usage: scripts/parity/tokenizer_parity.sh BUILD_DIR DATA_DIR [WORK_DIR]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR DATA_DIR [WORK_DIR]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
data=$(cd "$2" && pwd)
work=${3:-$here/../../.cache/tokenizer-parity}
mkdir -p "$work"
python3 "$here/tokenizer_parity.py" hf --gmsa "$build/gmsa" --data "$data" --work "$work"
