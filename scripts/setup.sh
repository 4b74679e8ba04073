#!/usr/bin/env bash
# One-time (idempotent) set-up: Debian packages, the Python venv holding the torch wheel (LibTorch)
# and the interop packages, then configure and build. Re-running skips whatever is already there.
#
#   scripts/setup.sh            # everything
#   EDGEFORGE_SKIP_BUILD=1 scripts/setup.sh   # dependencies only
#
# Environment: EDGEFORGE_VENV (default ~/.cache/edgeforge/venv), EDGEFORGE_BUILD_DIR (default build),
# EDGEFORGE_CUDA (AUTO|ON|OFF, default AUTO), EDGEFORGE_JOBS (default: number of cores).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EDGEFORGE_VENV:-$HOME/.cache/edgeforge/venv}
build=${EDGEFORGE_BUILD_DIR:-$root/build}
torch_version=2.13.0
python_packages=(numpy safetensors onnx onnxruntime tensorboard h5py diffusers peft)
debian_packages=(build-essential cmake ninja-build pkg-config ccache nlohmann-json3-dev libspdlog-dev catch2
                 libhdf5-dev libcli11-dev libpng-dev libjpeg-dev libonnx-dev libprotobuf-dev protobuf-compiler)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- Debian packages ------------------------------------------------------------------------------
missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: ${missing[*]}"
  $sudo apt-get update -qq || die "apt-get update failed (is the Debian package registry reachable?)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"
fi

# --- Python venv with the torch wheel -------------------------------------------------------------
stamp="$venv/.edgeforge-packages"
want="torch==$torch_version ${python_packages[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (install python3-venv)"
  fi
  say "installing torch==$torch_version and ${python_packages[*]} into $venv (several GB the first time)"
  "$venv/bin/pip" install --quiet "torch==$torch_version" "${python_packages[@]}" \
    || die "pip install failed (is PyPI reachable? is there disk space for the torch wheel?)"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c "import torch" || die "torch does not import from $venv"

[ "${EDGEFORGE_SKIP_BUILD:-0}" = 1 ] && exit 0

# --- configure and build --------------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  say "configuring $build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DEDGEFORGE_VENV="$venv" -DEDGEFORGE_CUDA="${EDGEFORGE_CUDA:-AUTO}" || die "cmake configure failed"
fi
say "building (first build: about 15 minutes on 2 cores; later builds are incremental)"
cmake --build "$build" -j "${EDGEFORGE_JOBS:-$(nproc)}" || die "build failed"
say "done: $build/cli/edgeforge"
