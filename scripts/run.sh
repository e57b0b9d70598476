#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run the disaggregated cluster on loopback
# (`crescent up`: KV master, conductor, one prefill and one decode node) serving the reference
# model over the OpenAI-compatible API on :8000.
#   scripts/run.sh [crescent up flags...]       e.g. --prefill 2 --decode 2 --port 9000
#   scripts/run.sh serve [crescent serve flags] one process instead (HTTP front + engine)
#   scripts/run.sh chat [crescent chat flags]   talk to the model in the terminal
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/build.sh Release --target crescent_cli
B=build/release/bin
case "${1:-}" in
  chat) shift; exec "$B/crescent" chat "$@" ;;
  serve) shift; ROLE=(serve) ;;
  *) ROLE=(up) ;;
esac
cat >&2 <<MSG
crescent ${ROLE[0]}: once it says it is up (or "listening on"), try
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Name three colors."}],"max_tokens":48}'
Stop with Ctrl-C.
MSG
exec "$B/crescent" "${ROLE[@]}" "$@"
