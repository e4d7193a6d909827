"""adamant.torch: an adamant model as a torch.nn.Module, and PyTorch attack libraries through it.

* the bridge's forward is Model.predict, its backward Model.vjp: PyTorch's autograd through the
  bridge gives adamant's own loss gradients (CE, DLR) and an arbitrary vector-Jacobian product;
* torchattacks' PGD through the bridge matches adamant's own PGD on 500 CIFAR-10 test images
  (without random start: the same iterates, so per-image agreement; with random start: the same
  robust accuracy within sampling noise);
* torchattacks' AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) runs through the bridge on
  mbn_resnet8's adv domain (100 images) and finds robust accuracy at most adamant's PGD-10's.

torch, torchattacks and ART are test dependencies (`make setup` installs them): missing = failure.
"""
import io
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from conftest import BINDINGS, CLASSES, mbn_path, shared_path

import torch  # test dependencies (`make setup`): a missing one fails the run, it is not skipped
import torchattacks

import adamant  # noqa: E402
import adamant.torch as at  # noqa: E402

EPS, ALPHA = 8 / 255, 2 / 255


@pytest.fixture(scope="module")
def cifar500():
    """The first 50 test images (by name) of every class, interleaved by class: x (500, 3, 32, 32) in [0, 1]."""
    from PIL import Image
    per = 50
    want = {c: [] for c in CLASSES}
    with tarfile.open(shared_path("data", "cifar10", "test.tar.gz"), "r:gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and m.name.endswith(".jpg") and len(parts) >= 3 and parts[-2] in want:
                want[parts[-2]].append((m.name, tf.extractfile(m).read()))
    cols = []
    for ci, c in enumerate(CLASSES):
        imgs = sorted(want[c])[:per]
        cols.append([(np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0, ci)
                     for _, d in imgs])
    pairs = [cols[ci][i] for i in range(per) for ci in range(len(CLASSES))]
    x = np.ascontiguousarray(np.stack([p[0] for p in pairs]), dtype=np.float32)
    return x, np.array([p[1] for p in pairs], np.int64)


@pytest.fixture(scope="module")
def net(mbn8):
    return at.Module(mbn8, domain="adv")


def test_import_is_lazy():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import adamant; assert 'torch' not in sys.modules; "
            "m = adamant.torch; assert 'torch' in sys.modules and m.Module.__module__ == 'adamant.torch'")
    r = subprocess.run([sys.executable, "-c", code, BINDINGS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_module_basics(mbn8, net):
    assert isinstance(net, torch.nn.Module)
    assert net.domain == "adv" and "adv" in repr(net)
    assert [p for p in net.parameters() if p.requires_grad] == []
    assert next(net.parameters()).device.type == "cpu"  # what torchattacks reads
    x = np.random.RandomState(0).rand(5, 3, 32, 32).astype(np.float32)
    z = net(torch.from_numpy(x))
    assert z.dtype == torch.float32 and z.shape == (5, 10)
    assert np.array_equal(z.numpy(), mbn8.predict(x, domain="adv"))
    assert np.array_equal(at.Module(mbn8, domain=0)(torch.from_numpy(x)).numpy(), mbn8.predict(x, domain="clean"))
    z64 = net(torch.from_numpy(x).double())  # float64 in -> float64 out, computed in float32
    assert z64.dtype == torch.float64 and np.array_equal(z64.numpy().astype(np.float32), z.numpy())
    with pytest.raises(adamant.InvalidArgument, match="float images"):
        net(torch.from_numpy((x * 255).astype(np.uint8)))
    with pytest.raises(adamant.DomainError):
        at.Module(mbn8, domain="nope")
    with pytest.raises(adamant.InvalidArgument):
        at.Module(mbn8, domain=5)


def test_module_from_paths():
    m = at.Module({"clean": mbn_path(8, "clean"), "adv": mbn_path(8, "adv")}, domain="adv")
    assert m.model.domains == ["clean", "adv"] and m.domain == "adv"


@pytest.mark.parametrize("domain", ["clean", "adv"])
def test_ce_gradient_through_bridge_is_adamants(mbn8, cifar_mixed, domain):
    x, y = cifar_mixed
    xt = torch.from_numpy(x[:16].copy()).requires_grad_(True)
    z = at.Module(mbn8, domain=domain)(xt)
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y[:16]), reduction="sum")
    (g,) = torch.autograd.grad(loss, xt)
    ref_loss, ref = mbn8.gradient(x[:16], y[:16], domain=domain, loss="ce")
    assert np.allclose(loss.item(), ref_loss.sum(), rtol=1e-5)
    err = np.max(np.abs(g.numpy() - ref)) / np.max(np.abs(ref))
    assert err < 1e-4, err  # same backward; the softmax is float32 in torch, double in adamant


