"""BN domains: per-domain sets, the single-file format, defaults and errors."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import adamant
from conftest import CIFAR_MEAN, CIFAR_STD, external_path, mbn_path, ort_run, ort_session


def images(n=8, seed=0):
    return np.random.RandomState(seed).rand(n, 3, 32, 32).astype(np.float32)


def test_domain_logits_equal_single_files(mbn8):
    x = images()
    for name in ("clean", "adv"):
        single = adamant.load(mbn_path(8, name))
        assert np.array_equal(mbn8.predict(x, domain=name), single.predict(x))
        assert np.array_equal(mbn8.predict(x, domain=mbn8.domains.index(name)), single.predict(x))
    assert np.array_equal(mbn8.predict(x), mbn8.predict(x, domain="clean"))
    assert not np.allclose(mbn8.predict(x, domain="clean"), mbn8.predict(x, domain="adv"))


def test_dict_order_is_domain_order():
    m = adamant.load({"adv": mbn_path(8, "adv"), "clean": mbn_path(8, "clean")})
    assert m.domains == ["adv", "clean"] and m.default_domain == "adv"
    m2 = adamant.load([("a", mbn_path(8, "adv")), ("c", mbn_path(8, "clean"))])
    assert m2.domains == ["a", "c"]


def test_save_reload_single_file(mbn8, tmp_path):
    p = str(tmp_path / "mbn8.onnx")
    mbn8.save(p)
    r = adamant.load(p)
    assert r.domains == ["clean", "adv"] and r.default_domain == "clean"
    x = images(8, 1)
    for d in ("clean", "adv"):
        assert np.array_equal(r.predict(x, domain=d), mbn8.predict(x, domain=d))
    # ONNX Runtime runs the saved file unchanged, with the default domain.
    ref = ort_run(ort_session(p), x)
    got = mbn8.predict(x, domain="clean")
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) <= 1e-4
    # the file is valid ONNX and carries the format's metadata
    model = onnx.load(p)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["adamant.domains"] == "clean,adv" and meta["adamant.default_domain"] == "clean"


def test_default_domain_override(tmp_path):
    paths = {"clean": mbn_path(8, "clean"), "adv": mbn_path(8, "adv")}
    m = adamant.load(paths, default_domain="adv")
    assert m.default_domain == "adv" and m.default_domain_index == 1
    x = images(4, 2)
    assert np.array_equal(m.predict(x), m.predict(x, domain="adv"))
    # the override survives saving, and can be overridden again on load
    p = str(tmp_path / "m.onnx")
    m.save(p)
    assert adamant.load(p).default_domain == "adv"
    assert adamant.load(p, default_domain="clean").default_domain == "clean"
    # ONNX Runtime runs the saved file's default domain, now adv
    ref = ort_run(ort_session(p), x)
    assert np.max(np.abs(m.predict(x) - ref)) / np.max(np.abs(ref)) <= 1e-4
    with pytest.raises(adamant.DomainError) as e:
        adamant.load(paths, default_domain="nope")
    assert "nope" in str(e.value)


def test_non_bn_difference_is_rejected(tmp_path):
    model = onnx.load(mbn_path(8, "adv"))
    node = next(n for n in model.graph.node if n.op_type == "Conv" and "blocks.0" in n.name)
    wname = node.input[1]
    for t in model.graph.initializer:
        if t.name == wname:
            w = numpy_helper.to_array(t).copy()
            w.flat[5] += 0.25
            t.CopyFrom(numpy_helper.from_array(w, wname))
    bad = str(tmp_path / "bad.adv.onnx")
    onnx.save(model, bad)
    with pytest.raises(adamant.DomainError) as e:
        adamant.load({"clean": mbn_path(8, "clean"), "adv": bad})
    msg = str(e.value)
    assert e.value.status == 6
    assert node.name in msg and "adv" in msg


def test_folded_models_cannot_be_domains():
    with pytest.raises(adamant.AdamantError) as e:
        adamant.load({"clean": external_path("cifar10_resnet_2b"), "adv": external_path("cifar10_resnet_2b")})
    assert "BatchNormalization" in str(e.value)
    with pytest.raises(adamant.AdamantError) as e:
        adamant.load({"a": external_path("cifar10_resnet_2b"), "b": external_path("cifar10_sri_resnet_a")})
    assert "BatchNormalization" in str(e.value)


def test_different_networks_are_rejected():
    with pytest.raises(adamant.DomainError):
        adamant.load({"clean": mbn_path(8, "clean"), "adv": mbn_path(14, "adv")})


def test_unknown_domain(mbn8):
    x = images(2)
    with pytest.raises(adamant.DomainError) as e:
        mbn8.predict(x, domain="nope")
    assert "nope" in str(e.value) and e.value.status == 6
    with pytest.raises(adamant.DomainError):
        mbn8.predict(x, domain=2)
    with pytest.raises(adamant.DomainError):
        mbn8.predict(x, domain=-1)
    with pytest.raises(adamant.DomainError):
        mbn8.gradient(x, [0, 1], domain="nope")
    with pytest.raises(adamant.InvalidArgument):
        mbn8.predict(x, domain=1.5)


def test_bad_domain_names():
    with pytest.raises(adamant.InvalidArgument):
        adamant.load({"clean": mbn_path(8, "clean"), "bad name!": mbn_path(8, "adv")})


def test_preprocessing_stored_in_single_file(tmp_path):
    path = external_path("cifar10_resnet_2b")
    m = adamant.load(path, mean=CIFAR_MEAN, std=CIFAR_STD)
    p = str(tmp_path / "ext.onnx")
    m.save(p)
    r = adamant.load(p)
    info = r.info()["preprocessing"]
    np.testing.assert_allclose(info["mean"], CIFAR_MEAN, rtol=1e-6)
    np.testing.assert_allclose(info["std"], CIFAR_STD, rtol=1e-6)
    x = images(4, 3)
    assert np.array_equal(r.predict(x), m.predict(x))
    # without the stored preprocessing the logits differ
    assert not np.allclose(adamant.load(path).predict(x), m.predict(x))


def test_pixel_range_override(tmp_path):
    m = adamant.load(mbn_path(8, "clean"), pixel_range=(0.0, 255.0))
    assert m.pixel_range == (0.0, 255.0)
    p = str(tmp_path / "pr.onnx")
    m.save(p)
    assert adamant.load(p).pixel_range == (0.0, 255.0)
    with pytest.raises(adamant.InvalidArgument):
        adamant.load(mbn_path(8, "clean"), pixel_range=(0.0,))


def test_mean_std_length_checked_by_library():
    with pytest.raises(adamant.AdamantError) as e:
        adamant.load(mbn_path(8, "clean"), mean=[0.5], std=[0.5])
    assert "mean" in str(e.value)
