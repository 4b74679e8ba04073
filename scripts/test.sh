#!/usr/bin/env bash
# Set-up if needed, incremental build, then the whole test suite through CTest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EDGEFORGE_BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
cd "$build"
ctest --output-on-failure -j "${EDGEFORGE_TEST_JOBS:-2}" "$@"
