"""adamant.distributed: evaluation on Ray workers equals the single-process Model.evaluate exactly.

Each sample's random stream is keyed by (seed, its global index) through ``sample_offset``, so
splitting the set over workers and shards must not change a single prediction. The tests start a
local Ray cluster (2 CPUs, loopback only, no dashboard) once for the module; Ray is a test
dependency (requirements-dev.txt): missing, these tests fail rather than skip.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import adamant
import adamant.distributed as ad
from conftest import CLI, REPO, mbn_path, shared_path

pytestmark = pytest.mark.slow  # Ray start-up: seconds; still part of `make test` and CI


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def source():
    return {"clean": mbn_path(8, "clean"), "adv": mbn_path(8, "adv")}


@pytest.fixture(scope="module")
def data100(cifar):
    """100 CIFAR images interleaving the classes."""
    x, y = cifar
    idx = np.arange(320).reshape(10, 32).T.reshape(-1)[:100]
    return np.ascontiguousarray(x[idx]), y[idx]


PGD = dict(attack="pgd", eps=8 / 255, alpha=2 / 255, steps=3, seed=1234)


def reference(model, x, y, batch_size, **kw):
    """Single-process per-sample results and table."""
    a, _ = model._images(x)
    per = model._evaluate_samples(a, adamant._model._labels(y), kw.pop("attack"), None, batch_size, False, None, 0, kw)
    return per, adamant._model._summarize(per, y)


def same_samples(got, ref):
    assert list(got) == list(ref)
    for name in ref:
        for key in ("clean", "robust", "success"):
            assert np.array_equal(got[name][key], ref[name][key]), (name, key)


@pytest.mark.parametrize("workers", [1, 2])
def test_equals_single_process(ray_cluster, source, mbn8, cifar_mixed, workers):
    x, y = cifar_mixed
    ref = mbn8.evaluate(x, y, batch_size=16, progress=False, **PGD)
    ref_per, _ = reference(mbn8, x, y, 16, **PGD)
    with ad.Cluster(source, num_workers=workers) as c:
        assert c.num_workers == workers and c.threads == 2 // workers
        assert c.domains == ["clean", "adv"]
        got = c.evaluate(x, y, batch_size=16, progress=False, **PGD)
        per, _ = c._evaluate_samples(x, y, "pgd", None, 16, False, None, None, None,
                                     {k: v for k, v in PGD.items() if k != "attack"})
    assert got == ref  # the same floats, exactly
    same_samples(per, ref_per)
    assert ref["adv"]["robust_acc"] > 0.1 and ref["clean"]["robust_acc"] < ref["clean"]["clean_acc"]
    assert ray_cluster.is_initialized()  # the caller's Ray session is left running


def test_uneven_shards_and_targets(ray_cluster, source, mbn8, data100):
    """100 images in 3 shards (34/33/33) with chunks of 16 that straddle the shard boundaries;
    random targets (drawn from the per-sample streams) and explicit per-image targets (split with the shards)."""
    x, y = data100
    assert ad.shards(100, 3) == [(0, 34), (34, 67), (67, 100)]
    tgt = (y + 1 + np.arange(100) % 9) % 10
    with ad.Cluster(source, num_workers=2) as c:
        for kw in (dict(PGD), dict(PGD, targeted=True, loss="cw"), dict(PGD, target=tgt, steps=2),
                   dict(attack="fgsm", eps=4 / 255)):
            ref = mbn8.evaluate(x, y, batch_size=16, progress=False, **kw)
            got = c.evaluate(x, y, batch_size=16, progress=False, num_shards=3, **kw)
            assert got == ref, kw
        per, _ = c._evaluate_samples(x, y, "pgd", None, 16, False, None, None, 3,
                                     {k: v for k, v in PGD.items() if k != "attack"})
        same_samples(per, reference(mbn8, x, y, 16, **PGD)[0])
        # adamant's errors come back as themselves, raised in the worker
        with pytest.raises(adamant.DomainError):
            c.evaluate(x, y, domains=["nope"], progress=False)
        with pytest.raises(adamant.InvalidArgument):
            c.evaluate(x, y, attack="cw", progress=False)


def test_evaluate_function(ray_cluster, source, mbn8, cifar_mixed):
    """The one-call API, in the running Ray session; clean only, one domain, and a bad model path."""
    x, y = cifar_mixed
    x, y = x[:40], y[:40]
    got = ad.evaluate(source, x, y, domains="adv", num_workers=2, batch_size=8, progress=False)
    assert got == mbn8.evaluate(x, y, domains="adv", batch_size=8, progress=False)
    got = ad.evaluate(source, x, y, attack="pgd", steps=2, seed=7, num_workers=2, num_shards=5, progress=False)
    assert got == mbn8.evaluate(x, y, attack="pgd", steps=2, seed=7, progress=False)
    with pytest.raises(adamant.AdamantIOError):
        ad.evaluate(os.path.join(REPO, "no-such-model.onnx"), x, y, num_workers=1, progress=False)
    assert ray_cluster.is_initialized()


def test_missing_ray(monkeypatch, source):
    """Without Ray: ImportError naming the extra to install (before any work)."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'adamant\[ray\]'"):
        ad.evaluate(source, np.zeros((1, 3, 32, 32), np.float32), [0])


