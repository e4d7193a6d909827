#!/usr/bin/env python3
"""Writes the small ONNX models Tests/AdamantTests/ModelOpTests.swift loads (committed beside this
script; rerun to regenerate): a network with two non-local denoising blocks (Einsum, Reshape, Div,
Softmax) and an attention-like one (Reshape, Transpose, MatMul of two activations, Softmax, Concat,
Dropout), from bindings/python/tests/robust_models.py, random weights, opset 17, dynamic batch.
Their agreement with ONNX Runtime and PyTorch is tested in bindings/python/tests/test_model_ops.py;
the Swift tests check the runtime properties (pooled buffers, memory estimate, batch independence)."""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "bindings", "python", "tests"))
import robust_models as rm  # noqa: E402


def export(model, name, size):
    torch.manual_seed(0)
    rm.randomize_bn(model, 0).eval()
    torch.onnx.export(model, torch.rand(1, 3, size, size), os.path.join(HERE, name), opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      dynamo=False)


if __name__ == "__main__":
    torch.manual_seed(0)
    export(rm.DenoiseNet(size=8, c=16, embed=True, softmax=True), "denoise_small.onnx", 8)
    torch.manual_seed(1)
    export(rm.TokenNet(c=8, d=6, size=4), "tokens_small.onnx", 8)
