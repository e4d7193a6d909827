"""The self-contained wheel (`make wheel`, then `make test-wheel`).

dist/adamant-*.whl must carry libadamant.so and the shared libraries it needs beyond the
manylinux baseline, and work in a fresh virtual environment on a machine without Debian's
libonnx / libprotobuf / OpenBLAS. The test installs a copy of the wheel into a new venv (numpy
from PyPI or pip's cache) and runs a prediction there:

* with a clean environment (no ADAMANT_LIBRARY, empty LD_LIBRARY_PATH, working directory outside
  the source tree), checking through /proc/self/maps that every library of the wheel was loaded
  from the wheel's own directory and none of Debian's copies;
* as root (CI), once more in a private mount namespace (``unshare -m``) where Debian's copies of
  those libraries are bind-mounted over by an empty file, so they really are absent.

The logits must equal those of the source tree's dist/lib/libadamant.so bit for bit.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
DIST = os.path.join(REPO, "dist")
MODEL = os.path.join(REPO, "examples", "models", "mbn_resnet8.clean.onnx")

# Run inside the wheel's venv: predict, report where the libraries were mapped from.
PROBE = r"""
import json, sys
import numpy as np
import adamant
x = np.load(sys.argv[2])
m = adamant.load(sys.argv[1])
z = m.predict(x)
try:
    m.predict((x * 255).astype(np.uint8))
    rejected = False
except adamant.InvalidArgument:
    rejected = True
maps = sorted({l.split()[-1] for l in open("/proc/self/maps") if ".so" in l.split()[-1]})
print(json.dumps({"lib": adamant.LIBRARY_PATH, "file": adamant.__file__, "logits": z.tolist(),
                  "maps": maps, "uint8_rejected": rejected, "backend": adamant.backend_info()}))
"""


def _wheel():
    wheels = glob.glob(os.path.join(DIST, "adamant-*.whl"))
    assert len(wheels) == 1, "expected one dist/adamant-*.whl (make wheel), found %s" % wheels
    return wheels[0]


def _debian_deps():
    """{soname: path} of what dist/lib/libadamant.so resolves to on this machine (ldd)."""
    out = subprocess.run(["ldd", os.path.join(DIST, "lib", "libadamant.so")], capture_output=True,
                         text=True, check=True).stdout
    deps = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            deps[parts[0]] = os.path.realpath(parts[2])
    return deps


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with a copy of the wheel installed; returns (python, site-packages/adamant)."""
    d = tmp_path_factory.mktemp("wheelvenv")
    whl = str(d / os.path.basename(_wheel()))
    shutil.copyfile(_wheel(), whl)
    subprocess.run([sys.executable, "-m", "venv", str(d / "venv")], check=True)
    py = str(d / "venv" / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", whl], check=True)
    pkg = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('adamant').submodule_search_locations[0])"],
                         capture_output=True, text=True, check=True, cwd=str(d)).stdout.strip()
    return py, pkg, d


def _clean_env(d):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(d), "LD_LIBRARY_PATH": "", "LANG": "C.UTF-8"}
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine settings, not library paths
        if k in os.environ:
            env[k] = os.environ[k]
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(x path, logits) from the source tree's library."""
    sys.path.insert(0, os.path.join(REPO, "bindings", "python"))
    os.environ.setdefault("ADAMANT_LIBRARY", os.path.join(DIST, "lib", "libadamant.so"))
    import adamant
    x = np.random.RandomState(7).rand(4, 3, 32, 32).astype(np.float32)
    p = str(tmp_path_factory.mktemp("x") / "x.npy")
    np.save(p, x)
    return p, adamant.load(MODEL).predict(x)


def test_wheel_contents():
    names = zipfile.ZipFile(_wheel()).namelist()
    assert "adamant/lib/libadamant.so" in names
    assert "adamant/py.typed" in names
    libs = [n for n in names if n.startswith("adamant.libs/")]
    for want in ("libonnx-", "libonnx_proto-", "libprotobuf-"):
        assert any(os.path.basename(n).startswith(want) for n in libs), (want, libs)
    tag = os.path.basename(_wheel()).split("-", 2)[2]
    assert tag.startswith("py3-none-manylinux_"), tag


def _check_run(out, pkg, ref_logits, hidden=()):
    r = json.loads(out)
    assert os.path.realpath(r["lib"]) == os.path.realpath(os.path.join(pkg, "lib", "libadamant.so"))
    assert np.array_equal(np.asarray(r["logits"], np.float32), ref_logits)
    assert r["uint8_rejected"]
    libs_dir = os.path.realpath(os.path.join(pkg, "..", "adamant.libs"))
    mapped = [os.path.realpath(p) for p in r["maps"]]
    for stem in ("libonnx-", "libonnx_proto-", "libprotobuf-"):
        assert any(os.path.dirname(p) == libs_dir and os.path.basename(p).startswith(stem) for p in mapped), \
            (stem, mapped)
    for soname, path in _debian_deps().items():
        if soname.startswith(("libonnx", "libprotobuf")):
            assert path not in mapped, "Debian's %s was loaded: %s" % (soname, path)
    for p in hidden:
        assert p not in mapped
    return r


def test_wheel_runs_in_fresh_venv(venv, reference):
    py, pkg, d = venv
    x, ref = reference
    r = subprocess.run([py, "-c", PROBE, MODEL, x], capture_output=True, text=True, env=_clean_env(d), cwd=str(d))
    assert r.returncode == 0, r.stderr
    _check_run(r.stdout, pkg, ref)


def test_wheel_runs_with_debian_libraries_absent(venv, reference):
    """Debian's libonnx, libonnx_proto, libprotobuf and OpenBLAS replaced by empty files (root only)."""
    py, pkg, d = venv
    x, ref = reference
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace (CI runs as root)")
    hide = sorted({p for s, p in _debian_deps().items() if s.startswith(("libonnx", "libprotobuf"))})
    blas = [p for p in glob.glob("/usr/lib/x86_64-linux-gnu/libopenblas*.so*") + glob.glob("/usr/lib/x86_64-linux-gnu/openblas*/*.so*")
            if os.path.isfile(p)]
    hide += sorted({os.path.realpath(p) for p in blas})
    assert any("libonnx" in p for p in hide) and any("libprotobuf" in p for p in hide), hide
    empty = d / "empty"
    empty.write_bytes(b"")
    mounts = " && ".join("mount --bind %s %s" % (empty, p) for p in hide)
    # Inside the namespace: prove the libraries are gone (a plain libadamant.so no longer loads),
    # then run the wheel's package.
    plain = os.path.join(DIST, "lib", "libadamant.so")
    script = ("%s && ! %s -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' %s 2>/dev/null && exec %s -c \"$PROBE\" %s %s"
              % (mounts, py, plain, py, MODEL, x))
    env = dict(_clean_env(d), PROBE=PROBE)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True, env=env, cwd=str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    out = _check_run(r.stdout, pkg, ref, hidden=hide)
    # (numpy's wheel maps its own OpenBLAS copy from numpy.libs; none may come from the system)
    assert not [p for p in out["maps"] if "openblas" in p.lower() and p.startswith(("/usr/", "/lib"))]
