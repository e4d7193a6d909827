#!/usr/bin/env bash
# build_wheel.sh PYTHON PREFIX — builds PREFIX/adamant-VERSION-py3-none-manylinux_*.whl (`make wheel`):
#   1. a wheel of bindings/python with PREFIX/lib/libadamant.so bundled (setup.py), tagged
#      py3-none-linux_x86_64 (ctypes bindings: any Python 3);
#   2. `auditwheel repair` copies the shared libraries libadamant.so needs beyond the manylinux
#      baseline (libonnx, libonnx_proto, libprotobuf, ...) into adamant.libs/, renames them
#      uniquely and points libadamant.so's RPATH at them (patchelf), and retags the wheel manylinux.
# OpenBLAS is not linked (adamant dlopens it as an optional reference GEMM, off its compute path), so
# it is not bundled: the wheel's adamant runs its own kernels wherever libopenblas.so.0 is absent.
# PYTHON needs setuptools, wheel, auditwheel and patchelf (requirements-dev.txt, `make setup`).
set -euo pipefail
PY=${1:?usage: build_wheel.sh PYTHON PREFIX}
PREFIX=$(cd "${2:?usage: build_wheel.sh PYTHON PREFIX}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
LIB="$PREFIX/lib/libadamant.so"
[ -f "$LIB" ] || { echo "no $LIB: run make dist first" >&2; exit 1; }
for m in setuptools wheel auditwheel; do
    "$PY" -c "import $m" 2>/dev/null || { echo "$PY lacks $m: run make setup (or pip install -r requirements-dev.txt)" >&2; exit 1; }
done
# patchelf (PyPI's wheel installs it beside the interpreter) must be on PATH for auditwheel.
export PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v patchelf >/dev/null || { echo "patchelf not found: pip install patchelf (make setup)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$HERE/build"  # a stale build/lib would be packed as well
ADAMANT_LIBRARY="$LIB" "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$WORK/raw" "$HERE"
rm -rf "$HERE/build" "$HERE"/*.egg-info
raw=$(ls "$WORK"/raw/adamant-*.whl)
rm -f "$PREFIX"/adamant-*.whl
"$PY" -m auditwheel repair -w "$PREFIX" "$raw"
whl=$(ls "$PREFIX"/adamant-*.whl)
echo "built $whl:"
"$PY" -m zipfile -l "$whl" | grep -E '\.so' | awk '{print "  " $1}'
