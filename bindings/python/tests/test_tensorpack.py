"""`adamant import tensorpack` / adamant.import_tensorpack / adm_import_tensorpack: checkpoints of
facebookresearch/ImageNet-Adversarial-Training, generated here with the reference code's variable
names and shapes (random weights, BN statistics calibrated on the test images), compared with an
independent PyTorch float64 implementation of the architecture (tensorpack_ref.py).

Every architecture runs through adamant (logits and input gradients) and ONNX Runtime on the
written file; the denoising and ResNeXt ones use adamant's MatMul/Transpose/Reshape/Softmax and
grouped-convolution ops with their gradients.
"""
import os
import subprocess

import numpy as np
import pytest

from conftest import CLI, ort_session
import tensorpack_ref as R

torch = pytest.importorskip("torch")


def build(tmp_path, arch, blocks, size, classes=10, seed=1, batch=2, compressed=True, name="ck"):
    """(checkpoint path, variables, test pixels, labels): BN statistics calibrated on the pixels."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
    y = rng.randint(0, classes, batch)
    v = R.make_checkpoint(arch, blocks, classes=classes, seed=seed)
    v = R.Reference(arch, v, blocks).calibrate(x)
    path = str(tmp_path / (name + ".npz"))
    (np.savez_compressed if compressed else np.savez)(path, **v)
    return path, v, x, y


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_against_reference(adamant_module, tmp_path, arch, blocks, size, compressed=True):
    ckpt, v, x, y = build(tmp_path, arch, blocks, size, compressed=compressed)
    out = str(tmp_path / "m.onnx")
    adamant_module.import_tensorpack(ckpt, out, arch=arch, blocks=blocks, input_size=size)
    ref = R.Reference(arch, v, blocks)
    z_ref, g_ref = ref.logits_and_grad(x, y)
    m = adamant_module.load(out)
    assert m.input_shape == (3, size, size) and m.num_classes == 10
    assert m.channel_order == "bgr" and m.pixel_range == (0.0, 255.0)
    z = m.predict(x)
    err = float(np.abs(z - z_ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(z_ref).max())), err
    # Reference cross-entropy gradient: adamant's per-sample CE gradient in pixel space. The
    # float32 noise floor is a few ReLUs whose pre-activation changes sign under rounding: on deep or
    # large networks the reference computed in float32 is itself about 1e-3 away from float64 (224 x
    # 224, full ResNet-152), so the bound is 1e-3 or 3 x that floor, whichever is larger.
    _, g = m.gradient(x, y, loss="ce")
    ref32 = R.Reference(arch, v, blocks)
    ref32.v = {k: t.float() for k, t in ref32.v.items()}
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(ref32.logits(xt), torch.from_numpy(y.astype(np.int64)),
                                      reduction="sum").backward()
    floor = rel(xt.grad.numpy(), g_ref)
    tol = max(1e-3, 3 * floor)
    print("%s %s %d: logits max err %.2e (max |logit| %.2f), gradient rel err %.2e (torch float32: %.2e)"
          % (arch, blocks, size, err, float(np.abs(z_ref).max()), rel(g, g_ref), floor))
    assert rel(g, g_ref) <= tol, (rel(g, g_ref), tol)
    # ONNX Runtime on the same file, with the stored normalization applied by hand.
    zo = ort_session(out).run(None, {"input": (x - 127.5) / 127.5})[0]
    assert float(np.abs(zo - z_ref).max()) <= 1e-4 * max(1.0, float(np.abs(z_ref).max()))
    return m, err


@pytest.mark.parametrize("arch,blocks,size", [
    ("resnet50", [1, 1, 1, 1], 64),      # 224's padding parities: 64 -> 32 -> 16 -> 8 -> 4 -> 2
    ("resnet101", [1, 2, 1, 1], 57),     # odd sizes: symmetric 'SAME' pads, ceil'ed outputs
    ("resnet152", [2, 1, 1, 1], 224),    # the reference input size
])
def test_plain_resnet_matches_reference(adamant_module, tmp_path, arch, blocks, size):
    check_against_reference(adamant_module, tmp_path, arch, blocks, size)


def test_full_resnet152_layout(adamant_module, tmp_path):
    """The full ResNet-152 variable set (3, 8, 36, 3 blocks; 60 M weights) at 64 x 64, uncompressed .npz."""
    names = R.variable_shapes("resnet152", classes=10)
    assert sum(n.endswith("/W") for n in names) == 1 + 3 * 50 + 4 + 1  # stem, blocks, shortcuts, linear
    check_against_reference(adamant_module, tmp_path, "resnet152", None, 64, compressed=False)


@pytest.mark.parametrize("arch,blocks,size", [
    ("resnet152-denoise", [1, 1, 1, 1], 64),
    ("resnet152-denoise", [1, 1, 1, 1], 57),
    # group0: C = 256 = HW (the C x C product), later groups C > HW (the HW x HW product)
    ("resnext101-denoiseall", [1, 1, 2, 1], 64),
])
def test_denoise_archs_match_reference_on_onnxruntime(adamant_module, tmp_path, arch, blocks, size):
    import onnx
    ckpt, v, x, y = build(tmp_path, arch, blocks, size)
    out = str(tmp_path / "m.onnx")
    adamant_module.import_tensorpack(ckpt, out, arch=arch, blocks=blocks, input_size=size)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "Transpose", "Reshape"} <= ops
    assert ("Softmax" in ops) == (arch == "resnet152-denoise")
    if arch.startswith("resnext"):
        groups = [a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert 32 in groups
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["adamant.channel_order"] == "bgr" and meta["adamant.pixel_range"] == "0.0,255.0"
    assert meta["adamant.mean"] == "127.5,127.5,127.5" and meta["adamant.std"] == "127.5,127.5,127.5"
    z_ref = R.Reference(arch, v, blocks).logits(torch.from_numpy(x.astype(np.float64))).numpy()
    zo = ort_session(out).run(None, {"input": (x - 127.5) / 127.5})[0]
    err = float(np.abs(zo - z_ref).max())
    print("%s %s %d: ONNX Runtime logits max err %.2e (max |logit| %.2f)"
          % (arch, blocks, size, err, float(np.abs(z_ref).max())))
    assert err <= 1e-4 * max(1.0, float(np.abs(z_ref).max())), err


@pytest.mark.parametrize("arch,blocks,size", [
    ("resnet152-denoise", [1, 1, 1, 1], 64),
    ("resnet152-denoise", [1, 1, 1, 1], 57),
    ("resnext101-denoiseall", [1, 1, 2, 1], 64),
])
def test_denoise_archs_run_in_adamant(adamant_module, tmp_path, arch, blocks, size):
    """The denoising and ResNeXt architectures through adamant itself: logits within 1e-4 of the
    float64 reference and input gradients within 1e-3 (relative), as for the plain ResNets."""
    check_against_reference(adamant_module, tmp_path, arch, blocks, size)


@pytest.mark.parametrize("arch,nonlocal_blocks", [("resnet152-denoise", 4), ("resnext101-denoiseall", 33)])
def test_full_denoise_layouts_import(adamant_module, tmp_path, arch, nonlocal_blocks):
    """The full variable sets of the two released denoising models import (every name and shape
    used, none missing) into a valid graph with one non-local block per group / per block, which
    ONNX Runtime runs. (Random full-depth dot-product non-local networks are chaotic in float32, so
    the comparison with the reference is done on the depth-reduced variants above.)"""
    import onnx
    v = R.make_checkpoint(arch, classes=10)
    p = str(tmp_path / "full.npz")
    np.savez(p, **v)
    out = str(tmp_path / "m.onnx")
    adamant_module.import_tensorpack(p, out, arch=arch, input_size=64)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    inits = {i.name for i in model.graph.initializer}
    assert set(v) <= inits
    bns = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert bns == sum(k.endswith("/bn/gamma") for k in v)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(k.endswith("/W") for k in v) - 1
    denoise_convs = [n for n in convs if n.name.endswith("_denoise/conv") or n.name.endswith("non_local/conv")]
    assert len(denoise_convs) == nonlocal_blocks
    x = np.random.RandomState(0).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    z = ort_session(out).run(None, {"input": (x - 127.5) / 127.5})[0]
    assert z.shape == (1, 10)


def test_tensorflow_suffixes_and_bookkeeping(adamant_module, tmp_path):
    """Names with TensorFlow's ':0' suffix load; variables outside the network are ignored."""
    ckpt, v, x, y = build(tmp_path, "resnet50", [1, 1, 1, 1], 64)
    w = {k + ":0": a for k, a in v.items()}
    w["global_step:0"] = np.array(1000, np.int64)
    w["learning_rate"] = np.array(0.1, np.float32)
    w["xentropy-loss/EMA"] = np.array(2.0, np.float32)
    w["group0/block0/conv1/W/Momentum"] = np.zeros_like(v["group0/block0/conv1/W"])
    p = str(tmp_path / "tf.npz")
    np.savez_compressed(p, **w)
    out = str(tmp_path / "m.onnx")
    adamant_module.import_tensorpack(p, out, arch="resnet50", blocks=[1, 1, 1, 1], input_size=64)
    z_ref = R.Reference("resnet50", v, [1, 1, 1, 1]).logits(torch.from_numpy(x.astype(np.float64))).numpy()
    m = adamant_module.load(out)
    assert np.abs(m.predict(x) - z_ref).max() <= 1e-4 * np.abs(z_ref).max()
    # Model.save keeps the preprocessing, channel order included; a bad order is a parse error.
    saved = str(tmp_path / "saved.onnx")
    m.save(saved)
    m2 = adamant_module.load(saved)
    assert m2.channel_order == "bgr" and m2.pixel_range == (0.0, 255.0)
    assert np.array_equal(m2.predict(x), m.predict(x))
    import onnx
    model = onnx.load(out)
    for p in model.metadata_props:
        if p.key == "adamant.channel_order":
            p.value = "gbr"
    bad = str(tmp_path / "bad_order.onnx")
    onnx.save(model, bad)
    with pytest.raises(adamant_module.ParseError, match="adamant.channel_order='gbr' must be rgb or bgr"):
        adamant_module.load(bad)


