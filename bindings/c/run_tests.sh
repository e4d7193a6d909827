#!/usr/bin/env bash
# run_tests.sh PREFIX — tests an installed adamant (PREFIX/lib/libadamant.so, PREFIX/include,
# PREFIX/lib/pkgconfig/adamant.pc) from C:
#   1. example.c and test_abi.c compile against it through pkg-config (as documented, and with
#      -Wall -Wextra -pedantic -Werror);
#   2. the example runs on examples/models/mbn_resnet8.clean.onnx (or ../shared's copy) and
#      prints 5 result lines; bad domains / images fail cleanly;
#   3. test_abi passes;
#   4. the library exports exactly the adm_* functions of include/adamant.h and does not
#      link any libswift*.
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -u

if [ $# -lt 1 ]; then
    echo "usage: $0 PREFIX   (e.g. $0 dist)" >&2
    exit 2
fi
PREFIX=$(cd "$1" 2>/dev/null && pwd) || { echo "no such PREFIX: $1" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CC=${CC:-cc}
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---- locate models --------------------------------------------------------------------
MODEL_DIR="$REPO/examples/models"
SHARED="$REPO/../shared"
if [ ! -f "$MODEL_DIR/mbn_resnet8.clean.onnx" ]; then
    MODEL_DIR="$SHARED/models/mbn"
fi
CLEAN="$MODEL_DIR/mbn_resnet8.clean.onnx"
ADV="$MODEL_DIR/mbn_resnet8.adv.onnx"
[ -f "$ADV" ] || ADV="$CLEAN"
echo "prefix: $PREFIX"
echo "model:  $CLEAN"

# ---- pkg-config and compilation ---------------------------------------------------------
check "pkg-config finds adamant" pkg-config --exists adamant
CFLAGS_LIBS=$(pkg-config --cflags --libs adamant 2>/dev/null)
(cd "$WORK" && cp "$HERE/example.c" "$HERE/test_abi.c" .)
# exactly the documented command line
check "example.c compiles as documented" \
    sh -c "cd '$WORK' && $CC example.c $CFLAGS_LIBS -o example_plain"
check "example.c compiles warning-free (-Wall -Wextra -pedantic -Werror)" \
    sh -c "cd '$WORK' && $CC -std=c99 -Wall -Wextra -pedantic -Werror example.c $CFLAGS_LIBS -o example"
check "test_abi.c compiles warning-free" \
    sh -c "cd '$WORK' && $CC -std=c99 -Wall -Wextra -pedantic -Werror test_abi.c $CFLAGS_LIBS -lm -pthread -o test_abi"

# ---- the example --------------------------------------------------------------------------
top_lines() { grep -cE '^top[1-5]: class [0-9]+ logit -?[0-9]' "$1"; }
if [ -x "$WORK/example" ] && [ -f "$CLEAN" ]; then
    if "$WORK/example" "$CLEAN" > "$WORK/ex1.out" 2> "$WORK/ex1.err"; then
        n=$(top_lines "$WORK/ex1.out")
        check "example prints 5 result lines (synthetic image), got $n" [ "$n" -eq 5 ]
        check "example prints domains and backend" \
            sh -c "grep -q '^domains' '$WORK/ex1.out' && grep -q '^backend' '$WORK/ex1.out'"
    else
        fail "example exits 0 on $CLEAN: $(cat "$WORK/ex1.err")"
    fi
    # determinism: the synthetic image gives the same answer twice
    "$WORK/example" "$CLEAN" > "$WORK/ex1b.out" 2>&1
    check "example output is deterministic" cmp -s "$WORK/ex1.out" "$WORK/ex1b.out"
    # a raw float32 image (all zeros: a black image) given as a file, the domain named explicitly
    head -c $((3 * 32 * 32 * 4)) /dev/zero > "$WORK/zeros.f32"
    if "$WORK/example" "$CLEAN" default "$WORK/zeros.f32" > "$WORK/ex2.out" 2> "$WORK/ex2.err"; then
        n=$(top_lines "$WORK/ex2.out")
        check "example on a raw image prints 5 result lines, got $n" [ "$n" -eq 5 ]
    else
        fail "example on a raw float32 image: $(cat "$WORK/ex2.err")"
    fi
    # failures are reported with adm_last_error(), not crashes
    head -c 100 /dev/zero > "$WORK/short.f32"
    "$WORK/example" "$CLEAN" - "$WORK/short.f32" > /dev/null 2> "$WORK/ex3.err"
    check "example rejects a raw image of the wrong size" test $? -eq 1
    "$WORK/example" "$CLEAN" no_such_domain > /dev/null 2> "$WORK/ex4.err"
    rc=$?
    check "example reports an unknown domain (exit 1, ADM_ERR_DOMAIN message)" \
        sh -c "[ $rc -eq 1 ] && grep -q 'ADM_ERR_DOMAIN' '$WORK/ex4.err' && grep -q no_such_domain '$WORK/ex4.err'"
    "$WORK/example" "$WORK/missing.onnx" > /dev/null 2> "$WORK/ex5.err"
    rc=$?
    check "example reports a missing file (exit 1, ADM_ERR_IO)" \
        sh -c "[ $rc -eq 1 ] && grep -q 'ADM_ERR_IO' '$WORK/ex5.err'"
    EXT="$SHARED/models/external/cifar10_resnet_2b.onnx"
    if [ -f "$EXT" ]; then
        "$WORK/example" "$EXT" --mean 0.4914,0.4822,0.4465 --std 0.2471,0.2435,0.2616 > "$WORK/ex6.out" 2>&1
        n=$(top_lines "$WORK/ex6.out")
        check "example with --mean/--std on an external model prints 5 result lines, got $n" [ "$n" -eq 5 ]
        "$WORK/example" "$EXT" --mean 0.5 --std 0.5 > /dev/null 2> "$WORK/ex7.err"
        rc=$?
        check "example reports a mean/std of the wrong length" \
            sh -c "[ $rc -eq 1 ] && grep -q 'ADM_ERR_INVALID_ARGUMENT' '$WORK/ex7.err'"
    fi
else
    fail "example could not run (not built, or no model at $CLEAN)"
fi

# ---- test_abi ------------------------------------------------------------------------------
if [ -x "$WORK/test_abi" ]; then
    "$WORK/test_abi" "$CLEAN" "$ADV" > "$WORK/abi.out" 2>&1
    rc=$?
    grep -v '^[0-9]* passed' "$WORK/abi.out" | sed 's/^/  test_abi: /'
    check "test_abi: $(tail -n 1 "$WORK/abi.out")" [ $rc -eq 0 ]
else
    fail "test_abi was not built"
fi

# ---- benchmarks/ab/ab_builds.c (two builds in one process; only the public ABI) ----------------
check "benchmarks/ab/ab_builds.c compiles warning-free" \
    sh -c "$CC -std=gnu11 -Wall -Wextra -Werror '$REPO/benchmarks/ab/ab_builds.c' -ldl -o '$WORK/ab_builds'"
if [ -x "$WORK/ab_builds" ] && [ -f "$CLEAN" ]; then
    # The installed library against a copy of itself (dlopen loads a path once): both load, both
    # answer, and the predictions and input gradients are the same bits.
    cp "$PREFIX/lib/libadamant.so" "$WORK/libadamant_copy.so"
    for mode in p g; do
        "$WORK/ab_builds" "$PREFIX/lib/libadamant.so" "$WORK/libadamant_copy.so" "$CLEAN" 2 3 4 $mode \
            > "$WORK/ab_$mode.out" 2>&1
        rc=$?
        check "ab_builds ($mode): the library against its copy gives the same bits: $(cat "$WORK/ab_$mode.out")" \
            sh -c "[ $rc -eq 0 ] && grep -q 'same bits' '$WORK/ab_$mode.out'"
    done
    "$WORK/ab_builds" "$PREFIX/lib/libadamant.so" "$WORK/missing.so" "$CLEAN" > /dev/null 2> "$WORK/ab_err.out"
    rc=$?
    check "ab_builds names a library it cannot open (exit 2)" sh -c "[ $rc -eq 2 ] && grep -q 'missing.so' '$WORK/ab_err.out'"
fi

# ---- exported symbols ---------------------------------------------------------------------
LIB="$PREFIX/lib/libadamant.so"
HEADER="$REPO/include/adamant.h"
check "installed header equals include/adamant.h" cmp -s "$HEADER" "$PREFIX/include/adamant.h"
# functions declared in the header: preprocess (drops comments), keep identifiers followed by '('
$CC -E -P -x c "$HEADER" 2>/dev/null | grep -oE '\badm_[A-Za-z0-9_]+[[:space:]]*\(' \
    | sed -E 's/[[:space:]]*\($//' | sort -u > "$WORK/declared.txt"
nm -D --defined-only "$LIB" | awk '$2 ~ /^[TDB]$/ { print $3 }' | sed 's/@.*//' | sort -u > "$WORK/exported.txt"
ndecl=$(wc -l < "$WORK/declared.txt")
nexp=$(wc -l < "$WORK/exported.txt")
if [ "$ndecl" -gt 0 ] && cmp -s "$WORK/declared.txt" "$WORK/exported.txt"; then
    pass "exported global symbols == the $ndecl adm_* functions of adamant.h"
else
    fail "exported global symbols ($nexp) != functions declared in adamant.h ($ndecl):"
    diff "$WORK/declared.txt" "$WORK/exported.txt" | sed 's/^/  /' | head -40
fi
if ldd "$LIB" > "$WORK/ldd.txt" 2>&1; then
    if grep -qi 'libswift' "$WORK/ldd.txt"; then
        fail "libadamant.so links Swift runtime libraries: $(grep -i libswift "$WORK/ldd.txt" | tr '\n' ' ')"
    else
        pass "ldd shows no libswift*"
    fi
    if grep -q 'not found' "$WORK/ldd.txt"; then
        fail "libadamant.so has unresolved dependencies: $(grep 'not found' "$WORK/ldd.txt" | tr '\n' ' ')"
    else
        pass "every dependency of libadamant.so resolves"
    fi
else
    fail "ldd $LIB failed"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
