"""Shared fixtures for the adamant Python binding tests.

Paths are found relative to this file: the repository root is three levels up
(bindings/python/tests -> repo) and the shared models and data are at
<repo>/../shared. Tests that need shared/ skip only when that directory is
missing (it exists in CI).

Run from the repo root:
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 -m pytest -q bindings/python/tests
(ADAMANT_CLI=path/to/adamant points the command-line tests at another build of the CLI.)
"""
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
BINDINGS = os.path.normpath(os.path.join(HERE, ".."))

# Test this source tree's package (not an installed copy), with the library `make dist`
# builds unless ADAMANT_LIBRARY says otherwise.
sys.path.insert(0, BINDINGS)
if "ADAMANT_LIBRARY" not in os.environ:
    _dist = os.path.join(REPO, "dist", "lib", "libadamant.so")
    if os.path.exists(_dist):
        os.environ["ADAMANT_LIBRARY"] = _dist

# The command-line tool the CLI tests run: $ADAMANT_CLI, else the one `make dist` builds.
CLI = os.environ.get("ADAMANT_CLI") or os.path.join(REPO, "dist", "bin", "adamant")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cancel_while_running(model, call, poll=0.05):
    """Runs call() on another thread and calls model.cancel() every `poll` seconds until it ends
    (repeatedly: a cancel before the call starts is dropped by design), for 60 s at most.
    Returns (outcome, seconds): the adamant.CancelledError raised, or "finished"."""
    import threading
    import time

    import adamant
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            call()
            result["outcome"] = "finished"
        except adamant.CancelledError as e:
            result["outcome"] = e
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(poll)
        model.cancel()
    t.join(120)
    assert not t.is_alive()
    return result["outcome"], result["seconds"]


def shared_path(*parts):
    """Path under shared/, skipping the test when shared/ itself is missing."""
    if not os.path.isdir(SHARED):
        pytest.skip("shared/ directory (%s) is missing" % SHARED)
    return os.path.join(SHARED, *parts)


def mbn_path(depth, domain):
    return shared_path("models", "mbn", "mbn_resnet%d.%s.onnx" % (depth, domain))


def external_path(name):
    return shared_path("models", "external", name + ".onnx")


def example_or_shared_mbn8(domain):
    """mbn_resnet8.<domain>.onnx from examples/models (shipped in the repo), else from shared/."""
    p = os.path.join(REPO, "examples", "models", "mbn_resnet8.%s.onnx" % domain)
    return p if os.path.exists(p) else mbn_path(8, domain)


def ort_session(path):
    """An onnxruntime CPU session with its warnings silenced."""
    import onnxruntime as ort  # a test dependency: missing = failure, not a skip
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_run(sess, x, per_sample=False):
    """Runs the session's first output on x (per sample when the model fixes batch 1)."""
    name = sess.get_inputs()[0].name
    if per_sample:
        return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(x.shape[0])])
    return sess.run(None, {name: x})[0]


def rel_err(got, ref):
    """max|got - ref| / max|ref|."""
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="session")
def adamant_module():
    import adamant
    return adamant


@pytest.fixture(scope="session")
def cifar():
    """(x, y): the first 32 CIFAR-10 test images of each class, decoded with Pillow.

    x float32 (320, 3, 32, 32) in [0, 1], y int64 (320,), ordered class by class.
    """
    from PIL import Image
    tar = shared_path("data", "cifar10", "test.tar.gz")
    per_class = 32
    want = {c: [] for c in CLASSES}
    with tarfile.open(tar, "r:gz") as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = m.name.split("/")
            if len(parts) < 3 or parts[-2] not in want or len(want[parts[-2]]) >= per_class:
                continue
            want[parts[-2]].append((m.name, tf.extractfile(m).read()))
    xs, ys = [], []
    for ci, c in enumerate(CLASSES):
        for _, data in sorted(want[c]):
            img = Image.open(io.BytesIO(data)).convert("RGB")
            xs.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            ys.append(ci)
    return np.ascontiguousarray(np.stack(xs), dtype=np.float32), np.array(ys, dtype=np.int64)


@pytest.fixture(scope="session")
def cifar_mixed(cifar):
    """64 CIFAR images interleaving the classes (so any prefix covers every class)."""
    x, y = cifar
    idx = np.arange(320).reshape(10, 32).T.reshape(-1)[:64]
    return np.ascontiguousarray(x[idx]), y[idx]


@pytest.fixture(scope="session")
def mbn8(adamant_module):
    """mbn_resnet8 with domains clean (default) and adv."""
    return adamant_module.load({"clean": mbn_path(8, "clean"), "adv": mbn_path(8, "adv")})


@pytest.fixture(scope="session")
def imagenet_models(tmp_path_factory):
    """{arch: path} of seeded random ImageNet ResNet-18/50 made by scripts/make_imagenet_resnet.py."""
    script = os.path.join(REPO, "scripts", "make_imagenet_resnet.py")
    if not os.path.exists(script):
        pytest.skip("scripts/make_imagenet_resnet.py is not in this tree")
    d = tmp_path_factory.mktemp("imagenet")
    out = {}
    for arch in ("resnet18", "resnet50"):
        p = str(d / (arch + ".onnx"))
        subprocess.run([sys.executable, script, "--arch", arch, "--out", p], check=True,
                       stdout=subprocess.DEVNULL)
        out[arch] = p
    return out
