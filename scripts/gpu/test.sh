#!/usr/bin/env bash
# On the GPU machine: every test (the CUDA-only ones run there). The test binaries run directly
# (not through ctest, whose test discovery files differ with CMake 4); logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh >/dev/null
build=${1:-build-gpu}
export GMSA_DATA_DIR=${GMSA_DATA_DIR:-$PWD/.cache/shared-data}
export GMSA_SOURCE_DIR=$PWD
rc=0
for t in gmsa_base_tests gmsa_tests; do
  "$build/$t" > "${OUT:-/tmp}/$t-gpu.log" 2>&1 || rc=1
  echo "$t: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "${OUT:-/tmp}/$t-gpu.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "${OUT:-/tmp}/$t-gpu.log" | head -20
done
exit $rc
