"""`adamant synth` writes valid ONNX that adamant and ONNX Runtime run alike.

Uses the CLI at $ADAMANT_CLI, else dist/bin/adamant (built by `make`).
"""
import os
import subprocess

import numpy as np
import pytest

from conftest import REPO, ort_run, ort_session, rel_err

CLI = os.environ.get("ADAMANT_CLI") or os.path.join(REPO, "dist", "bin", "adamant")


def synth(tmp_path, flag, depth, seed=0, name=None):
    if not os.path.exists(CLI):
        pytest.fail("adamant CLI not found at %s: run `make` or set ADAMANT_CLI" % CLI)
    out = str(tmp_path / (name or "%s%d_s%d.onnx" % (flag.strip("-"), depth, seed)))
    subprocess.run([CLI, "synth", flag, str(depth), "--seed", str(seed), "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.mark.parametrize("flag,depth,batch", [("--cifar-depth", 20, 8), ("--depth", 50, 2)])
def test_synth_matches_onnxruntime(adamant_module, tmp_path, flag, depth, batch):
    import onnx
    path = synth(tmp_path, flag, depth)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops  # BN kept, not folded
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")  # dynamic batch

    m = adamant_module.load(path)
    size = 224 if flag == "--depth" else 32
    assert tuple(m.input_shape) == (3, size, size)
    x = np.random.RandomState(depth).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    got = m.predict(x)
    ref = ort_run(ort_session(path), x)
    assert got.shape == ref.shape == (batch, 1000 if flag == "--depth" else 10)
    assert np.isfinite(got).all()
    assert rel_err(got, ref) < 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_synth_seed_reproducible(tmp_path):
    a = synth(tmp_path, "--cifar-depth", 8, seed=3, name="a.onnx")
    b = synth(tmp_path, "--cifar-depth", 8, seed=3, name="b.onnx")
    c = synth(tmp_path, "--cifar-depth", 8, seed=4, name="c.onnx")
    with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
        da, db, dc = fa.read(), fb.read(), fc.read()
    assert da == db
    assert da != dc


def test_synth_rejects_bad_depth(tmp_path):
    if not os.path.exists(CLI):
        pytest.fail("adamant CLI not found at %s" % CLI)
    r = subprocess.run([CLI, "synth", "--depth", "51", "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert r.returncode != 0
    assert "depth" in (r.stderr + r.stdout)