def test_dlr_gradient_through_bridge_is_adamants(mbn8, cifar_mixed):
    x, y = cifar_mixed
    xt = torch.from_numpy(x[:16].copy()).requires_grad_(True)
    z = at.Module(mbn8, domain="adv")(xt)
    zs, ind = z.sort(dim=1)
    yt = torch.from_numpy(y[:16])
    u = torch.arange(16)
    top_other = torch.where(ind[:, -1] == yt, zs[:, -2], zs[:, -1])
    dlr = -(z[u, yt] - top_other) / (zs[:, -1] - zs[:, -3] + 1e-12)
    (g,) = torch.autograd.grad(dlr.sum(), xt)
    _, ref = mbn8.gradient(x[:16], y[:16], domain="adv", loss="dlr")
    err = np.max(np.abs(g.numpy() - ref)) / np.max(np.abs(ref))
    assert err < 1e-3, err


def test_vjp_and_batch_size(mbn8, cifar_mixed):
    x, _ = cifar_mixed
    w = np.random.RandomState(3).randn(len(x), 10).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    z = at.Module(mbn8, domain="adv", batch_size=7)(xt)
    (g,) = torch.autograd.grad((z * torch.from_numpy(w)).sum(), xt)
    ref, logits = mbn8.vjp(x, w, domain="adv", return_logits=True)
    assert np.array_equal(z.detach().numpy(), logits)
    assert np.array_equal(g.numpy(), ref)  # per-sample results do not depend on chunking
    # a finite difference of sum(w * logits) along a random direction, in float64
    d = np.random.RandomState(4).choice([-1.0, 1.0], size=x.shape).astype(np.float32)
    h = 1e-3
    fp = (mbn8.predict(x + h * d, domain="adv").astype(np.float64) * w).sum()
    fm = (mbn8.predict(x - h * d, domain="adv").astype(np.float64) * w).sum()
    an = float((ref.astype(np.float64) * d).sum())
    assert abs((fp - fm) / (2 * h) - an) <= 0.02 * abs(an), ((fp - fm) / (2 * h), an)


def _accuracy(model, x, y, domain="adv"):
    return float(np.mean(model.predict(x, domain=domain, batch_size=250).argmax(1) == y))


