#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and talk to the reference model.
#   scripts/run.sh [crescent chat flags...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/build.sh Release --target crescent_cli
exec build/release/bin/crescent chat "$@"
