"""Image inputs: integer arrays need an explicit scale; float64 and non-contiguous arrays are converted.

A uint8 image holds 0..255, far outside the [0, 1] pixel range adamant's models take: silently
casting it to float32 gives confident garbage, so every entry point that takes images rejects
integer (and boolean) arrays unless the caller passes ``scale=`` (e.g. 1/255). Also: the package
is typed (py.typed) and mypy accepts it and a typed use of its API.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adamant
from conftest import BINDINGS


@pytest.fixture(scope="module")
def u8():
    return np.random.RandomState(5).randint(0, 256, size=(4, 3, 32, 32)).astype(np.uint8)


def scaled(a):
    return a.astype(np.float32) * np.float32(1 / 255)


Y = np.array([0, 1, 2, 3])

# entry point -> call(model, x, **kw)
CALLS = {
    "predict": lambda m, x, **kw: m.predict(x, **kw),
    "gradient": lambda m, x, **kw: m.gradient(x, Y, **kw),
    "gradient-dlr-targeted": lambda m, x, **kw: m.gradient(x, Y, loss="dlr-targeted", target=(Y + 1) % 10, **kw),
    "vjp": lambda m, x, **kw: m.vjp(x, np.ones((4, 10), np.float32), **kw),
    "pgd": lambda m, x, **kw: m.pgd(x, Y, steps=1, **kw),
    "fgsm": lambda m, x, **kw: m.fgsm(x, Y, **kw),
    "apgd": lambda m, x, **kw: m.apgd(x, Y, steps=2, **kw),
    "autoattack_lite": lambda m, x, **kw: m.autoattack_lite(x, Y, steps=2, n_target_classes=1, **kw),
    "evaluate": lambda m, x, **kw: m.evaluate(x, Y, progress=False, **kw),
    "evaluate-pgd": lambda m, x, **kw: m.evaluate(x, Y, attack="pgd", steps=1, progress=False, **kw),
    "calibrate": lambda m, x, **kw: m.calibrate(x, "cal", **kw).domains,
    "calibrator.add": lambda m, x, **kw: m.calibrator().add(x, **kw),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_integer_images_need_a_scale(mbn8, u8, name):
    call = CALLS[name]
    for bad in (u8, u8.astype(np.int64), u8 > 127):
        with pytest.raises(adamant.InvalidArgument, match=r"integer dtype.*scale=1/255"):
            call(mbn8, bad)
    got = call(mbn8, u8, scale=1 / 255)
    want = call(mbn8, scaled(u8))
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if isinstance(w, np.ndarray):
            assert np.array_equal(g, w)
        else:
            assert g == w


def test_scale_applies_to_float_input_too(mbn8, u8):
    x = u8.astype(np.float64)  # 0..255 floats
    assert np.array_equal(mbn8.predict(x, scale=1 / 255), mbn8.predict(scaled(u8)))


def test_python_lists(mbn8, u8):
    x = scaled(u8)
    assert np.array_equal(mbn8.predict(x.tolist()), mbn8.predict(x))
    with pytest.raises(adamant.InvalidArgument, match="integer dtype"):
        mbn8.predict(u8.tolist())  # a nested list of ints is an integer array


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1/255", None])
def test_bad_scale(mbn8, u8, bad):
    if bad is None:
        with pytest.raises(adamant.InvalidArgument):
            mbn8.predict(u8, scale=bad)
        return
    with pytest.raises(adamant.InvalidArgument, match="scale must be"):
        mbn8.predict(u8, scale=bad)


def test_non_numeric_images(mbn8):
    with pytest.raises(adamant.InvalidArgument, match="numeric"):
        mbn8.predict(np.array([["a"]]))


def test_float64_and_strided_are_converted(mbn8, u8):
    x = scaled(u8)
    ref = mbn8.predict(x)
    assert np.array_equal(mbn8.predict(x.astype(np.float64)), ref)
    assert np.array_equal(mbn8.predict(np.asfortranarray(x)), ref)
    big = np.zeros((4, 3, 64, 32), np.float32)
    big[:, :, ::2] = x
    assert np.array_equal(mbn8.predict(big[:, :, ::2]), ref)
    assert np.array_equal(mbn8.predict(x.astype(np.float16)), mbn8.predict(x.astype(np.float16).astype(np.float32)))
    a, _ = mbn8._images(x)
    assert a is x  # contiguous float32: no copy


def test_read_only_and_view_arrays_are_passed_as_is(mbn8, u8):
    # Call arguments go to C by reference to the first element where numpy lends a writable buffer,
    # through the array's address otherwise (read-only arrays, e.g. from np.frombuffer): same results.
    x = scaled(u8)
    ref, (lref, gref) = mbn8.predict(x), mbn8.gradient(x, Y)
    ro = x.copy()
    ro.flags.writeable = False
    yro = Y.astype(np.int64)
    yro.flags.writeable = False
    assert np.array_equal(mbn8.predict(ro), ref)
    l, g = mbn8.gradient(ro, yro)
    assert np.array_equal(l, lref) and np.array_equal(g, gref)
    buf = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)  # read-only, over bytes
    assert np.array_equal(mbn8.predict(buf), ref)
    # a view starting inside a larger array: its own first element, not the base's
    big = np.concatenate([np.zeros_like(x[:1]), x])
    assert np.array_equal(mbn8.predict(big[1:]), ref)
    l, g = mbn8.gradient(big[1:], Y)
    assert np.array_equal(l, lref) and np.array_equal(g, gref)


def test_py_typed_marker():
    assert os.path.isfile(os.path.join(BINDINGS, "adamant", "py.typed"))


def test_mypy_accepts_the_package_and_a_typed_use(tmp_path):
    use = tmp_path / "use.py"
    use.write_text(textwrap.dedent("""
        from typing import Dict, List, Tuple
        import numpy as np
        import adamant
        m: adamant.Model = adamant.load({"clean": "a.onnx", "adv": "b.onnx"})
        x = np.zeros((1, 3, 32, 32), np.uint8)
        z: np.ndarray = m.predict(x, domain="adv", scale=1 / 255)
        loss, g = m.gradient(x, [0], scale=1 / 255)
        gv: np.ndarray = m.vjp(x, z, domain=1, scale=1 / 255)  # type: ignore[assignment]
        names: List[str] = m.domains
        shape: Tuple[int, int, int] = m.input_shape
        res: Dict[str, Dict[str, object]] = m.evaluate(x, [0], attack="pgd", scale=1 / 255)
        n: int = m.domain_index("adv")
        v: str = adamant.version()
        m.predict(x, domain=2.5)  # E: a float is not a domain
    """))
    env = dict(os.environ, MYPYPATH=BINDINGS)
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                        os.path.join(BINDINGS, "adamant"), str(use)], capture_output=True, text=True, env=env,
                       cwd=BINDINGS)
    out = r.stdout + r.stderr
    errors = [l for l in out.splitlines() if ": error:" in l]
    # exactly the one deliberate error: the float domain
    assert len(errors) == 1 and "use.py:15" in errors[0] and "domain" in errors[0], out
