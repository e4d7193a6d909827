"""Hostile model files and inputs: every failure is an exception, never a crash."""
import os
import subprocess
import sys

import numpy as np
import pytest

import adamant
from conftest import REPO

FIXTURES = os.path.join(REPO, "Tests", "Fixtures", "hostile")
SCRIPT = os.path.join(REPO, "scripts", "make_hostile_models.py")
EXPECTED = {  # file -> expected exception class
    "truncated.onnx": adamant.ParseError,
    "garbage.onnx": adamant.ParseError,
    "empty.onnx": adamant.ParseError,
    "cycle.onnx": adamant.ParseError,
    "missing_initializer.onnx": adamant.ParseError,
    "short_tensor.onnx": adamant.ParseError,
    "unsupported_op.onnx": adamant.UnsupportedError,
    "bad_attr.onnx": (adamant.ParseError, adamant.UnsupportedError),
}


def _build_inline(out):
    """Minimal versions of the hostile set, for trees without the fixtures or the script."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.RandomState(1234)
    w = (r.randn(8, 3, 3, 3) * 0.3).astype(np.float32)
    fw = (r.randn(4, 8) * 0.5).astype(np.float32)

    def model(nodes, inits, outputs=True):
        inp = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])]
        outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])] if outputs else []
        m = helper.make_model(helper.make_graph(nodes, "tiny", inp, outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 7
        return m

    head = [helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight"], ["logits"], name="fc", transB=1)]
    fc = numpy_helper.from_array(fw, "fc.weight")
    conv = helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1])
    ok = model([conv, helper.make_node("Relu", ["c"], ["r"], name="relu")] + head,
               [numpy_helper.from_array(w, "conv.weight"), fc])
    files = {"tiny_ok.onnx": ok.SerializeToString()}
    files["truncated.onnx"] = files["tiny_ok.onnx"][: len(files["tiny_ok.onnx"]) // 2]
    files["garbage.onnx"] = np.random.RandomState(0xBAD).randint(0, 256, 1000).astype(np.uint8).tobytes()
    files["empty.onnx"] = b""
    cyc = model([helper.make_node("Add", ["input", "loop_b"], ["loop_a"], name="cycle_add"),
                 helper.make_node("Relu", ["loop_a"], ["loop_b"], name="cycle_relu"),
                 conv, helper.make_node("Relu", ["c"], ["r"], name="relu")] + head,
                [numpy_helper.from_array(w, "conv.weight"), fc])
    files["cycle.onnx"] = cyc.SerializeToString()
    miss = model([helper.make_node("Conv", ["input", "conv.weight.missing"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c"], ["r"], name="relu")] + head, [fc])
    files["missing_initializer.onnx"] = miss.SerializeToString()
    short = onnx.ModelProto()
    short.CopyFrom(ok)
    t = short.graph.initializer[0]
    t.raw_data = t.raw_data[: len(t.raw_data) // 2]
    files["short_tensor.onnx"] = short.SerializeToString()
    erf = model([conv, helper.make_node("Erf", ["c"], ["r"], name="my_erf_node")] + head,
                [numpy_helper.from_array(w, "conv.weight"), fc])
    files["unsupported_op.onnx"] = erf.SerializeToString()
    bad = model([helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                  kernel_shape=[5, 5]),
                 helper.make_node("Relu", ["c"], ["r"], name="relu")] + head,
                [numpy_helper.from_array(w, "conv.weight"), fc])
    files["bad_attr.onnx"] = bad.SerializeToString()
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    """The committed fixtures, else the generator script's output, else the inline set."""
    if all(os.path.exists(os.path.join(FIXTURES, f)) for f in list(EXPECTED) + ["tiny_ok.onnx"]):
        return FIXTURES
    out = str(tmp_path_factory.mktemp("hostile"))
    if os.path.exists(SCRIPT):
        subprocess.run([sys.executable, SCRIPT, out], check=True, stdout=subprocess.DEVNULL)
    else:
        _build_inline(out)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_raises(hostile_dir, name):
    path = os.path.join(hostile_dir, name)
    with pytest.raises(EXPECTED[name]) as e:
        adamant.load(path)
    assert e.value.message, "the C layer must explain the failure"
    assert e.value.status in (3, 4)
    # the same bytes from memory fail the same way
    with open(path, "rb") as f:
        data = f.read()
    with pytest.raises(EXPECTED[name]):
        adamant.load(data)


def test_unsupported_op_message(hostile_dir):
    with pytest.raises(adamant.UnsupportedError) as e:
        adamant.load(os.path.join(hostile_dir, "unsupported_op.onnx"))
    msg = str(e.value)
    assert "Erf" in msg and "my_erf_node" in msg and "13" in msg


