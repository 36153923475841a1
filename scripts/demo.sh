#!/usr/bin/env bash
# The main job: installs the dependencies, builds tapegrad, checks every op's
# gradient, trains a convolutional network with batch norm on Fashion-MNIST
# and draws its graph and its training curves; then the small examples.
# Outputs land in out/ (open the .svg files in a browser):
#   gradcheck.txt            one row per op: float64 vjp against finite differences
#   cnnbn_summary.txt        models/cnnbn.tgm layer by layer: shapes, parameters, memory
#   cnnbn_train.txt          per epoch: train loss, test loss, test accuracy
#   cnnbn_metrics.csv        the same as CSV
#   cnnbn_curves.svg         loss and accuracy curves (PLplot)
#   cnnbn.safetensors        the trained weights and optimiser state (loads into PyTorch)
#   cnnbn_eval.txt           test accuracy and confusion matrix of the checkpoint
#   cnnbn_graph.svg          one training step's graph, one cluster per layer, forward
#   cnnbn_backward.svg       the same step's backward pass (vjps, gradients, saved tensors)
#   cnnbn_layers.svg         the graph collapsed to one box per layer
#   seed1d*.svg              the course notes' 1-D network on synthetic data, three views
#   neuron.svg               y = sigmoid(W x + b)
# EPOCHS (default 2) sets how long the Fashion-MNIST run trains.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF >/dev/null
cmake --build build
mkdir -p out
tg=./build/tapegrad
echo "== tapegrad gradcheck (out/gradcheck.txt)"
$tg gradcheck | tee out/gradcheck.txt | tail -n 1
echo "== models/cnnbn.tgm (out/cnnbn_summary.txt)"
$tg summary models/cnnbn.tgm | tee out/cnnbn_summary.txt | tail -n 3
echo "== training it on Fashion-MNIST, Adam 1e-3, batch 64, seed 0 (out/cnnbn_*)"
$tg train models/cnnbn.tgm --epochs "${EPOCHS:-2}" --batch 64 --optimizer adam --lr 1e-3 \
    --seed 0 --save out/cnnbn.safetensors --log out/cnnbn_metrics.csv \
    --plot out/cnnbn_curves.svg | tee out/cnnbn_train.txt
$tg eval models/cnnbn.tgm --load out/cnnbn.safetensors | tee out/cnnbn_eval.txt | head -n 1
echo "== its graph (out/cnnbn_graph.svg, cnnbn_backward.svg, cnnbn_layers.svg)"
$tg dot models/cnnbn.tgm --train -o out/cnnbn_graph.svg
$tg dot models/cnnbn.tgm --train --view backward -o out/cnnbn_backward.svg
$tg dot models/cnnbn.tgm --train --collapse -o out/cnnbn_layers.svg
echo "== the notes' 1-D network"
./build/examples/seed1d out
echo "== a sigmoid neuron"
./build/examples/sigmoid_neuron out
