"""PGD / FGSM through the bindings."""
import numpy as np
import pytest

import adamant


@pytest.fixture(scope="module")
def data(cifar_mixed):
    x, y = cifar_mixed
    return np.ascontiguousarray(x[:12]), y[:12]


def test_linf_ball_and_range(mbn8, data):
    x, y = data
    eps = 8 / 255
    xa, det = mbn8.pgd(x, y, eps=eps, alpha=2 / 255, steps=5, return_details=True)
    assert xa.shape == x.shape and xa.dtype == np.float32
    assert np.max(np.abs(xa - x)) <= eps + 1e-6
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    assert det["success"].dtype == bool and det["targets"].tolist() == [-1] * len(y)
    assert np.array_equal(det["predictions"], mbn8.predict(xa).argmax(1))
    assert np.array_equal(det["success"], det["predictions"] != y)
    assert np.all(det["steps_used"] == 5)


def test_l2_ball(mbn8, data):
    x, y = data
    eps = 0.5
    xa = mbn8.pgd(x, y, eps=eps, alpha=0.1, steps=5, norm="l2", domain="adv")
    norms = np.sqrt(((xa - x).astype(np.float64) ** 2).reshape(len(x), -1).sum(1))
    assert np.all(norms <= eps * (1 + 1e-5))
    assert np.all(norms > 0)
    assert xa.min() >= 0.0 and xa.max() <= 1.0


def test_attack_raises_loss(mbn8, data):
    x, y = data
    l0, _ = mbn8.gradient(x, y, domain="adv")
    _, det = mbn8.pgd(x, y, steps=5, domain="adv", return_details=True)
    assert np.mean(det["loss"]) > np.mean(l0)


