#!/usr/bin/env bash
# Installs the dependencies, then builds and runs every test suite twice:
# a normal build with warnings as errors, and one under AddressSanitizer +
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
for kind in release sanitize; do
    dir=build-test-$kind
    flags=(-DTG_WERROR=ON)
    if [ "$kind" = sanitize ]; then
        flags+=(-DTG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
    else
        flags+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    fi
    echo "== $kind build"
    cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
    cmake --build "$dir"
    ctest --test-dir "$dir" --output-on-failure
done

echo "== install, then build a separate project against it (find_package and pkg-config)"
prefix=$(mktemp -d)
cmake --install build-test-release --prefix "$prefix" >/dev/null
cmake -S tests/consumer -B "$prefix/consumer-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
LD_LIBRARY_PATH="$prefix/lib" "$prefix/consumer-build/consumer"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc tests/consumer/consumer.c $(pkg-config --cflags --libs tapegrad) -o "$prefix/consumer-pc"
LD_LIBRARY_PATH="$prefix/lib" "$prefix/consumer-pc"
rm -rf "$prefix"