def test_specific_messages(hostile_dir):
    cases = {"missing_initializer.onnx": "conv.weight.missing", "short_tensor.onnx": "conv.weight",
             "cycle.onnx": "loop_"}
    for name, needle in cases.items():
        with pytest.raises(adamant.AdamantError) as e:
            adamant.load(os.path.join(hostile_dir, name))
        assert needle in str(e.value), (name, str(e.value))


def test_no_output_file(hostile_dir):
    p = os.path.join(hostile_dir, "no_output.onnx")
    if not os.path.exists(p):
        pytest.skip("no no_output.onnx in this fixture set")
    with pytest.raises(adamant.ParseError):
        adamant.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(adamant.AdamantIOError) as e:
        adamant.load(str(tmp_path / "nope.onnx"))
    assert e.value.status == 2 and "nope.onnx" in str(e.value)
    with pytest.raises(adamant.AdamantIOError):
        adamant.load({"a": str(tmp_path / "nope.onnx"), "b": str(tmp_path / "nope2.onnx")})


def test_save_to_unwritable_path(hostile_dir, tmp_path):
    m = adamant.load(os.path.join(hostile_dir, "tiny_ok.onnx"))
    with pytest.raises(adamant.AdamantIOError):
        m.save(str(tmp_path / "no" / "such" / "dir" / "m.onnx"))


def test_tiny_ok_runs_and_inputs_are_checked(hostile_dir):
    m = adamant.load(os.path.join(hostile_dir, "tiny_ok.onnx"))
    assert m.input_shape == (3, 8, 8) and m.num_classes == 4
    x = np.random.RandomState(0).rand(5, 3, 8, 8).astype(np.float32)
    z = m.predict(x)
    assert z.shape == (5, 4) and np.all(np.isfinite(z))
    for extreme in (np.zeros_like(x), np.ones_like(x)):
        assert np.all(np.isfinite(m.predict(extreme)))
    loss, g = m.gradient(x, [0, 1, 2, 3, 0])
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
    folded = adamant.load(os.path.join(hostile_dir, "tiny_ok_folded.onnx"))
    if folded.num_classes == 4:
        np.testing.assert_allclose(folded.predict(x), z, rtol=1e-4, atol=1e-5)

    # wrong sizes are ShapeErrors from the C layer
    with pytest.raises(adamant.ShapeError) as e:
        m.predict(x[:, :, :7, :])
    assert e.value.function == "adm_predict"
    with pytest.raises(adamant.ShapeError):
        m.predict(np.zeros((0, 3, 8, 8), np.float32))
    with pytest.raises(adamant.ShapeError):
        m.predict(np.zeros((2, 8, 8, 3), np.float32))  # NHWC: same size, wrong layout
    with pytest.raises(adamant.ShapeError):
        m.predict(np.zeros((3, 8), np.float32))
    with pytest.raises(adamant.ShapeError):
        m.gradient(x, [0, 1, 2])  # label count
    # labels out of range
    with pytest.raises(adamant.InvalidArgument):
        m.gradient(x, [0, 1, 2, 3, 4])
    with pytest.raises(adamant.InvalidArgument):
        m.gradient(x, [0, 1, 2, 3, -1])
    with pytest.raises(adamant.InvalidArgument):
        m.gradient(x, [0.5, 1, 2, 3, 0])
    with pytest.raises(adamant.InvalidArgument):
        m.gradient(x, [0, 1, 2, 3, 0], loss="hinge")
    # attacks refuse pixels outside the pixel range (NaN included)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(adamant.InvalidArgument):
        m.pgd(bad, [0, 1, 2, 3, 0], steps=1)
    bad[0, 0, 0, 0] = 2.0
    with pytest.raises(adamant.InvalidArgument):
        m.pgd(bad, [0, 1, 2, 3, 0], steps=1)


def test_raw_abi_errors_through_ctypes(hostile_dir):
    """Direct calls with inconsistent lengths and NULLs return statuses (raised by errcheck)."""
    import ctypes
    from adamant import _lib
    m = adamant.load(os.path.join(hostile_dir, "tiny_ok.onnx"))
    ctx = m._ctx()
    x = np.zeros(2 * 3 * 8 * 8, np.float32)
    out = np.zeros(8, np.float32)
    fp = ctypes.POINTER(ctypes.c_float)
    with pytest.raises(adamant.ShapeError):
        _lib.LIB.adm_predict(ctx, 0, x.ctypes.data_as(fp), x.size - 1, 2, out.ctypes.data_as(fp), 8)
    with pytest.raises(adamant.ShapeError):
        _lib.LIB.adm_predict(ctx, 0, x.ctypes.data_as(fp), x.size, 2, out.ctypes.data_as(fp), 7)
    with pytest.raises(adamant.InvalidArgument):
        _lib.LIB.adm_predict(ctx, 0, None, x.size, 2, out.ctypes.data_as(fp), 8)
    with pytest.raises(adamant.InvalidArgument):
        _lib.LIB.adm_predict(None, 0, x.ctypes.data_as(fp), x.size, 2, out.ctypes.data_as(fp), 8)
    with pytest.raises(adamant.InvalidArgument):
        _lib.LIB.adm_model_load(None, None, ctypes.byref(ctypes.c_void_p()))
    assert _lib.LIB.adm_last_error()  # message of the last failure on this thread
    _lib.LIB.adm_predict(ctx, 0, x.ctypes.data_as(fp), x.size, 2, out.ctypes.data_as(fp), 8)
    assert _lib.LIB.adm_last_error() == b""