def test_torchattacks_pgd_agrees_with_adamant_pgd(mbn8, net, cifar500):
    """500 images, L-inf eps 8/255, alpha 2/255, 10 steps, through the adv domain."""
    x, y = cifar500
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # No random start: both run the same iterates (sign steps of the CE gradient), so the
    # adversarial images agree except where a gradient component is ~0 and its sign flips.
    t0 = time.time()
    ta = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=10, random_start=False)(xt, yt).numpy()
    t_ta = time.time() - t0
    t0 = time.time()
    ad = mbn8.pgd(x, y, eps=EPS, alpha=ALPHA, steps=10, random_start=False, domain="adv")
    t_ad = time.time() - t0
    assert np.max(np.abs(ta - x)) <= EPS + 1e-6 and ta.min() >= 0 and ta.max() <= 1
    pred_ta = mbn8.predict(ta, domain="adv").argmax(1)
    pred_ad = mbn8.predict(ad, domain="adv").argmax(1)
    same_pixels = float(np.mean(np.abs(ta - ad) < 1e-6))
    acc_ta, acc_ad = float(np.mean(pred_ta == y)), float(np.mean(pred_ad == y))
    print("\nPGD-10 no random start, 500 images, adv domain: clean %.1f %%, torchattacks via bridge %.1f %% "
          "(%.1f s), adamant %.1f %% (%.1f s); same pixels %.2f %%, same predictions %.1f %%"
          % (100 * _accuracy(mbn8, x, y), 100 * acc_ta, t_ta, 100 * acc_ad, t_ad, 100 * same_pixels,
             100 * np.mean(pred_ta == pred_ad)))
    assert same_pixels > 0.99
    assert np.mean(pred_ta == pred_ad) >= 0.98
    assert abs(acc_ta - acc_ad) <= 0.01
    # Random start: different random streams, so agreement is statistical.
    torch.manual_seed(0)
    ta = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=10, random_start=True)(xt, yt).numpy()
    ad = mbn8.pgd(x, y, eps=EPS, alpha=ALPHA, steps=10, random_start=True, domain="adv", seed=0)
    acc_ta, acc_ad = _accuracy(mbn8, ta, y), _accuracy(mbn8, ad, y)
    print("PGD-10 random start: torchattacks via bridge %.1f %%, adamant %.1f %%" % (100 * acc_ta, 100 * acc_ad))
    # paired on the same images, the two accuracies differ by a few images at most
    assert abs(acc_ta - acc_ad) <= 0.03


@pytest.mark.slow
def test_torchattacks_autoattack_standard(mbn8, net, cifar500):
    """AutoAttack (standard) through the bridge, 100 images, adv domain: at most PGD-10's accuracy.

    25 s on an idle 2-core machine, minutes when the cores are shared (Square's 5,000 queries and
    FAB-T's 9 targets dominate); marked slow, and still run by `make test`."""
    x, y = cifar500
    x, y = x[:100], y[:100]
    pgd_acc = _accuracy(mbn8, mbn8.pgd(x, y, eps=EPS, alpha=ALPHA, steps=10, domain="adv", seed=0), y)
    t0 = time.time()
    aa = torchattacks.AutoAttack(net, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    xa = aa(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()
    dt = time.time() - t0
    assert np.max(np.abs(xa - x)) <= EPS + 1e-5 and xa.min() >= 0 and xa.max() <= 1
    aa_acc = _accuracy(mbn8, xa, y)
    print("\nAutoAttack standard via bridge, 100 images, adv domain: clean %.0f %%, robust %.0f %% (%.0f s); "
          "adamant PGD-10 %.0f %%" % (100 * _accuracy(mbn8, x, y), 100 * aa_acc, dt, 100 * pgd_acc))
    assert aa_acc <= pgd_acc


def test_art_pytorch_classifier_pgd(mbn8, net, cifar500):
    """ART's PyTorchClassifier wraps the bridge; its ProjectedGradientDescent runs and, without random
    init, gives adamant's own PGD (100 CIFAR-10 images, adv domain)."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier
    x, y = cifar500
    x, y = x[:100], y[:100]
    clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    assert np.array_equal(clf.predict(x, batch_size=100), mbn8.predict(x, domain="adv"))
    onehot = np.eye(10, dtype=np.float32)[y]
    g = clf.loss_gradient(x[:8], onehot[:8])
    _, ref = mbn8.gradient(x[:8], y[:8], domain="adv")
    assert np.max(np.abs(g - ref / 8)) <= 1e-4 * np.max(np.abs(ref / 8))  # ART: the batch-mean CE
    xa = ProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=10, num_random_init=0,
                                  batch_size=100, verbose=False).generate(x, y=onehot)
    ad = mbn8.pgd(x, y, eps=EPS, alpha=ALPHA, steps=10, random_start=False, domain="adv")
    assert np.max(np.abs(xa - x)) <= EPS + 1e-6
    assert np.mean(np.abs(xa - ad) < 1e-6) > 0.99
    acc_art, acc_ad = _accuracy(mbn8, xa, y), _accuracy(mbn8, ad, y)
    print("\nART PGD-10 via bridge, 100 images, adv domain: %.0f %%; adamant %.0f %%" % (100 * acc_art, 100 * acc_ad))
    assert abs(acc_art - acc_ad) <= 0.01
