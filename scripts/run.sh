#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and serve the reference model over the
# OpenAI-compatible API (`crescent serve`, one process: HTTP front + engine).
#   scripts/run.sh [crescent serve flags...]      e.g. --port 9000 --api-key secret
#   scripts/run.sh chat [crescent chat flags...]  talk to the model in the terminal instead
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/build.sh Release --target crescent_cli
if [ "${1:-}" = chat ]; then
  shift
  exec build/release/bin/crescent chat "$@"
fi
cat >&2 <<'MSG'
crescent serve: once it logs "listening on", try
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"Name three colors."}],"max_tokens":48}'
Stop with Ctrl-C.
MSG
exec build/release/bin/crescent serve "$@"
