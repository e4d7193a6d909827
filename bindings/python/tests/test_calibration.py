"""Calibrating new BN domains from data."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import adamant
from conftest import CIFAR_MEAN, CIFAR_STD, external_path


def bn_stats(path, domain):
    """{bn output: running mean} of `domain` in a saved single file ('' = the graph's own BN tensors)."""
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type != "BatchNormalization":
            continue
        if domain:
            key = "adamant.domain.%s.%s.mean" % (domain, n.output[0])
        else:
            key = n.input[3]
        out[n.output[0]] = numpy_helper.to_array(inits[key]).astype(np.float64)
    return out


@pytest.fixture(scope="module")
def calibrated(mbn8, cifar):
    """mbn8 plus domain 'clean2' calibrated on 256 clean CIFAR images from 'clean'."""
    x, _ = cifar
    idx = np.random.RandomState(0).permutation(len(x))[:256]
    return mbn8.calibrate(x[idx], name="clean2", base_domain="clean", batch_size=64)


def test_calibrated_domain(mbn8, calibrated, cifar, tmp_path):
    x, y = cifar
    assert calibrated.domains == ["clean", "adv", "clean2"]
    assert calibrated.default_domain == "clean"
    assert mbn8.domains == ["clean", "adv"]  # the original model is unchanged
    z = calibrated.predict(x[:64], domain="clean2")
    assert z.shape == (64, 10) and np.all(np.isfinite(z))
    # existing domains are untouched
    assert np.array_equal(calibrated.predict(x[:8], domain="adv"), mbn8.predict(x[:8], domain="adv"))

    p = str(tmp_path / "cal.onnx")
    calibrated.save(p)
    base, new = bn_stats(p, ""), bn_stats(p, "clean2")
    assert set(base) == set(new) and base
    b = np.concatenate([base[k] for k in sorted(base)])
    n = np.concatenate([new[k] for k in sorted(base)])
    assert np.all(np.isfinite(n))
    assert not np.allclose(b, n)  # re-estimated, not copied
    # but they estimate the same (clean-image) statistics: strongly correlated
    print("corr(base, calibrated BN means) = %.4f" % np.corrcoef(b, n)[0, 1])
    assert np.corrcoef(b, n)[0, 1] > 0.9

    r = adamant.load(p)
    assert r.domains == ["clean", "adv", "clean2"]
    assert np.array_equal(r.predict(x[:16], domain="clean2"), calibrated.predict(x[:16], domain="clean2"))


def test_calibrator_object(mbn8, cifar):
    x, _ = cifar
    cal = mbn8.calibrator(base_domain="adv")
    assert cal.base_domain == "adv"
    with pytest.raises(adamant.InvalidArgument):
        cal.finish("empty")  # no images yet
    cal.add(x[:32])
    cal.add(x[32:64])
    assert cal.images == 64
    with pytest.raises(adamant.InvalidArgument):
        cal.add(x[:1])  # batch statistics need >= 2 images
    with pytest.raises(adamant.ShapeError):
        cal.add(x[:4, :, :16])
    a = cal.finish("adv2")
    b = cal.finish("adv3")  # the calibrator stays usable
    assert a.domains == ["clean", "adv", "adv2"] and b.domains == ["clean", "adv", "adv3"]
    assert np.array_equal(a.predict(x[:4], domain="adv2"), b.predict(x[:4], domain="adv3"))
    with pytest.raises(adamant.DomainError):
        cal.finish("clean")  # name taken
    with pytest.raises(adamant.InvalidArgument):
        cal.finish("bad name")
    cal.close()
    with pytest.raises(adamant.InvalidArgument):
        cal.add(x[:4])


def test_calibration_depends_only_on_images(mbn8, cifar):
    x, _ = cifar
    m1 = mbn8.calibrate(x[:64], name="c", batch_size=32)
    with mbn8.calibrator("clean") as cal:
        cal.add(x[:32])
        cal.add(x[32:64])
        m2 = cal.finish("c")
    assert np.array_equal(m1.predict(x[:8], domain="c"), m2.predict(x[:8], domain="c"))
    # a trailing single image is merged into the previous batch instead of failing
    m3 = mbn8.calibrate(x[:65], name="c", batch_size=32)
    assert np.all(np.isfinite(m3.predict(x[:4], domain="c")))


def test_calibrate_from_pgd(mbn8, cifar):
    x, y = cifar
    idx = np.arange(0, 320, 10)
    m = mbn8.calibrate(x[idx], y=y[idx], name="pgd", base_domain="adv", source="pgd", steps=2,
                       batch_size=16)
    assert m.domains[-1] == "pgd"
    assert np.all(np.isfinite(m.predict(x[:8], domain="pgd")))
    with pytest.raises(adamant.InvalidArgument):
        mbn8.calibrate(x[:8], name="p", source="pgd")
    with pytest.raises(adamant.InvalidArgument):
        mbn8.calibrate(x[:8], name="p", source="noise")


def test_calibrating_folded_model_is_unsupported(cifar):
    x, _ = cifar
    m = adamant.load(external_path("cifar10_resnet_2b"), mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(adamant.UnsupportedError) as e:
        m.calibrator()
    assert e.value.status == 4 and "BatchNormalization" in str(e.value)
    with pytest.raises(adamant.UnsupportedError):
        m.calibrate(x[:16], name="new")


def test_unknown_base_domain(mbn8):
    with pytest.raises(adamant.DomainError):
        mbn8.calibrator("nope")
