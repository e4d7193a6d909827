"""Robust-ML architectures beyond plain ResNets, exported from PyTorch to ONNX here: adamant's
logits against ONNX Runtime's on the same file, adamant's input gradients against PyTorch
autograd on the same model (issue #11, part 2). The models are in robust_models.py."""
import os

import numpy as np
import pytest

import adamant

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import robust_models as rm  # noqa: E402


def export(model, path, size, batch=2):
    model.eval()
    x = torch.rand(batch, 3, size, size)
    torch.onnx.export(model, x, str(path), opset_version=17, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, do_constant_folding=True, dynamo=False)
    return str(path)


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def torch_grad(model, x, y):
    """Per-sample d CE / d x (the sum of per-sample losses)."""
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.from_numpy(y), reduction="sum")
    (g,) = torch.autograd.grad(loss, xt)
    return g.numpy()


def check(make, tmp_path, name, size, batch=3, seed=0, logit_tol=1e-4, grad_tol=1e-3):
    """Builds the model with `make()` after seeding torch (weights fixed whatever ran before: an
    input gradient is not continuous at a ReLU's kink, and a pre-activation within float32
    rounding of 0 may fall on either side in two correct implementations, so the comparison
    needs fixed weights and inputs to be reproducible)."""
    torch.manual_seed(seed)
    model = make()
    rm.randomize_bn(model, seed)
    model.eval()
    path = export(model, tmp_path / (name + ".onnx"), size)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 3, size, size), dtype=np.float32)
    m = adamant.load(path)
    got = m.predict(x)
    ref = ort_logits(path, x)
    scale = max(1.0, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(got - ref))) / scale
    assert err <= logit_tol, "%s: logits differ from ONNX Runtime by %.3g (relative to max |logit| %.3g)" % (name, err, scale)
    y = rng.integers(0, got.shape[1], size=batch).astype(np.int64)
    _, g = m.gradient(x, y.astype(np.int32), loss="ce")
    gref = torch_grad(model, x, y)
    gerr = float(np.max(np.abs(g - gref)) / np.max(np.abs(gref)))
    assert gerr <= grad_tol, "%s: input gradient differs from PyTorch by %.3g (relative)" % (name, gerr)
    # A sample's logits do not depend on its batch-mates.
    np.testing.assert_array_equal(m.predict(x[1:2]), got[1:2])
    print("%s: logits vs ORT %.2e, input gradient vs PyTorch %.2e" % (name, err, gerr))  # (pytest -s)
    return err, gerr


@pytest.mark.parametrize("embed,softmax,size", [
    (True, True, 16),     # ResNet-152-Denoise: embedded, softmax over H*W
    (True, False, 16),    # dot-product version, C <= H*W: 'nihw,njhw->nij', 'nij,nihw->njhw'
    (False, False, 16),   # DenoiseAll: no embedding, dot product
    (False, True, 8),     # no embedding, softmax
])
def test_nonlocal_denoising_block(tmp_path, embed, softmax, size):
    name = "denoise_%s_%s_%d" % ("embed" if embed else "plain", "softmax" if softmax else "dot", size)
    check(lambda: rm.DenoiseNet(size=size, c=32, embed=embed, softmax=softmax), tmp_path, name, size)


def test_nonlocal_block_graph_uses_einsum_and_softmax(tmp_path):
    import onnx
    path = export(rm.DenoiseNet(size=8, embed=True, softmax=True), tmp_path / "d.onnx", 8)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Einsum", "Softmax", "Reshape", "Div"} <= ops, ops


def test_resnext_bottleneck_group32(tmp_path):
    check(lambda: rm.ResNeXtNet(), tmp_path, "resnext", 16, batch=2)


def test_resnext_with_denoise_all_block(tmp_path):
    check(lambda: rm.ResNeXtNet(denoise=True), tmp_path, "resnext_denoise", 16, batch=2)


def test_wide_resnet_16_4(tmp_path):
    check(lambda: rm.WideResNet(depth=16, k=4), tmp_path, "wrn16_4", 32, batch=3)


def test_wide_resnet_28_10(tmp_path):
    """The real WRN-28-10 topology (36.5 M parameters), as most published robust CIFAR-10 models."""
    assert sum(p.numel() for p in rm.WideResNet(depth=28, k=10).parameters()) > 36_000_000
    check(lambda: rm.WideResNet(depth=28, k=10), tmp_path, "wrn28_10", 32, batch=2)


def test_pad_avgpool_concat_dropout(tmp_path):
    check(lambda: rm.PadPoolConcatNet(), tmp_path, "padpool", 15, batch=3)


def test_tokens_reshape_transpose_matmul_softmax(tmp_path):
    check(lambda: rm.TokenNet(), tmp_path, "tokens", 16, batch=3)


def test_sizes_read_from_tensors_fold_at_load(tmp_path):
    import onnx
    path = export(rm.ShapeViewNet(), tmp_path / "view.onnx", 16)
    assert "Shape" in {n.op_type for n in onnx.load(path).graph.node}
    check(lambda: rm.ShapeViewNet(), tmp_path, "shape_view", 16, batch=3)
    m = adamant.load(path)
    x = np.random.default_rng(5).random((5, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x), ort_logits(path, x), rtol=1e-4, atol=1e-5)


def test_unsupported_einsum_is_a_clear_error(tmp_path):
    class Diag(torch.nn.Module):
        def forward(self, x):
            return torch.einsum("ncii->nc", x)
    path = export(Diag(), tmp_path / "diag.onnx", 4)
    with pytest.raises(adamant.UnsupportedError) as e:
        adamant.load(path)
    assert "Einsum" in str(e.value) and "repeated" in str(e.value)


def test_targeted_pgd_on_a_denoising_model(tmp_path):
    """Targeted PGD (random start, eps 16/255, the reference threat model's shape) runs through the
    non-local blocks and reaches its targets. A random-weight network barely separates its inputs,
    so the targets are each image's runner-up class (reachable), not random ones."""
    torch.manual_seed(3)
    model = rm.randomize_bn(rm.DenoiseNet(size=16, c=32, embed=True, softmax=True), 3).eval()
    path = export(model, tmp_path / "denoise_pgd.onnx", 16)
    m = adamant.load(path)
    x = np.random.default_rng(3).random((8, 3, 16, 16), dtype=np.float32)
    z = m.predict(x)
    y = z.argmax(1).astype(np.int32)
    target = np.argsort(z, axis=1)[:, -2].astype(np.int32)
    x_adv, info = m.pgd(x, y, eps=16 / 255, alpha=2 / 255, steps=20, random_start=True, target=target, seed=1,
                        return_details=True)
    assert np.max(np.abs(x_adv - x)) <= 16 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    hit = m.predict(x_adv).argmax(1) == target
    assert hit.mean() >= 0.75, hit
    np.testing.assert_array_equal(hit, info["success"])
