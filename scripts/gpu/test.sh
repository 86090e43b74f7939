#!/usr/bin/env bash
# On the GPU machine: every test (the CUDA-only ones run there), logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source .gpu/device-env.sh >/dev/null
build=${1:-build-gpu}
export GMSA_DATA_DIR=${GMSA_DATA_DIR:-$PWD/.cache/shared-data}
(cd "$build" && ctest -j 8 --timeout 600 --output-on-failure) > "${OUT:-/tmp}/ctest-gpu.log" 2>&1
rc=$?
grep -E "tests passed|Failed|\*\*\*|Skipped" "${OUT:-/tmp}/ctest-gpu.log" | head -40
exit $rc
