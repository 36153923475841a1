#!/usr/bin/env bash
# The main job: installs the dependencies, builds tapegrad and runs the demo,
# which trains y = sigmoid(W x + b) for a few steps and draws its graph.
# Outputs land in out/: neuron.dot and neuron.svg (open it in a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF >/dev/null
cmake --build build
mkdir -p out
./build/examples/sigmoid_neuron out
