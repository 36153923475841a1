#!/usr/bin/env bash
# Builds the libFuzzer harnesses and runs each for a while.
#
#   bash tests/fuzz/run.sh SECONDS [HARNESS ...]
#
# HARNESS is a name (graph), a file name (fuzz_graph.c) or a path; the
# default is every tests/fuzz/fuzz_*.c. Each runs for SECONDS seconds on a
# copy of its seed corpus tests/fuzz/corpus/<name>/ (the committed corpus is
# left alone), with the flags below plus any in tests/fuzz/fuzz_<name>.args
# (for example -max_len=65536 or -dict=...). The script prints each
# harness's executions and exits non-zero if one crashed, printing the path
# of the input that did it (copy it to tests/fuzz/crashes/<name>/ once
# minimised: run the harness with -minimize_crash=1 -runs=10000 on it).
#
# Environment:
#   TG_FUZZ_BUILD  build directory (default: <repo>/build-fuzz)
#   TG_FUZZ_MERGE  1: merge what the run found into the committed corpus
#   TG_FUZZ_KEEP_GOING  1: run in libFuzzer's fork mode and carry on past
#                  crashes, timeouts and OOMs, writing each one's input, to
#                  collect several distinct bugs in one run
#   CC             the compiler (default: clang); it needs libFuzzer
#                  (Debian: clang and libclang-rt-14-dev)
# Works from any current directory.
set -euo pipefail

usage() { echo "usage: $0 SECONDS [HARNESS ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
secs=$1
shift
[[ $secs =~ ^[0-9]+$ ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${TG_FUZZ_BUILD:-$root/build-fuzz}
cc=${CC:-clang}
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"

# The harnesses to run.
harnesses=()
if [ $# -eq 0 ]; then
    for f in "$here"/fuzz_*.c; do
        [ -e "$f" ] && harnesses+=("$(basename "$f" .c)")
    done
else
    for h in "$@"; do
        h=$(basename "$h" .c)
        h=fuzz_${h#fuzz_}
        [ -f "$here/$h.c" ] || { echo "run.sh: no harness $here/$h.c" >&2; exit 2; }
        harnesses+=("$h")
    done
fi
[ ${#harnesses[@]} -gt 0 ] || { echo "run.sh: no harnesses in $here" >&2; exit 2; }

# The library, instrumented for coverage and sanitized, in a build of its own:
# single-threaded and on the portable kernels (clang's OpenMP runtime is not
# installed, and a fuzzer runs one input at a time anyway).
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" "${generator[@]}" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link $san" \
        -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF \
        -DTG_OPENMP=OFF -DTG_PORTABLE_CONV=ON -DTG_MPI=OFF >/dev/null
fi
cmake --build "$build" --target tapegrad_static -j2 >/dev/null
lib=$(find "$build" -maxdepth 1 -name 'libtapegrad.a' | head -n 1)
[ -n "$lib" ] || { echo "run.sh: $build has no libtapegrad.a" >&2; exit 1; }
blas=$(pkg-config --libs openblas jansson zlib)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
status=0
for h in "${harnesses[@]}"; do
    name=${h#fuzz_}
    bin=$build/$h
    # shellcheck disable=SC2086 # $san and $blas are lists of flags
    "$cc" -O1 $san -fsanitize=fuzzer -I"$root/include" "$here/$h.c" "$lib" $blas -lm -lpthread \
        -o "$bin"

    work=$build/run/$name
    rm -rf "$work"
    mkdir -p "$work/corpus"
    if [ -d "$here/corpus/$name" ]; then
        cp -R "$here/corpus/$name/." "$work/corpus/"
    fi
    extra=()
    if [ -f "$here/$h.args" ]; then
        read -r -a extra <"$here/$h.args"
    fi
    if [ "${TG_FUZZ_KEEP_GOING:-0}" = 1 ]; then
        extra+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    log=$work/log.txt
    set +e
    (cd "$work" && "$bin" -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$work/" "${extra[@]}" "$work/corpus") >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    fi
    found=$(find "$work" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
        -o -name 'leak-*' \) | sort)
    if [ -n "$found" ] && [ $rc -eq 0 ]; then
        rc=1 # fork mode carried on past a crash
    fi
    echo "$name: ${execs:-0} executions in $secs s (log: $log)"
    if [ $rc -ne 0 ]; then
        status=1
        echo "$name: FAILED (exit $rc)"
        grep -E 'ERROR: |runtime error: |invariant violated|^SUMMARY: ' "$log" | head -n 5 || true
        [ -z "$found" ] || printf '%s\n' "$found" | sed "s/^/$name: input: /"
    fi
    if [ "${TG_FUZZ_MERGE:-0}" = 1 ] && [ $rc -eq 0 ]; then
        mkdir -p "$here/corpus/$name"
        "$bin" -merge=1 -max_len=4096 "${extra[@]}" "$here/corpus/$name" "$work/corpus" \
            >>"$log" 2>&1
        echo "$name: merged into $here/corpus/$name"
    fi
done
exit $status
