#!/usr/bin/env bash
# Setup, build, run every test. Tests that need the real models and data in ../shared/data
# find them through GMSA_DATA_DIR and report a skip when it is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
if [ -z "${GMSA_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export GMSA_DATA_DIR=$(cd ../shared/data && pwd)
fi
echo "test: GMSA_DATA_DIR=${GMSA_DATA_DIR:-<unset: tests on real data will skip>}"
cd "${GMSA_BUILD_DIR:-build}"
ctest --output-on-failure -j "${GMSA_JOBS:-$(nproc)}" --timeout 900
