#!/usr/bin/env bash
# Installs the dependencies, then checks everything, the slow parts first
# and the sanitizer run last (its ctest summary closes the output):
#   1. a normal build with warnings as errors, every test suite;
#   2. the fallbacks: no OpenMP, the portable convolution, no MPI; every test suite;
#   3. install, and build a separate project against it (find_package and pkg-config);
#   4. static analysis (cppcheck, gcc -fanalyzer): no findings;
#   5. each libFuzzer harness for 60 s under ASan+UBSan;
#   6. a build under AddressSanitizer + UndefinedBehaviorSanitizer, every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

build() { # build DIR CMAKE-FLAGS...
    local dir=$1
    shift
    cmake -S . -B "$dir" -G Ninja -DTG_WERROR=ON "$@" >/dev/null
    cmake --build "$dir"
}

echo "== release build"
build build-test-release -DCMAKE_BUILD_TYPE=RelWithDebInfo
ctest --test-dir build-test-release --output-on-failure

echo "== fallback build: one thread, the portable convolution, without MPI"
build build-test-fallback -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTG_OPENMP=OFF \
    -DTG_PORTABLE_CONV=ON -DTG_MPI=OFF
ctest --test-dir build-test-fallback --output-on-failure -LE fuzz

echo "== install, then build a separate project against it (find_package and pkg-config)"
prefix=$(mktemp -d)
cmake --install build-test-release --prefix "$prefix" >/dev/null
cmake -S tests/consumer -B "$prefix/consumer-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
LD_LIBRARY_PATH="$prefix/lib" "$prefix/consumer-build/consumer"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc tests/consumer/consumer.c $(pkg-config --cflags --libs tapegrad) -o "$prefix/consumer-pc"
LD_LIBRARY_PATH="$prefix/lib" "$prefix/consumer-pc"
unset PKG_CONFIG_PATH
rm -rf "$prefix"

echo "== static analysis"
bash scripts/analyze.sh

echo "== fuzzing, 60 s per harness"
bash tests/fuzz/run.sh 60

echo "== sanitizer build (ASan + UBSan)"
build build-test-sanitize -DTG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
ctest --test-dir build-test-sanitize --output-on-failure