def test_determinism(mbn8, data):
    x, y = data
    a = mbn8.pgd(x, y, steps=3, seed=7)
    b = mbn8.pgd(x, y, steps=3, seed=7)
    c = mbn8.pgd(x, y, steps=3, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_targets(mbn8, data):
    x, y = data
    xa, det = mbn8.pgd(x, y, steps=5, targeted=True, seed=3, domain="clean", return_details=True)
    t = det["targets"]
    assert np.all(t != y) and np.all((t >= 0) & (t < 10))
    assert np.array_equal(det["success"], det["predictions"] == t)
    assert np.array_equal(det["predictions"], mbn8.predict(xa).argmax(1))
    # another seed draws other targets
    _, det2 = mbn8.pgd(x, y, steps=1, targeted=True, seed=4, return_details=True)
    assert not np.array_equal(det2["targets"], t)


def test_explicit_targets(mbn8, data):
    x, y = data
    t = (y + 1) % 10
    xa, det = mbn8.pgd(x, y, steps=5, target=t, return_details=True)
    assert np.array_equal(det["targets"], t)
    assert np.array_equal(det["success"], det["predictions"] == t)
    assert np.max(np.abs(xa - x)) <= 8 / 255 + 1e-6


def test_restarts_not_worse(mbn8, data):
    x, y = data
    kw = dict(steps=2, seed=11, domain="adv", return_details=True)
    _, one = mbn8.pgd(x, y, restarts=1, **kw)
    _, three = mbn8.pgd(x, y, restarts=3, **kw)
    assert np.all(three["success"] >= one["success"])
    same = three["success"] == one["success"]
    assert np.all(three["loss"][same] >= one["loss"][same])


def test_early_stop(mbn8, data):
    x, y = data
    _, det = mbn8.pgd(x, y, steps=6, early_stop=True, domain="clean", return_details=True)
    assert np.all(det["steps_used"] <= 6) and np.all(det["steps_used"] >= 1)
    # the clean domain falls quickly: some samples stop early
    assert np.any(det["steps_used"] < 6)


def test_fgsm_equals_one_step_pgd(mbn8, data):
    x, y = data
    eps = 4 / 255
    f, fd = mbn8.fgsm(x, y, eps=eps, domain="adv", return_details=True)
    p, pd = mbn8.pgd(x, y, eps=eps, alpha=eps, steps=1, random_start=False, domain="adv",
                     return_details=True)
    assert np.array_equal(f, p)
    assert np.array_equal(fd["success"], pd["success"])
    assert np.max(np.abs(f - x)) <= eps + 1e-6


def test_attack_domain_differs_from_eval_domain(mbn8, data):
    x, y = data
    xa, det = mbn8.pgd(x, y, steps=3, attack_domain="clean", eval_domain="adv", return_details=True)
    assert np.array_equal(det["predictions"], mbn8.predict(xa, domain="adv").argmax(1))
    assert np.array_equal(det["success"], det["predictions"] != y)
    la, _ = mbn8.gradient(xa, y, domain="clean")
    np.testing.assert_allclose(det["loss"], la, rtol=1e-4, atol=1e-4)  # loss is the attack domain's
    xb = mbn8.pgd(x, y, steps=3, attack_domain=1, eval_domain=0)
    assert not np.array_equal(xa, xb)


def test_chunked_attack(mbn8, data):
    x, y = data
    xa, det = mbn8.pgd(x, y, steps=2, batch_size=5, progress=True, return_details=True)
    assert xa.shape == x.shape and det["loss"].shape == (len(x),)
    assert np.max(np.abs(xa - x)) <= 8 / 255 + 1e-6
    assert np.array_equal(det["predictions"], mbn8.predict(xa).argmax(1))
    # the first chunk is the same as attacking those samples alone
    first = mbn8.pgd(x[:5], y[:5], steps=2)
    assert np.array_equal(xa[:5], first)


def test_results_do_not_depend_on_batching(mbn8, data):
    # Random starts and random targets come from per-sample streams (seed, index in the set):
    # one call, chunks of 3 and chunks of 5 give bit-identical adversarial images and targets.
    x, y = data
    kw = dict(steps=2, targeted=True, seed=11, return_details=True)
    whole, dw = mbn8.pgd(x, y, **kw)
    for bs in (3, 5):
        part, dp = mbn8.pgd(x, y, batch_size=bs, **kw)
        assert np.array_equal(part, whole)
        assert np.array_equal(dp["targets"], dw["targets"])


@pytest.mark.parametrize("kwargs,exc", [
    (dict(eps=-1.0), adamant.InvalidArgument),
    (dict(eps=float("nan")), adamant.InvalidArgument),
    (dict(alpha=0.0), adamant.InvalidArgument),
    (dict(steps=0), adamant.InvalidArgument),
    (dict(restarts=0), adamant.InvalidArgument),
    (dict(norm="l7"), adamant.InvalidArgument),
    (dict(loss="hinge"), adamant.InvalidArgument),
    (dict(domain="nope"), adamant.DomainError),
    (dict(attack_domain="nope"), adamant.DomainError),
    (dict(eval_domain=5), adamant.DomainError),
    (dict(seed=-1), adamant.InvalidArgument),
])
def test_bad_arguments(mbn8, data, kwargs, exc):
    x, y = data
    with pytest.raises(exc) as e:
        mbn8.pgd(x[:2], y[:2], **kwargs)
    assert str(e.value)


def test_bad_labels_and_targets(mbn8, data):
    x, y = data
    x, y = x[:2], y[:2].copy()
    with pytest.raises(adamant.InvalidArgument):
        mbn8.pgd(x, np.array([0, 10]), steps=1)
    with pytest.raises(adamant.ShapeError):
        mbn8.pgd(x, np.array([0]), steps=1)
    with pytest.raises(adamant.InvalidArgument) as e:
        mbn8.pgd(x, y, steps=1, target=y)
    assert "label" in str(e.value)
    with pytest.raises(adamant.ShapeError):
        mbn8.pgd(x, y, steps=1, target=[(y[0] + 1) % 10])
    with pytest.raises(adamant.InvalidArgument):
        mbn8.pgd(x, y, steps=1, target=[(y[0] + 1) % 10, 12])


def test_evaluate(mbn8, cifar_mixed):
    x, y = cifar_mixed
    x, y = x[:48], y[:48]
    res = mbn8.evaluate(x, y, attack="pgd", steps=5, batch_size=16, progress=False)
    assert set(res) == {"clean", "adv"}
    for name, r in res.items():
        assert r["n"] == 48
        assert r["clean_acc"] == pytest.approx(np.mean(mbn8.predict(x, domain=name).argmax(1) == y))
        assert 0.0 <= r["robust_acc"] <= r["clean_acc"] + 1e-9
        assert r["robust_acc"] + r["attack_success_rate"] == pytest.approx(1.0)
    # the adversarial BN domain is what makes this network robust
    assert res["adv"]["robust_acc"] > res["clean"]["robust_acc"]
    assert res["clean"]["robust_acc"] <= 0.1


def test_evaluate_clean_only_and_targeted(mbn8, cifar_mixed):
    x, y = cifar_mixed
    x, y = x[:16], y[:16]
    res = mbn8.evaluate(x, y, domains=["adv"], progress=False)
    assert list(res) == ["adv"] and res["adv"]["robust_acc"] is None
    res = mbn8.evaluate(x, y, attack="fgsm", domains="clean", attack_domain="adv", eps=2 / 255,
                        progress=False)
    assert 0 <= res["clean"]["robust_acc"] <= 1
    res = mbn8.evaluate(x, y, attack="pgd", targeted=True, steps=3, domains=["clean"], progress=False)
    r = res["clean"]
    _, det = mbn8.pgd(x, y, targeted=True, steps=3, domain="clean", batch_size=256, return_details=True)
    assert r["attack_success_rate"] == pytest.approx(np.mean(det["predictions"] == det["targets"]))
    with pytest.raises(adamant.DomainError):
        mbn8.evaluate(x, y, domains=["nope"], progress=False)
    with pytest.raises(adamant.InvalidArgument):
        mbn8.evaluate(x, y, attack="cw", progress=False)
