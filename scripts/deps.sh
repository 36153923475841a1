#!/usr/bin/env bash
# Installs what tapegrad builds, tests, fuzzes, analyses and renders with (Debian packages).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake ninja-build pkg-config \
    uthash-dev check libopenblas-dev zlib1g-dev libjansson-dev \
    graphviz libgraphviz-dev libplplot-dev dataset-fashion-mnist \
    clang libclang-rt-14-dev cppcheck \
    libopenblas-openmp-dev libdnnl-dev libopenmpi-dev openmpi-bin >/dev/null