def test_inline_hostile_set_behaves_like_fixtures(tmp_path):
    """The inline fallback set (used when neither fixtures nor script exist) fails the same way."""
    _build_inline(str(tmp_path))
    adamant.load(str(tmp_path / "tiny_ok.onnx"))
    for name, exc in EXPECTED.items():
        with pytest.raises(exc):
            adamant.load(str(tmp_path / name))


# ---- hostile models that once took the process down -------------------------------------------
# Each case runs in a child process, so a regression fails one test instead of killing the suite.

def _tiny_variant(hostile_dir, tmp_path, edit, name):
    import onnx
    m = onnx.load(os.path.join(hostile_dir, "tiny_ok.onnx"))
    edit(m, onnx)
    p = str(tmp_path / name)
    onnx.save(m, p)
    return p


def _set_conv_pads(m, onnx):
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    for a in list(conv.attribute):
        if a.name == "pads":
            conv.attribute.remove(a)
    conv.attribute.append(onnx.helper.make_attribute("pads", [1000000] * 4))


def _huge_input(m, onnx):
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = 1 << 30
    dims[3].dim_value = 1 << 30


def _negative_bn_epsilon(m, onnx):
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    for a in list(bn.attribute):
        if a.name == "epsilon":
            bn.attribute.remove(a)
    bn.attribute.append(onnx.helper.make_attribute("epsilon", -10.0))


_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, %(bindings)r)
import adamant
try:
    m = adamant.load(%(path)r)
    %(action)s
    print("NO ERROR")
except adamant.AdamantError as e:
    print("ERROR", type(e).__name__, e)
"""


def _run_child(path, action):
    from conftest import BINDINGS
    code = _CHILD % dict(bindings=BINDINGS, path=path, action=action)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_huge_conv_pads_are_a_shape_error(hostile_dir, tmp_path):
    p = _tiny_variant(hostile_dir, tmp_path, _set_conv_pads, "huge_pads.onnx")
    r = _run_child(p, "m.predict(np.zeros((1, 3, 8, 8), np.float32))")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith("ERROR")


def test_huge_input_dims_are_an_error(hostile_dir, tmp_path):
    p = _tiny_variant(hostile_dir, tmp_path, _huge_input, "huge_input.onnx")
    r = _run_child(p, "m.info()")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith("ERROR"), r.stdout


def test_negative_bn_epsilon_rejected(hostile_dir, tmp_path):
    p = _tiny_variant(hostile_dir, tmp_path, _negative_bn_epsilon, "neg_eps.onnx")
    r = _run_child(p, "m.predict(np.full((1, 3, 8, 8), 0.5, np.float32))")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith("ERROR"), r.stdout


def _maxpool_pads_over_kernel(m, onnx):
    from onnx import helper
    # Insert a MaxPool (kernel 2, pads 5) right after the first Relu.
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    out = relu.output[0]
    relu.output[0] = out + "_pre"
    pool = helper.make_node("MaxPool", [out + "_pre"], [out], kernel_shape=[2, 2], pads=[5, 5, 5, 5], name="bad_pool")
    idx = list(m.graph.node).index(relu)
    m.graph.node.insert(idx + 1, pool)


def _int64_input(m, onnx):
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64


def test_maxpool_pads_larger_than_kernel_rejected(hostile_dir, tmp_path):
    p = _tiny_variant(hostile_dir, tmp_path, _maxpool_pads_over_kernel, "pool_pads.onnx")
    r = _run_child(p, "pass")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith("ERROR") and "pads" in r.stdout, r.stdout


def test_integer_input_rejected(hostile_dir, tmp_path):
    p = _tiny_variant(hostile_dir, tmp_path, _int64_input, "int_input.onnx")
    r = _run_child(p, "pass")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith("ERROR") and "element type" in r.stdout, r.stdout


def test_nan_pixels_are_rejected(hostile_dir):
    # Policy (include/adamant.h): non-finite pixels are an error naming the first one, as in PGD
    # (test_hardening.py checks predict, gradient and PGD in detail).
    m = adamant.load(os.path.join(hostile_dir, "tiny_ok.onnx"))
    x = np.full((1, 3, 8, 8), 0.5, np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(adamant.InvalidArgument, match="sample 0, pixel index 0"):
        m.predict(x)
