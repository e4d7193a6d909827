"""Forward agreement with ONNX Runtime."""
import glob
import os

import numpy as np
import pytest

import adamant
from conftest import (CIFAR_MEAN, CIFAR_STD, SHARED, external_path, mbn_path, ort_run, ort_session, rel_err,
                      shared_path)

TOL = 1e-4


def _shared_models(sub, pattern):
    """Stems of every shared/models/<sub>/<pattern> file (a placeholder when shared/ is missing,
    which the test then skips through shared_path)."""
    found = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(SHARED, "models", sub, pattern)))
    return found or ["<shared missing>"]


EXTERNAL = _shared_models("external", "*.onnx")
MBN = _shared_models("mbn", "*.onnx")  # mbn_resnetD.<domain>
_MEAN = np.array(CIFAR_MEAN, np.float32).reshape(1, 3, 1, 1)
_STD = np.array(CIFAR_STD, np.float32).reshape(1, 3, 1, 1)


def random_images(n, seed=0, shape=(3, 32, 32)):
    return np.random.RandomState(seed).rand(n, *shape).astype(np.float32)


@pytest.mark.parametrize("name", EXTERNAL)
@pytest.mark.parametrize("batch", [1, 8])
def test_external_vs_ort(name, batch):
    path = external_path(name)
    m = adamant.load(path, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert m.domains == ["default"]
    x = random_images(batch, seed=batch)
    ref = ort_run(ort_session(path), ((x - _MEAN) / _STD).astype(np.float32), per_sample=True)
    got = m.predict(x)
    assert got.shape == (batch, 10)
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) <= TOL


@pytest.mark.parametrize("name", MBN)
@pytest.mark.parametrize("batch", [1, 8])
def test_mbn_vs_ort(name, batch):
    path = shared_path("models", "mbn", name + ".onnx")
    m = adamant.load(path)
    x = random_images(batch, seed=10 + batch)
    ref = ort_run(ort_session(path), x)
    got = m.predict(x)
    assert got.shape == (batch, 10)
    assert rel_err(got, ref) <= TOL


@pytest.mark.parametrize("name", EXTERNAL)
def test_external_real_images(name, cifar_mixed):
    x, y = cifar_mixed
    x = x[:16]
    path = external_path(name)
    m = adamant.load(path, mean=CIFAR_MEAN, std=CIFAR_STD)
    ref = ort_run(ort_session(path), ((x - _MEAN) / _STD).astype(np.float32), per_sample=True)
    got = m.predict(x)
    assert rel_err(got, ref) <= TOL
    assert np.array_equal(got.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("domain", ["clean", "adv"])
def test_mbn_real_images(domain, cifar_mixed):
    x, y = cifar_mixed
    path = mbn_path(8, domain)
    m = adamant.load(path)
    ref = ort_run(ort_session(path), x)
    got = m.predict(x, batch_size=24)
    assert rel_err(got, ref) <= TOL
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    # the clean domain of this model classifies real images far above chance
    if domain == "clean":
        assert np.mean(got.argmax(1) == y) > 0.5


def test_batch_size_chunking_is_exact(mbn8, cifar_mixed):
    x, _ = cifar_mixed
    whole = mbn8.predict(x, domain="adv")
    for bs in (1, 7, 64, 1000):
        chunked = mbn8.predict(x, domain="adv", batch_size=bs, progress=(bs == 7))
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("batch", [1, 2])
def test_imagenet_vs_ort(imagenet_models, arch, batch):
    path = imagenet_models[arch]
    m = adamant.load(path)
    assert m.input_shape == (3, 224, 224) and m.num_classes == 1000
    x = random_images(batch, seed=batch, shape=(3, 224, 224))
    ref = ort_run(ort_session(path), x)
    got = m.predict(x)
    assert rel_err(got, ref) <= TOL