def _variants(v):
    missing = dict(v)
    del missing["group2/block0/conv2/bn/variance/EMA"]
    extra = dict(v)
    extra["group0/block0/conv9/W"] = np.zeros((1, 1, 4, 4), np.float32)
    misshaped = dict(v)
    misshaped["group1/block0/conv2/W"] = np.transpose(v["group1/block0/conv2/W"], (3, 2, 0, 1)).copy()
    return [("missing", missing, "group2/block0/conv2/bn/variance/EMA"),
            ("extra", extra, "group0/block0/conv9/W"),
            ("misshaped", misshaped, "group1/block0/conv2/W is [128, 128, 3, 3], expected [3, 3, 128, 128]")]


def test_bad_checkpoints_name_the_variable(adamant_module, tmp_path):
    v = R.make_checkpoint("resnet50", [1, 1, 1, 1], classes=10)
    for kind, w, needle in _variants(v):
        p = str(tmp_path / (kind + ".npz"))
        np.savez(p, **w)
        with pytest.raises(adamant_module.ShapeError) as e:
            adamant_module.import_tensorpack(p, str(tmp_path / "m.onnx"), arch="resnet50", blocks=[1, 1, 1, 1],
                                             input_size=64)
        assert needle in str(e.value), str(e.value)
        assert kind in str(e.value)
    # A ResNet-50 checkpoint is not a ResNet-152-Denoise: the denoising variables are missing.
    p = str(tmp_path / "r50.npz")
    np.savez(p, **v)
    with pytest.raises(adamant_module.ShapeError, match="group0_denoise/embedding_theta/W"):
        adamant_module.import_tensorpack(p, str(tmp_path / "m.onnx"), arch="resnet152-denoise", blocks=[1, 1, 1, 1])
    # ... and too deep a variant misses blocks.
    with pytest.raises(adamant_module.ShapeError, match="group0/block1/conv1/W"):
        adamant_module.import_tensorpack(p, str(tmp_path / "m.onnx"), arch="resnet50")
    assert not os.path.exists(str(tmp_path / "m.onnx"))


