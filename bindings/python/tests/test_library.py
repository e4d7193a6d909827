"""Library-level API, ctypes declarations, lookup and handle lifetime."""
import gc
import os
import re
import subprocess
import sys
import weakref

import numpy as np
import pytest

import adamant
from adamant import _lib
from conftest import BINDINGS, REPO, example_or_shared_mbn8


def header_functions():
    """Names of every adm_* function declared in include/adamant.h."""
    with open(os.path.join(REPO, "include", "adamant.h")) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return set(re.findall(r"\b(adm_[a-z0-9_]+)\s*\(", text))


def test_version_and_abi():
    assert re.match(r"^\d+\.\d+\.\d+", adamant.__version__)
    assert adamant.__version__ == adamant.version()
    assert adamant.abi_version() == adamant.ABI_VERSION == 1


def test_backend_info():
    info = adamant.backend_info()
    assert isinstance(info, str) and info
    assert "thread" in info.lower()


def test_set_num_threads():
    adamant.set_num_threads(0)
    with pytest.raises(adamant.InvalidArgument) as e:
        adamant.set_num_threads(-1)
    assert e.value.status == 1 and "threads" in str(e.value)
    adamant.set_num_threads(0)


def test_every_header_function_is_declared():
    declared = set(_lib._PROTOTYPES)
    assert declared == header_functions()
    for name in declared:
        f = getattr(_lib.LIB, name)
        assert f.argtypes is not None, name
    assert _lib.LIB.adm_predict.argtypes[1] is _lib.c_size_t


def test_struct_sizes_match_library():
    import ctypes
    o = _lib.adm_load_options()
    _lib.LIB.adm_load_options_default(ctypes.byref(o))
    assert o.struct_size == ctypes.sizeof(o)
    c = _lib.adm_attack_config()
    _lib.LIB.adm_attack_config_default(ctypes.byref(c))
    assert c.struct_size == ctypes.sizeof(c)
    assert abs(c.eps - 8 / 255) < 1e-7 and abs(c.alpha - 2 / 255) < 1e-7 and c.steps == 10
    assert c.random_start == 1 and c.restarts == 1


def test_error_hierarchy():
    for cls, st in ((adamant.InvalidArgument, 1), (adamant.AdamantIOError, 2), (adamant.ParseError, 3),
                    (adamant.UnsupportedError, 4), (adamant.ShapeError, 5), (adamant.DomainError, 6),
                    (adamant.InternalError, 7)):
        assert issubclass(cls, adamant.AdamantError) and cls.STATUS == st
    assert issubclass(adamant.InvalidArgument, ValueError)
    assert issubclass(adamant.ShapeError, ValueError)


def _run_python(code, env_update):
    env = dict(os.environ)
    env.update(env_update)
    env["PYTHONPATH"] = BINDINGS + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_missing_library_gives_clear_import_error(tmp_path):
    r = _run_python("import adamant", {"ADAMANT_LIBRARY": str(tmp_path / "nope" / "libadamant.so")})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "ADAMANT_LIBRARY" in r.stderr


@pytest.mark.parametrize("level", ["1", "2"])
def test_profile_keys(level):
    """ADAMANT_PROFILE prints a table at exit, a convolution keyed by kernel, stride, algorithm and
    input size; at 2 also by its channels and a fused residual (mbn_resnet8: 3->16 stem, 16->32 ...)."""
    code = ("import adamant, numpy as np; m = adamant.load(%r); "
            "m.predict(np.zeros([1] + list(m.input_shape), np.float32))" % example_or_shared_mbn8("clean"))
    r = _run_python(code, {"ADAMANT_PROFILE": level})
    assert r.returncode == 0, r.stderr
    assert "adamant profile (ADAMANT_PROFILE)" in r.stderr
    convs = [line.strip() for line in r.stderr.splitlines() if line.strip().startswith("Conv ")]
    assert convs, r.stderr
    key = re.compile(r"^Conv \d+x\d+/\d+ \w+ \d+x\d+" + (r" \d+->\d+( \+res)?" if level == "2" else "") + r"\s+[\d.]+\s")
    assert all(key.match(c) for c in convs), convs
    if level == "2":
        assert any(" 3->16" in c for c in convs) and any("+res" in c for c in convs), convs


