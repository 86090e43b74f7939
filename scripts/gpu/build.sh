#!/usr/bin/env bash
# On the GPU machine: build against the CUDA LibTorch inside the machine's pip PyTorch, with
# the Debian -dev packages carried in .gpu/debs (see ../shared/PLATFORM.md and docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh >/dev/null
build=${1:-build-gpu}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$CMAKE_PREFIX_PATH" -DCMAKE_CUDA_ARCHITECTURES=90 > "$build.configure.log" 2>&1 \
  || { tail -30 "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" 2>&1 | { grep -E "error|warning: unused|FAILED|Linking" || true; } | head -80
test -x "$build/gmsa"
