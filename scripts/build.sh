#!/usr/bin/env bash
# Configures and builds one build type into build/<type> (lower case).
#   scripts/build.sh [Release|Sanitize|TSan|Debug] [cmake --build args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TYPE="${1:-Release}"
shift || true
DIR="$ROOT/build/$(echo "$TYPE" | tr '[:upper:]' '[:lower:]')"
JOBS="${CRESCENT_JOBS:-$(nproc)}"
cmake -S "$ROOT" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE="$TYPE" -DCRESCENT_WERROR=ON >/dev/null
cmake --build "$DIR" -j "$JOBS" "$@"