def test_bad_files_and_arguments(adamant_module, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file" * 10)
    out = str(tmp_path / "m.onnx")
    with pytest.raises(adamant_module.ParseError, match="not a .npz file"):
        adamant_module.import_tensorpack(str(junk), out, arch="resnet50")
    with pytest.raises(adamant_module.AdamantIOError, match="cannot open"):
        adamant_module.import_tensorpack(str(tmp_path / "absent.npz"), out, arch="resnet50")
    ckpt, _, _, _ = build(tmp_path, "resnet50", [1, 1, 1, 1], 64)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(ckpt, "rb").read()[: os.path.getsize(ckpt) // 2])
    with pytest.raises(adamant_module.ParseError):
        adamant_module.import_tensorpack(str(truncated), out, arch="resnet50", blocks=[1, 1, 1, 1])
    with pytest.raises(adamant_module.InvalidArgument, match="unknown arch 'resnet18'"):
        adamant_module.import_tensorpack(ckpt, out, arch="resnet18")
    with pytest.raises(adamant_module.InvalidArgument, match="n_blocks must be 4"):
        adamant_module.import_tensorpack(ckpt, out, arch="resnet50", blocks=[1, 1, 1])
    with pytest.raises(adamant_module.InvalidArgument, match="blocks must be 4 counts"):
        adamant_module.import_tensorpack(ckpt, out, arch="resnet50", blocks=[1, 0, 1, 1])


def run_cli(*args):
    if not os.path.exists(CLI):
        pytest.fail("adamant CLI not found at %s: run `make`" % CLI)
    return subprocess.run([CLI] + [str(a) for a in args], capture_output=True, text=True)


def test_cli_import_and_errors(adamant_module, tmp_path):
    ckpt, v, x, y = build(tmp_path, "resnet50", [1, 1, 1, 1], 64)
    out = tmp_path / "cli.onnx"
    r = run_cli("import", "tensorpack", ckpt, "--arch", "resnet50", "--blocks", "1,1,1,1", "--input-size", 64, "-o", out)
    assert r.returncode == 0, r.stderr
    z_ref = R.Reference("resnet50", v, [1, 1, 1, 1]).logits(torch.from_numpy(x.astype(np.float64))).numpy()
    assert np.abs(adamant_module.load(str(out)).predict(x) - z_ref).max() <= 1e-4 * np.abs(z_ref).max()
    info = run_cli("info", out, "--json")
    assert '"channel_order":"bgr"' in info.stdout and '"pixel_range":[0.0,255.0]' in info.stdout
    # missing variable: bad data (65), naming it
    w = dict(v)
    del w["linear/b"]
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **w)
    r = run_cli("import", "tensorpack", bad, "--arch", "resnet50", "--blocks", "1,1,1,1", "-o", tmp_path / "x.onnx")
    assert r.returncode == 65 and "missing variable(s): linear/b" in r.stderr, r.stderr
    r = run_cli("import", "tensorpack", tmp_path / "absent.npz", "--arch", "resnet50", "-o", tmp_path / "x.onnx")
    assert r.returncode == 66, r.stderr
    r = run_cli("import", "tensorpack", ckpt, "--arch", "vgg16", "-o", tmp_path / "x.onnx")
    assert r.returncode == 64 and "--arch must be one of" in r.stderr, r.stderr
    r = run_cli("import", "tensorpack", ckpt, "--arch", "resnet50", "--blocks", "1,1", "-o", tmp_path / "x.onnx")
    assert r.returncode == 64 and "--blocks" in r.stderr, r.stderr
    r = run_cli("import", "tensorpack", ckpt, "--arch", "resnet50", "-o", "/nonexistent/x.onnx")
    assert r.returncode == 73, r.stderr


def _png(path, rgb_uint8_hwc):
    from PIL import Image
    Image.fromarray(rgb_uint8_hwc, "RGB").save(path)


def test_cli_reads_images_into_bgr_0_255_and_xie2020_preset(adamant_module, tmp_path):
    """Image files are RGB; the CLI hands the imported model BGR pixels in [0, 255], and
    --preset xie2020 attacks with eps 16 and step max(1, 16/steps) in those units, targeted at a
    random wrong class, as adamant.Model.attack_preset does from Python."""
    import json
    ckpt, v, _, _ = build(tmp_path, "resnet50", [1, 1, 1, 1], 64)
    model = str(tmp_path / "m.onnx")
    adamant_module.import_tensorpack(ckpt, model, arch="resnet50", blocks=[1, 1, 1, 1], input_size=64)
    m = adamant_module.load(model)
    rgb = np.random.RandomState(3).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    png = str(tmp_path / "img.png")
    _png(png, rgb)
    x = rgb[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)   # BGR, [0, 255], NCHW
    z = m.predict(x)[0]
    r = run_cli("predict", model, png, "--json", tmp_path / "p.json", "--top-k", 3)
    assert r.returncode == 0, r.stderr
    top = json.load(open(tmp_path / "p.json"))[0]["top"]
    assert [t["class"] for t in top] == list(np.argsort(-z)[:3])
    assert np.allclose([t["logit"] for t in top], np.sort(z)[::-1][:3], atol=1e-3)
    # The RGB order matters: the same file read as RGB gives other logits.
    assert np.abs(m.predict(rgb.transpose(2, 0, 1)[None].astype(np.float32))[0] - z).max() > 1e-2

    out = tmp_path / "adv"
    r = run_cli("attack", model, png, "--preset", "xie2020", "--steps", 5, "--label", 3, "-o", out)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(out / "report.json"))
    assert rep["eps"] == pytest.approx(16.0) and rep["alpha"] == pytest.approx(3.2) and rep["targeted"] == "random"
    img = rep["images"][0]
    assert img["target"] != 3 and img["linf"] <= 16.0 + 1e-3
    kw = m.attack_preset("xie2020", steps=5)
    assert kw["eps"] == pytest.approx(16.0) and kw["alpha"] == pytest.approx(3.2) and kw["targeted"] is True
    x_adv, info = m.pgd(x, np.array([3]), seed=0, return_details=True, **kw)
    assert int(info["targets"][0]) == img["target"]
    assert np.abs(x_adv - x).max() <= 16.0 + 1e-3 and x_adv.min() >= 0 and x_adv.max() <= 255
    # With 100 steps the step is max(1, 16/100) = 1 pixel level, as in the paper.
    assert m.attack_preset("xie2020", steps=100)["alpha"] == pytest.approx(1.0)
    # The written PNG maps back to the adversarial pixels (up to 8-bit rounding).
    from PIL import Image
    back = np.asarray(Image.open(out / img["png"]).convert("RGB"))[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    assert np.abs(back - (x + np.clip(back - x, -16, 16))[0]).max() <= 0.5 + 1e-3
    assert np.abs(back - x[0]).max() <= 16.5
    for bad, needle in [(["--eps", "8"], "--eps does not go with --preset"),
                        (["--targeted", "2"], "--targeted does not go with --preset"),
                        (["--no-random-start"], "--no-random-start does not go with it")]:
        r = run_cli("attack", model, png, "--preset", "xie2020", *bad, "-o", out)
        assert r.returncode == 64 and needle in r.stderr, r.stderr
    # eval: one row per step count, each with its own step max(1, 16/steps)
    for c in range(2):
        os.makedirs(tmp_path / "ds" / ("c%d" % c))
        for k in range(2):
            _png(str(tmp_path / "ds" / ("c%d" % c) / ("%d.png" % k)),
                 np.random.RandomState(10 * c + k).randint(0, 256, (64, 64, 3)).astype(np.uint8))
    r = run_cli("eval", model, "--data", tmp_path / "ds", "--preset", "xie2020", "--steps", "2,20",
                "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    e = json.load(open(tmp_path / "e.json"))
    assert e["eps"] == pytest.approx(16.0) and e["targeted"] == "random"
    assert [(row["steps"], row["alpha"]) for row in e["results"]] == [(2, 8.0), (20, 1.0)]
    r = run_cli("eval", model, "--data", tmp_path / "ds", "--preset", "xie2020", "--attack", "apgd-ce")
    assert r.returncode == 64 and "does not go with --attack apgd-ce" in r.stderr, r.stderr
    r = run_cli("attack", model, png, "--preset", "madry", "-o", out)
    assert r.returncode == 64 and "--preset must be xie2020" in r.stderr
    with pytest.raises(adamant_module.InvalidArgument):
        m.attack_preset("madry")