def run_cli(*args, env=None):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def test_cli_ray(ray_cluster, tmp_path):
    """`adamant eval --ray=ADDRESS` (the test's cluster) gives the numbers of `adamant eval`."""
    data = shared_path("data", "cifar10", "test.tar.gz")
    common = ["eval", "--domain", "clean=" + mbn_path(8, "clean"), "--domain", "adv=" + mbn_path(8, "adv"),
              "--data", data, "--limit", "50", "--steps", "2,3", "--batch-size", "16", "--seed", "9"]
    local = run_cli(*common, "--json", str(tmp_path / "local.json"))
    assert local.returncode == 0, local.stderr
    address = ray_cluster.get_runtime_context().gcs_address
    r = run_cli(*common, "--ray=" + address, "--workers", "2", "--json", str(tmp_path / "ray.json"),
                env=dict(os.environ, ADAMANT_PYTHON=sys.executable))  # this interpreter has Ray
    assert r.returncode == 0, r.stderr
    assert "Ray (%s): 2 workers x 1 thread" % address in r.stdout
    strip = lambda o: [{k: v for k, v in row.items() if k != "seconds"} for row in o["results"]]
    lj, rj = (json.load(open(tmp_path / f)) for f in ("local.json", "ray.json"))
    assert strip(rj) == strip(lj) and len(rj["results"]) == 4
    assert rj["ray"]["workers"] == 2
    # the printed tables agree too, apart from the time column
    table = lambda out: [l.rsplit("  ", 1)[0] for l in out[out.index("domain  "):].splitlines()]
    assert table(r.stdout) == table(local.stdout)


def test_cli_ray_errors(tmp_path):
    """--ray without Python, without Ray, or with an APGD attack: a message and a non-zero exit."""
    data = shared_path("data", "cifar10", "test.tar.gz")
    common = ["eval", mbn_path(8, "adv"), "--data", data, "--limit", "4", "--ray"]
    r = run_cli(*common, "--attack", "apgd-ce")
    assert r.returncode == 64 and "--ray evaluates --attack pgd, fgsm or none" in r.stderr
    r = run_cli(*common, env=dict(os.environ, ADAMANT_PYTHON=str(tmp_path / "no-python")))
    assert r.returncode == 1 and "pip install 'adamant[ray]'" in r.stderr and "ADAMANT_PYTHON" in r.stderr
    fake = tmp_path / "fake" / "ray"  # a `ray` package that fails to import, ahead on PYTHONPATH
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no Ray here')\n")
    env = dict(os.environ, ADAMANT_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(fake.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = run_cli(*common, env=env)
    assert r.returncode == 1 and "needs Ray" in r.stderr and "pip install 'adamant[ray]'" in r.stderr, r.stderr
    r = run_cli("eval", mbn_path(8, "adv"), "--data", data, "--workers", "2")
    assert r.returncode == 64 and "--workers goes with --ray" in r.stderr
