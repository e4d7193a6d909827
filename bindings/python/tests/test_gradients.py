"""Input gradients: reference fixtures, finite differences, batch independence."""
import json
import os

import numpy as np
import pytest

import adamant
from conftest import CIFAR_MEAN, CIFAR_STD, REPO, external_path, mbn_path, shared_path

FIXDIR = os.path.join(REPO, "Tests", "Fixtures", "gradients")


def fixture_models():
    p = os.path.join(FIXDIR, "manifest.json")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return sorted(json.load(f)["models"].items())


def load_fixture_model(entry):
    data = np.load(os.path.join(FIXDIR, entry["file"]))
    kw = {}
    if data["mean"].size:
        kw = dict(mean=data["mean"], std=data["std"])
    return adamant.load(shared_path("models", *entry["onnx"].split("/")), **kw), data


@pytest.mark.parametrize("name,entry", fixture_models() or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="no Tests/Fixtures/gradients/manifest.json in this tree"))])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_gradient_fixture(name, entry, loss):
    m, d = load_fixture_model(entry)
    got_loss, got = m.gradient(d["x"], d["labels"], loss=loss)
    ref = d["grad_" + loss]
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) <= 1e-3
    ref_loss = d["loss_" + loss]
    assert np.max(np.abs(got_loss - ref_loss)) <= 1e-3 * max(1.0, np.max(np.abs(ref_loss)))
    np.testing.assert_allclose(m.predict(d["x"]), d["logits"], rtol=1e-4, atol=1e-4)


def _models():
    return [
        ("mbn8.clean", lambda: adamant.load(mbn_path(8, "clean"))),
        ("mbn8.adv", lambda: adamant.load(mbn_path(8, "adv"))),
        ("resnet_2b", lambda: adamant.load(external_path("cifar10_resnet_2b"), mean=CIFAR_MEAN, std=CIFAR_STD)),
    ]


def _unit(a):
    return a / np.sqrt((a.reshape(a.shape[0], -1) ** 2).sum(1)).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("which", [n for n, _ in _models()])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_directional_derivative(which, loss, cifar_mixed):
    """(L(x + h d) - L(x - h d)) / 2h agrees with <grad, d> (rel 1e-2) for random directions d."""
    m = dict(_models())[which]()
    x, y = cifar_mixed
    x, y = x[:8], y[:8]
    _, g = m.gradient(x, y, loss=loss)
    rs = np.random.RandomState(0)
    h = 3e-4
    for _ in range(3):
        # half along the gradient, half random, so <g, d> is far from 0
        d = _unit(_unit(g) + _unit(rs.randn(*x.shape).astype(np.float32))).astype(np.float32)
        lp, _ = m.gradient(x + h * d, y, loss=loss)
        lm, _ = m.gradient(x - h * d, y, loss=loss)
        fd = (lp.astype(np.float64) - lm) / (2 * h)
        an = (g.astype(np.float64) * d).reshape(8, -1).sum(1)
        assert np.max(np.abs(fd - an) / np.abs(an)) <= 1e-2, (fd, an)


def test_gradient_batch_independence(mbn8, cifar_mixed):
    x, y = cifar_mixed
    x, y = x[:8], y[:8]
    for domain in ("clean", "adv"):
        for loss in ("ce", "cw"):
            lb, gb = mbn8.gradient(x, y, domain=domain, loss=loss)
            for i in range(8):
                l1, g1 = mbn8.gradient(x[i:i + 1], y[i:i + 1], domain=domain, loss=loss)
                np.testing.assert_allclose(g1[0], gb[i], rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(l1[0], lb[i], rtol=1e-6, atol=1e-6)
            # chunked computation gives the same result
            lc, gc = mbn8.gradient(x, y, domain=domain, loss=loss, batch_size=3)
            np.testing.assert_allclose(gc, gb, rtol=1e-6, atol=1e-6)


def test_gradient_losses_are_consistent(mbn8, cifar_mixed):
    x, y = cifar_mixed
    x, y = x[:16], y[:16]
    z = mbn8.predict(x).astype(np.float64)
    lce, _ = mbn8.gradient(x, y, loss="ce")
    ref = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(16), y]
    np.testing.assert_allclose(lce, ref, rtol=1e-4, atol=1e-5)
    lcw, _ = mbn8.gradient(x, y, loss="cw")
    other = z.copy()
    other[np.arange(16), y] = -np.inf
    np.testing.assert_allclose(lcw, other.max(1) - z[np.arange(16), y], rtol=1e-4, atol=1e-5)
