#!/usr/bin/env bash
# Builds and runs the CImageIO C tests with gcc (no Swift needed).
#   Tests/CImageIOTests/run.sh              # build + run
#   Tests/CImageIOTests/run.sh --valgrind   # build + run under valgrind (skips the full 10k read)
# Needs: gcc, libjpeg62-turbo-dev, libpng-dev, zlib1g-dev (+ valgrind for --valgrind).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
src="$repo/Sources/CImageIO"
out="${AIO_TEST_BUILD_DIR:-${TMPDIR:-/tmp}}/aio_test_imageio"
if [[ -z "${AIO_CIFAR_TGZ:-}" ]]; then
    for c in "$repo/../shared/data/cifar10/test.tar.gz" /work/shared/data/cifar10/test.tar.gz; do
        if [[ -r "$c" ]]; then export AIO_CIFAR_TGZ="$c"; break; fi
    done
fi
gcc -std=c11 -O2 -g -Wall -Wextra -I"$src/include" -I"$src" -I"$here" \
    "$here/test_imageio.c" "$src"/*.c -ljpeg -lpng -lz -lm -o "$out"
if [[ "${1:-}" == "--valgrind" ]]; then
    AIO_TEST_QUICK=1 exec valgrind -q --leak-check=full --show-leak-kinds=all \
        --errors-for-leak-kinds=all --track-origins=yes --error-exitcode=99 "$out"
fi
exec "$out"
