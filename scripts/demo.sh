#!/usr/bin/env bash
# The main job: installs the dependencies, builds tapegrad, checks every op's
# gradient, and trains two small models, drawing their graphs.
# Outputs land in out/ (open the .svg files in a browser):
#   gradcheck.txt          one row per op: float64 vjp against finite differences
#   seed1d.svg, .dot       the course notes' 1-D network, trained on synthetic data:
#                          forward graph (seed1d.svg), backward (seed1d_backward.svg)
#                          and collapsed to its scopes (seed1d_collapsed.svg), all
#                          rendered by the library (tg_dot_render)
#   neuron.svg, .dot       y = sigmoid(W x + b)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF >/dev/null
cmake --build build
mkdir -p out
echo "== tapegrad gradcheck (out/gradcheck.txt)"
./build/tapegrad gradcheck | tee out/gradcheck.txt | tail -n 1
echo "== the notes' 1-D network"
./build/examples/seed1d out
echo "== a sigmoid neuron"
./build/examples/sigmoid_neuron out
