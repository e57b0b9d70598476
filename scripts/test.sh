#!/usr/bin/env bash
# The test suite, exactly as CI runs it (.ci/run calls this):
#   1. setup (apt packages, Python test packages, the reference model) — idempotent;
#   2. Release build, every test (unit + end-to-end, real model, real processes);
#   3. ASan+UBSan build, the unit tests;
#   4. TSan build of the concurrency tests, those tests.
# Set CRESCENT_SKIP_SANITIZERS=1 for a quick local run of step 2 only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${CRESCENT_JOBS:-$(nproc)}"
export CTEST_OUTPUT_ON_FAILURE=1

scripts/setup.sh
export CRESCENT_MODEL="${CRESCENT_MODEL:-$HOME/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

echo "== Release build and all tests"
scripts/build.sh Release
ctest --test-dir build/release -j "$JOBS" --timeout 900

if [ "${CRESCENT_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== ASan+UBSan build, unit tests"
  scripts/build.sh Sanitize --target crescent_unit_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/sanitize -L unit -j "$JOBS" --timeout 900

  echo "== TSan build, concurrency tests"
  scripts/build.sh TSan --target crescent_tsan_tests
  TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build/tsan -L tsan -j "$JOBS" --timeout 900
fi
