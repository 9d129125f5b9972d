#!/usr/bin/env bash
# Builds the inference app (main) and the test tool (yolo_check) into BUILD_DIR (default:
# ascend310_infer/build). Installs nothing: it names what is missing and stops.
# The Ascend backend is compiled when MindSpore's C++ API is found: in MINDSPORE_PATH, or in the
# folder of the mindspore (or mindspore-ascend) package that PYTHON (default python3) sees.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build_dir=${BUILD_DIR:-$here/build}
PYTHON=${PYTHON:-python3}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if command -v pkg-config >/dev/null && ! pkg-config --exists opencv4; then missing+=(libopencv-dev); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: missing ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 1
fi

mindspore_path() {
  if [ -n "${MINDSPORE_PATH:-}" ]; then
    echo "$MINDSPORE_PATH"
    return
  fi
  local pkg location
  for pkg in mindspore mindspore-ascend; do
    location=$("$PYTHON" -m pip show "$pkg" 2>/dev/null | sed -n 's/^Location: //p') || true
    if [ -n "$location" ]; then
      echo "$location/mindspore"
      return
    fi
  done
}

cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMINDSPORE_PATH="$(mindspore_path)"
cmake --build "$build_dir" -j "$(nproc)"
echo "built $build_dir/main and $build_dir/yolo_check"
