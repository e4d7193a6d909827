"""Issue #8 through the Python binding: context limits (ResourceError), the memory cap given at load
(memory_limit), memory the machine cannot give (ResourceError, not an abort), cancellation of
attacks, predict and gradient from another thread (CancelledError), non-finite pixels, targets given
to an untargeted attack, and messages (size_t values printed unsigned, an unknown default domain
named with the model's domains)."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import adamant
from adamant import _lib as L
from conftest import BINDINGS, cancel_while_running, example_or_shared_mbn8


@pytest.fixture(scope="module")
def model():
    """mbn_resnet8 (clean, adv) from examples/models (shipped), else shared/."""
    return adamant.load({"clean": example_or_shared_mbn8("clean"), "adv": example_or_shared_mbn8("adv")})


@pytest.fixture
def x4(model):
    rng = np.random.default_rng(0)
    return rng.random((4,) + model.input_shape, dtype=np.float32)


def test_new_status_codes_map_to_exceptions():
    assert L.ADM_ERR_RESOURCE == 8 and L.ADM_ERR_CANCELLED == 9
    e = adamant._errors.error_for_status(8, "too big", "adm_predict")
    assert type(e) is adamant.ResourceError and e.status == 8 and "too big" in str(e)
    e = adamant._errors.error_for_status(9, "stop", "adm_attack_pgd")
    assert type(e) is adamant.CancelledError and e.status == 9
    assert issubclass(adamant.ResourceError, adamant.AdamantError)
    assert issubclass(adamant.CancelledError, adamant.AdamantError)


# ---- limits ---------------------------------------------------------------------------------

def test_default_limits(model):
    assert model.limits() == {"max_batch": 65536, "max_pixels_per_image": 4096 * 4096,
                              "max_attack_steps_total": 100000, "max_input_bytes": 4 << 30}


def test_max_batch(model, x4):
    try:
        model.set_limits(max_batch=3)
        assert model.limits()["max_batch"] == 3
        with pytest.raises(adamant.ResourceError, match="batch 4 exceeds the context's max_batch 3"):
            model.predict(x4)
        with pytest.raises(adamant.ResourceError):
            model.gradient(x4, [0, 1, 2, 3])
        assert model.predict(x4, batch_size=3).shape == (4, 10)  # chunks within the limit pass
    finally:
        model.reset_limits()
    assert model.predict(x4).shape == (4, 10)


def test_limits_apply_to_every_thread(model, x4):
    errors = []

    def worker():
        try:
            model.predict(x4)
        except adamant.ResourceError as e:
            errors.append(e)

    try:
        model.set_limits(max_batch=2)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        model.reset_limits()
    assert len(errors) == 1


def test_max_pixels_and_bytes(model, x4):
    try:
        model.set_limits(max_pixels_per_image=32 * 32 - 1)
        with pytest.raises(adamant.ResourceError, match="max_pixels_per_image"):
            model.predict(x4)
        model.reset_limits()
        model.set_limits(max_input_bytes=x4.nbytes - 1)
        with pytest.raises(adamant.ResourceError, match="max_input_bytes"):
            model.predict(x4)
        model.set_limits(max_input_bytes=0)  # 0 = no limit
        assert model.predict(x4).shape == (4, 10)
    finally:
        model.reset_limits()


def test_attack_steps_total(model, x4):
    y = [0, 1, 2, 3]
    try:
        model.set_limits(max_attack_steps_total=10)
        with pytest.raises(adamant.ResourceError, match="6 x 2 = 12 exceeds the context's max_attack_steps_total 10"):
            model.pgd(x4, y, steps=6, restarts=2)
        model.pgd(x4, y, steps=5, restarts=2)
    finally:
        model.reset_limits()
    # the default limit: steps = INT32_MAX no longer runs for ever
    with pytest.raises(adamant.ResourceError, match="max_attack_steps_total 100000"):
        model.pgd(x4, y, steps=2 ** 31 - 1)


def test_set_limits_rejects_bad_values(model):
    for bad in (dict(max_batch=-1), dict(max_batch=1.5), dict(max_batch=True), dict(nope=3)):
        with pytest.raises(adamant.InvalidArgument):
            model.set_limits(**bad)
    assert model.limits()["max_batch"] == 65536


def test_huge_batch_with_short_buffer_is_an_error_not_an_abort(tmp_path):
    """batch = 10^7 with consistent lengths but a 4-image buffer: ResourceError, process alive."""
    code = r"""
import ctypes, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import adamant
from adamant import _lib as L
m = adamant.load(sys.argv[2])
ctx = m._ctx()
per = int(np.prod(m.input_shape))
x = np.zeros(4 * per, np.float32)
out = np.zeros(40, np.float32)
big = 10 ** 7
FP = ctypes.POINTER(ctypes.c_float)
for limits in ({}, {"max_batch": 0}):
    m.set_limits(**limits)
    ctx = m._ctx()
    try:
        L.LIB.adm_predict(ctx, 0, x.ctypes.data_as(FP), big * per, big, out.ctypes.data_as(FP), big * m.num_classes)
        print("NO ERROR")
    except adamant.ResourceError as e:
        print("RESOURCE", e)
