#!/usr/bin/env bash
# Coverage-guided fuzzing of model loading + one predict + one gradient (issue #8).
#
#   Tests/Fuzz/run.sh [SECONDS]     build the libFuzzer target, replay every regression case, fuzz SECONDS (default 60)
#   Tests/Fuzz/run.sh 0             build and replay only
#
# The target (Tests/Fuzz/Harness/Fuzz.swift) is built with -sanitize=fuzzer,address into its own
# scratch path (.build-fuzz; ADAMANT_FUZZ=1 adds it to Package.swift), so Adamant, AdamantC and the
# C/C++ targets are instrumented for coverage and ASan. Seeds: every .onnx of at most 5 MB in the
# repository and ../shared, copied at run time; dictionary: Tests/Fuzz/onnx.dict.
# Environment: FUZZ_NICE (niceness, default 19), FUZZ_ARGS (extra libFuzzer options, e.g.
# "-fork=1 -ignore_crashes=1" to keep going after a crash), FUZZ_SCRATCH (default .build-fuzz),
# FUZZ_WORK (corpus, artifacts and the copy of the binary that runs; default $FUZZ_SCRATCH/work).
# A crash, sanitizer report, leak or timeout fails the run; its input is written to
# .build-fuzz/work/artifacts/ — fix it and keep it in Tests/Fuzz/regressions/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-60}
scratch=${FUZZ_SCRATCH:-.build-fuzz}
nice=${FUZZ_NICE:-19}
flags=(-c release --scratch-path "$scratch" --product adamant-fuzz
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
       -Xcc -fsanitize=fuzzer-no-link,address -Xcxx -fsanitize=fuzzer-no-link,address)
ADAMANT_FUZZ=1 nice -n "$nice" swift build "${flags[@]}"
work=${FUZZ_WORK:-$scratch/work}
rm -rf "$work/seeds"
mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
# Run a copy: a rebuild while a long run goes on (fork mode re-executes the binary) changes nothing.
bin="$work/adamant-fuzz"
cp "$(ADAMANT_FUZZ=1 swift build "${flags[@]}" --show-bin-path)/adamant-fuzz" "$bin.tmp" && mv "$bin.tmp" "$bin"
# Seeds: copied (not linked) so the fuzzer never touches the originals; named after their path.
n=0
for dir in examples Tests ../shared/regressions/models ../shared/models; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' f; do
        cp "$f" "$work/seeds/$(echo "${f#./}" | tr '/' '_' | sed 's/^\.\._//')"
        n=$((n + 1))
    done < <(find "$dir" -name '*.onnx' -size -5M -type f -print0)
done
echo "fuzz: $n seed models"

common=(-timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=2048)
# Replay: the kept crashers and the shared reproducers must each run to completion.
replay=(Tests/Fuzz/regressions/*)
[ -d ../shared/regressions/models ] && replay+=(../shared/regressions/models/*.onnx)
replay=($(for f in "${replay[@]}"; do [ -f "$f" ] && [ "${f##*/}" != README.md ] && echo "$f"; done))
[ ${#replay[@]} -gt 0 ] || { echo "fuzz: no regression cases found" >&2; exit 1; }
echo "fuzz: replaying ${#replay[@]} regression cases"
ASAN_OPTIONS=detect_leaks=1 "$bin" "${common[@]}" "${replay[@]}" 2>&1 | tail -n 3

[ "$secs" -gt 0 ] || exit 0
echo "fuzz: $secs s at nice $nice"
# shellcheck disable=SC2086
ASAN_OPTIONS=detect_leaks=1 nice -n "$nice" "$bin" "${common[@]}" -dict=Tests/Fuzz/onnx.dict \
    -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/artifacts/" ${FUZZ_ARGS:-} \
    "$work/corpus" "$work/seeds"
