#!/usr/bin/env bash
# Builds and runs the single-thread GEMM microbenchmark (adamant's kernel vs OpenBLAS) with the Swift
# toolchain's clang (the kernels use clang's per-function target pragmas). Usage: run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
cc=${CC:-$(dirname "$(readlink -f "$(command -v swift)")")/clang}
out=$(mktemp -d)/gemm_bench
"$cc" -O3 -I "$root/Sources/CKernels/include" -I "$root/Sources/CBackend/include" "$here/gemm_bench.c" \
    "$root"/Sources/CKernels/gemm*.c "$root"/Sources/CBackend/*.c -o "$out" -ldl -lpthread -lm
"$out"
