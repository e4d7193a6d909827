#!/usr/bin/env bash
# The README's demo: everything runs on data shipped in examples/ (no ../shared needed).
# Merges the two BN-domain exports of a Mixture-BN ResNet-8 into one file, inspects it,
# predicts, evaluates clean and PGD-10 accuracy per BN domain, and writes adversarial PNGs.
set -euo pipefail
cd "$(dirname "$0")/.."
A=dist/bin/adamant
OUT=out/demo
mkdir -p "$OUT"
set -x
$A merge --domain clean=examples/models/mbn_resnet8.clean.onnx --domain adv=examples/models/mbn_resnet8.adv.onnx -o "$OUT/mbn_resnet8.onnx"
$A info "$OUT/mbn_resnet8.onnx"
$A predict "$OUT/mbn_resnet8.onnx" examples/data/cifar10-demo.tar.gz --limit 300 --top-k 3
$A eval "$OUT/mbn_resnet8.onnx" --data examples/data/cifar10-demo.tar.gz --limit 300 --eps 8/255 --alpha 2/255 --steps 10 --domains clean,adv --json "$OUT/eval.json"
$A attack "$OUT/mbn_resnet8.onnx" examples/data/cifar10-demo.tar.gz --limit 10 --eps 8/255 --steps 10 --targeted random --attack-domain adv --eval-domain adv -o "$OUT/attack"