"""
    r = subprocess.run([sys.executable, "-c", code, BINDINGS, example_or_shared_mbn8("clean")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-800:])
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0].startswith("RESOURCE") and "max_batch 65536" in lines[0], lines[0]
    assert lines[1].startswith("RESOURCE") and "max_input_bytes" in lines[1], lines[1]


# ---- cancellation ---------------------------------------------------------------------------

def test_cancel_a_long_pgd_from_another_thread(model, x4):
    y = [0, 1, 2, 3]
    e, seconds = cancel_while_running(model, lambda: model.pgd(x4, y, steps=100000))  # minutes unless cancelled
    assert isinstance(e, adamant.CancelledError), e
    assert e.status == 9 and "cancelled" in str(e) and e.function == "adm_attack_pgd"
    assert seconds < 30
    # the flag is cleared by the next call, on that thread and this one
    assert model.pgd(x4, y, steps=2).shape == x4.shape


def test_cancel_without_running_call_has_no_effect(model, x4):
    model.cancel()
    assert model.pgd(x4, [0, 1, 2, 3], steps=2).shape == x4.shape


# ---- non-finite pixels ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_errors(model, x4, bad):
    x = x4.copy()
    x[1, 2, 3, 4] = bad
    where = "sample 1, pixel index %d (channel 2, row 3, column 4)" % (2 * 32 * 32 + 3 * 32 + 4)
    with pytest.raises(adamant.InvalidArgument) as e:
        model.predict(x)
    assert where in str(e.value) and "finite" in str(e.value)
    with pytest.raises(adamant.InvalidArgument) as e:
        model.gradient(x, [0, 1, 2, 3])
    assert where in str(e.value)
    with pytest.raises(adamant.InvalidArgument) as e:
        model.pgd(x, [0, 1, 2, 3], steps=1)
    assert where in str(e.value)


def test_out_of_range_pixel_in_pgd_is_located(model, x4):
    x = x4.copy()
    x[3, 0, 0, 1] = 1.5
    with pytest.raises(adamant.InvalidArgument, match=r"found 1\.5 at sample 3, pixel index 1"):
        model.pgd(x, [0, 1, 2, 3], steps=1)


# ---- targets --------------------------------------------------------------------------------

def test_targets_with_an_untargeted_attack_are_an_error(model, x4):
    y, t = [0, 1, 2, 3], [1, 2, 3, 4]
    with pytest.raises(adamant.InvalidArgument, match="ADM_UNTARGETED"):
        model.pgd(x4, y, targeted=False, target=t, steps=1)
    with pytest.raises(adamant.InvalidArgument):
        model.fgsm(x4, y, targeted=False, target=t)
    _, det = model.pgd(x4, y, target=t, steps=1, return_details=True)  # target alone: targeted
    assert list(det["targets"]) == t
    _, det = model.pgd(x4, y, targeted=True, target=t, steps=1, return_details=True)
    assert list(det["targets"]) == t
    _, det = model.pgd(x4, y, steps=1, return_details=True)
    assert list(det["targets"]) == [-1] * 4


def test_raw_untargeted_config_with_targets(model, x4):
    import ctypes
    cfg = L.adm_attack_config()
    L.LIB.adm_attack_config_default(ctypes.byref(cfg))
    t = np.array([1, 2, 3, 4], np.int64)
    y = np.array([0, 1, 2, 3], np.int64)
    cfg.targets, cfg.targets_len = t.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), 4
    out = np.empty_like(x4)
    FP = ctypes.POINTER(ctypes.c_float)
    with pytest.raises(adamant.InvalidArgument, match="targets given"):
        L.LIB.adm_attack_pgd(model._ctx(), ctypes.byref(cfg), x4.ctypes.data_as(FP), x4.size, 4,
                             y.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), 4, out.ctypes.data_as(FP),
                             out.size, None)


# ---- messages -------------------------------------------------------------------------------

def test_size_max_is_printed_unsigned(model, x4):
    with pytest.raises(adamant.DomainError) as e:
        model.predict(x4, domain=-1)  # passed to C as SIZE_MAX
    assert "18446744073709551615" in str(e.value) and "-1" not in str(e.value), str(e.value)
    assert "clean, adv" in str(e.value)
    with pytest.raises(adamant.DomainError) as e:
        model.pgd(x4, [0, 1, 2, 3], attack_domain=-1, steps=1)
    assert "attack_domain index 18446744073709551615" in str(e.value)


def test_unknown_default_domain_names_the_models_domains():
    with pytest.raises(adamant.DomainError) as e:
        adamant.load({"clean": example_or_shared_mbn8("clean"), "adv": example_or_shared_mbn8("adv")},
                     default_domain="nope")
    assert "'nope' is not among the model's domains: clean, adv" in str(e.value), str(e.value)
    with pytest.raises(adamant.DomainError) as e:
        adamant.load(example_or_shared_mbn8("clean"), default_domain="nope")
    assert "'nope' is not among the model's domains: default" in str(e.value), str(e.value)


# ---- memory cap at load (memory_limit) ------------------------------------------------------

def test_memory_limit_below_the_weights_fails_to_load():
    path = example_or_shared_mbn8("clean")
    weights = adamant.load(path).info()["memory"]["weight_bytes"]
    assert weights > 300_000
    with pytest.raises(adamant.ResourceError, match="above the memory limit") as e:
        adamant.load(path, memory_limit=weights - 1)
    assert e.value.function == "adm_model_load" and str(weights - 1) in str(e.value)
    m = adamant.load(path, memory_limit=weights + (64 << 20))
    info = m.info()["memory"]
    assert info["memory_limit"] == weights + (64 << 20) and info["weight_bytes"] == weights
    assert 0 < info["predict_bytes_batch1"] <= info["gradient_bytes_batch1"]
    assert adamant.load(path).info()["memory"]["memory_limit"] is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1G", True, 2 ** 64])
def test_memory_limit_rejects_bad_values(bad):
    with pytest.raises(adamant.InvalidArgument, match="memory_limit"):
        adamant.load(example_or_shared_mbn8("clean"), memory_limit=bad)


def test_calls_past_the_memory_limit_fail_before_allocating(x4):
    """A cap with room for small batches: a 2000-image call is refused up front; split, it runs."""
    path = example_or_shared_mbn8("clean")
    m = adamant.load(path, memory_limit=24 << 20)
    rng = np.random.default_rng(3)
    x = rng.random((2000, 3, 32, 32), dtype=np.float32)
    y = np.arange(2000) % 10
    with pytest.raises(adamant.ResourceError, match="predict on a batch of 2000 needs about .* memory limit"):
        m.predict(x)
    with pytest.raises(adamant.ResourceError, match="gradient on a batch of 2000"):
        m.gradient(x, y)
    with pytest.raises(adamant.ResourceError, match="attack on a batch of 2000"):
        m.pgd(x, y, steps=1)
    ref = adamant.load(path).predict(x[:64])
    np.testing.assert_array_equal(m.predict(x[:64], batch_size=16), ref)  # chunks within the cap run
    assert m.gradient(x4, [0, 1, 2, 3])[1].shape == x4.shape


def test_unallocatable_activations_are_an_error_not_an_abort(tmp_path):
    """700,000 images with consistent lengths but a 4-image buffer and no context limits: the input's
    copies could be had, a gradient's working set could not: ResourceError before the buffer is read."""
    code = r"""
import ctypes, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import adamant
from adamant import _lib as L
m = adamant.load(sys.argv[2])
m.set_limits(max_batch=0, max_input_bytes=0)
ctx = m._ctx()
per = int(np.prod(m.input_shape))
x = np.zeros(4 * per, np.float32)
y = np.zeros(4, np.int64)
big = 700000
FP, IP = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64)
try:
    L.LIB.adm_gradient(ctx, 0, 0, x.ctypes.data_as(FP), big * per, big, y.ctypes.data_as(IP), big, None, 0, None, 0)
    print("NO ERROR")
except adamant.ResourceError as e:
    print("RESOURCE", e)
print("ALIVE", m.predict(x.reshape(4, *m.input_shape)).shape)
"""
    with open("/proc/meminfo") as f:
        avail = [int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:")][0]
    if avail > (40 << 30):
        pytest.skip("more than 40 GB available: 700,000 images' gradient might fit")
    r = subprocess.run([sys.executable, "-c", code, BINDINGS, example_or_shared_mbn8("clean")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-800:])
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("RESOURCE") and "available" in lines[0], lines
    assert lines[1] == "ALIVE (4, 10)", lines


# ---- predict and gradient cancelled from another thread ---------------------------------------

@pytest.mark.parametrize("call", ["predict", "gradient"])
def test_cancel_a_long_predict_or_gradient(model, call):
    rng = np.random.default_rng(4)
    x = rng.random((2048, 3, 32, 32), dtype=np.float32)  # seconds of work
    y = np.arange(2048) % 10
    e, seconds = cancel_while_running(model, lambda: model.predict(x) if call == "predict" else model.gradient(x, y),
                                      poll=0.002)
    assert isinstance(e, adamant.CancelledError), e
    assert e.status == 9 and "cancelled" in str(e)
    assert e.function == ("adm_predict" if call == "predict" else "adm_gradient")
    assert seconds < 30
    assert model.predict(x[:4]).shape == (4, 10)  # the next call runs