def test_library_path_from_env():
    lib = os.environ.get("ADAMANT_LIBRARY")
    if not lib:
        pytest.skip("ADAMANT_LIBRARY not set")
    assert os.path.samefile(adamant.LIBRARY_PATH, lib)


def test_input_is_not_copied(mbn8):
    x = np.random.RandomState(0).rand(2, 3, 32, 32).astype(np.float32)
    a, single = mbn8._images(x)
    assert a is x and not single
    # Non-contiguous or float64 input is converted (copied) transparently.
    x64 = x.astype(np.float64)
    assert np.array_equal(mbn8.predict(x64), mbn8.predict(x))
    xt = np.asfortranarray(x)
    assert np.array_equal(mbn8.predict(xt), mbn8.predict(x))


def test_single_image(mbn8):
    x = np.random.RandomState(1).rand(3, 32, 32).astype(np.float32)
    z = mbn8.predict(x)
    assert z.shape == (1, 10)
    assert np.array_equal(z, mbn8.predict(x[None]))
    loss, g = mbn8.gradient(x, 3)
    assert loss.shape == (1,) and g.shape == (3, 32, 32)


def test_model_properties_and_info(mbn8):
    assert mbn8.domains == ["clean", "adv"]
    assert mbn8.default_domain == "clean" and mbn8.default_domain_index == 0
    assert mbn8.input_shape == (3, 32, 32)
    assert mbn8.num_classes == 10
    assert mbn8.pixel_range == (0.0, 1.0)
    info = mbn8.info()
    assert info["domains"] == ["clean", "adv"] and info["classes"] == 10
    assert info["input"]["shape"] == [3, 32, 32]
    assert info["batchnorm_nodes"] > 0 and info["ops"]["Conv"] > 0
    assert "clean" in repr(mbn8)


def test_load_from_memory(mbn8):
    path = example_or_shared_mbn8("clean")
    with open(path, "rb") as f:
        data = f.read()
    m = adamant.load(data)
    x = np.random.RandomState(2).rand(2, 3, 32, 32).astype(np.float32)
    assert np.array_equal(m.predict(x), mbn8.predict(x, domain="clean"))


def test_handles_are_released():
    m = adamant.load(example_or_shared_mbn8("clean"))
    m.predict(np.zeros((1, 3, 32, 32), np.float32))  # creates this thread's context
    ref = weakref.ref(m._handle)
    del m
    gc.collect()
    assert ref() is None


def test_close_and_context_manager():
    with adamant.load(example_or_shared_mbn8("clean")) as m:
        m.predict(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(adamant.InvalidArgument):
        m.predict(np.zeros((1, 3, 32, 32), np.float32))
    assert "closed" in repr(m)


def test_model_cannot_be_constructed_directly():
    with pytest.raises(TypeError):
        adamant.Model()


def test_build_bundles_library(tmp_path):
    """setup.py's build_py copies dist/lib/libadamant.so into the package, which then loads it."""
    dist_lib = os.path.join(REPO, "dist", "lib", "libadamant.so")
    if not os.path.exists(dist_lib):
        pytest.skip("no dist/lib/libadamant.so (run make dist)")
    # a copy of the tree layout (bindings/python + dist), so the build leaves nothing in the repo
    import shutil
    src = tmp_path / "repo" / "bindings" / "python"
    shutil.copytree(BINDINGS, str(src), ignore=shutil.ignore_patterns(
        "tests", "build", "*.egg-info", "__pycache__", ".pytest_cache", "lib"))
    os.symlink(os.path.join(REPO, "dist"), str(tmp_path / "repo" / "dist"))
    out = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if k != "ADAMANT_LIBRARY"}
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
                       cwd=str(src), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bundled = out / "adamant" / "lib" / "libadamant.so"
    assert bundled.exists()
    r = subprocess.run([sys.executable, "-c", "import adamant; print(adamant.LIBRARY_PATH)"],
                       cwd=str(tmp_path), env=dict(env, PYTHONPATH=str(out)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.samefile(r.stdout.strip(), str(bundled))
