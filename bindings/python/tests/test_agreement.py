"""adamant's PGD against the independent PyTorch PGD reference, on 1,000 CIFAR-10 test images.

The reference numbers come from scripts/pgd_reference.py (PyTorch autograd through
scripts/onnx_torch.py, torchattacks semantics), committed in
benchmarks/results/pgd_reference_torch.json. Same images (the models' eval_subset), same
settings: untargeted L-inf PGD-10 with random start, BN in inference mode, the attack through
the evaluated domain. Clean accuracy must match exactly; accuracy under attack within 1.5 points.
benchmarks/pgd_agreement.py runs the full table (every model, PGD-10 and PGD-50).
"""
import json
import os
import sys

import numpy as np
import pytest

import adamant
from conftest import REPO, shared_path

sys.path.insert(0, os.path.join(REPO, "scripts"))


@pytest.fixture(scope="module")
def subset():
    shared_path("data", "cifar10", "test.tar.gz")  # skips only without ../shared
    import refcommon
    _, images, labels = refcommon.load_cifar10_test()
    idx = np.array(json.load(open(os.path.join(REPO, "Tests", "Fixtures", "cifar10_eval_subset.json")))["indices"])
    return refcommon.to_nchw_float(images[idx]), labels[idx]


def _reference(model, domain, steps):
    recs = json.load(open(os.path.join(REPO, "benchmarks", "results", "pgd_reference_torch.json")))
    return next(r for r in recs if r["model"] == model and r["domain"] == domain and r["steps"] == steps)


@pytest.mark.parametrize("model,domain", [("mbn_resnet8", "clean"), ("mbn_resnet8", "adv"),
                                          ("cifar10_resnet_2b", "default")])
def test_pgd10_matches_pytorch(subset, model, domain):
    x, y = subset
    ref = _reference(model, domain, 10)
    if model.startswith("mbn"):
        d = shared_path("models", "mbn")
        m = adamant.load({k: os.path.join(d, "%s.%s.onnx" % (model, k)) for k in ("clean", "adv")})
    else:
        m = adamant.load(shared_path("models", "external", model + ".onnx"),
                         mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
    r = m.evaluate(x[:ref["n"]], y[:ref["n"]], attack="pgd", domains=[domain], batch_size=250, progress=False,
                   eps=ref["eps"], alpha=ref["alpha"], steps=10, random_start=True, seed=0)[domain]
    assert r["clean_acc"] == pytest.approx(ref["clean_acc"], abs=1e-9)
    assert abs(r["robust_acc"] - ref["robust_acc"]) <= 0.015, (r, ref)
