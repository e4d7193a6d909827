#!/usr/bin/env bash
# The C ABI test (bindings/c/test_abi.c) and the C example against an ASan+UBSan-instrumented
# libadamant.so (issue #8). The library is built into its own scratch path (.build-asan, debug, the
# same flags as `make test-asan`, so that build is reused): ASan for the Swift code (swiftc has no
# -sanitize=undefined), ASan + UBSan for the C and C++ targets. The test programs are compiled with
# -fsanitize=address,undefined, so the ASan runtime is linked into the executable and the
# library's instrumentation reports through it. Any report fails the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
scratch=${SAN_SCRATCH:-.build-asan}
swift=${SWIFT:-swift}
# The toolchain's clang: its sanitizer runtimes are the ones swiftc instrumented the library for.
tooldir=$(dirname "$(command -v "$swift")")
cc=${SAN_CC:-$([ -x "$tooldir/clang" ] && echo "$tooldir/clang" || echo clang)}
flags=(--scratch-path "$scratch" --sanitize=address
       -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined
       -Xcxx -fsanitize=undefined -Xcxx -fno-sanitize-recover=undefined)
"$swift" build "${flags[@]}" --product adamant
lib="$("$swift" build "${flags[@]}" --show-bin-path)"
work="$scratch/abi"
mkdir -p "$work"
san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
"$cc" -std=c99 -Wall -Wextra -Werror "${san[@]}" -Iinclude bindings/c/test_abi.c -L"$lib" -ladamant \
    -Wl,-rpath,"$lib" -lm -pthread -o "$work/test_abi"
"$cc" -std=c99 -Wall -Wextra -Werror "${san[@]}" -Iinclude bindings/c/example.c -L"$lib" -ladamant \
    -Wl,-rpath,"$lib" -o "$work/example"
# The Swift runtime is linked dynamically here (LD_LIBRARY_PATH finds it next to the toolchain).
rt="$(dirname "$(dirname "$(command -v "$swift")")")/lib/swift/linux"
export LD_LIBRARY_PATH="$rt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# allocator_may_return_null: an allocation the system refuses must be an error status, as without ASan.
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions="$root/Tests/Sanitize/lsan.supp":print_suppressions=0
model=examples/models/mbn_resnet8
"$work/example" "$model.clean.onnx" > "$work/example.out"
grep -q '^top1: ' "$work/example.out"
echo "example: ok"
"$work/test_abi" "$model.clean.onnx" "$model.adv.onnx" > "$work/test_abi.out" 2>&1 || { cat "$work/test_abi.out"; exit 1; }
tail -n 1 "$work/test_abi.out"
