#!/usr/bin/env python3
"""make_hostile_models.py -- a deterministic set of hostile ONNX inputs for loader tests.

What it makes (in OUTDIR)
    tiny_ok.onnx                valid: Conv(3->8,3x3,pad1)+BN+Relu+GAP+Flatten+Gemm(4),
                                input `input` [batch,3,8,8], output `logits` [batch,4], opset 13
    tiny_ok_folded.onnx         valid: the same network with BN folded into the Conv
                                (no BatchNormalization node; same logits up to float rounding)
    truncated.onnx              the bytes of tiny_ok.onnx cut in half
    garbage.onnx                1,000 pseudo-random bytes (not a parseable ModelProto)
    empty.onnx                  0 bytes
    cycle.onnx                  two nodes feeding each other (Add -> Relu -> back into Add)
    missing_initializer.onnx    a Conv whose weight `conv.weight.missing` is neither an
                                initializer, nor a graph input, nor produced by a node
    short_tensor.onnx           initializer `conv.weight` with dims 16x3x3x3 (1,728 bytes of
                                float32) but only 864 bytes of raw_data
    unsupported_op.onnx         valid ONNX with an `Erf` node named `my_erf_node`
    bad_attr.onnx               Conv with kernel_shape [5,5] but a 8x3x3x3 weight
    no_output.onnx              graph with no outputs
    hostile_models.json         {file: {"expect_ok": bool, "description": str}}
                                (expect_ok: adamant should load and run it)
    Files are written with onnx.save (no checker where the checker would refuse);
    the output is byte-identical from run to run.  A one-line description per
    file is printed.  If onnxruntime is importable, tiny_ok and tiny_ok_folded are
    run and compared.

Interpreter
    pyenv `python3` (numpy, onnx; onnxruntime optional).

How to run
    python3 scripts/make_hostile_models.py Tests/Fixtures/hostile
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _model(nodes, inits, inputs=None, outputs=None, name="tiny"):
    if inputs is None:
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])]
    if outputs is None:
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])]
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="adamant-make_hostile_models")
    m.ir_version = 7
    return m


def tiny_params(cout=8):
    r = np.random.RandomState(1234)
    return dict(
        w=(r.randn(cout, 3, 3, 3) * np.sqrt(2.0 / 27)).astype(np.float32),
        b=(r.randn(cout) * 0.1).astype(np.float32),
        gamma=r.uniform(0.5, 1.5, cout).astype(np.float32),
        beta=(r.randn(cout) * 0.1).astype(np.float32),
        mean=(r.randn(cout) * 0.1).astype(np.float32),
        var=r.uniform(0.5, 1.5, cout).astype(np.float32),
        fw=(r.randn(4, cout) * 0.5).astype(np.float32),
        fb=(r.randn(4) * 0.1).astype(np.float32),
    )


def head_nodes(x):
    return [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]


def head_inits(p):
    return [numpy_helper.from_array(p["fw"], "fc.weight"), numpy_helper.from_array(p["fb"], "fc.bias")]


def tiny_ok(cout=8, kernel_attr=None, weight_name="conv.weight", extra_weight=True):
    p = tiny_params(cout)
    k = kernel_attr or [3, 3]
    nodes = [
        helper.make_node("Conv", ["input", weight_name, "conv.bias"], ["c"], name="conv",
                         kernel_shape=k, pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean",
                                                "bn.running_var"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
    ] + head_nodes("r")
    inits = ([numpy_helper.from_array(p["w"], "conv.weight")] if extra_weight else []) + [
        numpy_helper.from_array(p["b"], "conv.bias"),
        numpy_helper.from_array(p["gamma"], "bn.weight"),
        numpy_helper.from_array(p["beta"], "bn.bias"),
        numpy_helper.from_array(p["mean"], "bn.running_mean"),
        numpy_helper.from_array(p["var"], "bn.running_var"),
    ] + head_inits(p)
    return _model(nodes, inits)


def tiny_ok_folded():
    p = tiny_params()
    inv = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + 1e-5)
    w = (p["w"] * inv[:, None, None, None]).astype(np.float32)
    b = ((p["b"] - p["mean"]) * inv + p["beta"]).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ] + head_nodes("r")
    inits = [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(b, "conv.bias")] + head_inits(p)
    return _model(nodes, inits, name="tiny_folded")


def cycle():
    p = tiny_params()
    nodes = [
        # a = Add(input_feat, b); b = Relu(a): each node consumes the other's output
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "loop_b"], ["loop_a"], name="cycle_add"),
        helper.make_node("Relu", ["loop_a"], ["loop_b"], name="cycle_relu"),
    ] + head_nodes("loop_b")
    inits = [numpy_helper.from_array(p["w"], "conv.weight"),
             numpy_helper.from_array(p["b"], "conv.bias")] + head_inits(p)
    return _model(nodes, inits, name="cycle")


def short_tensor():
    m = tiny_ok(cout=16)
    for t in m.graph.initializer:
        if t.name == "conv.weight":
            assert list(t.dims) == [16, 3, 3, 3]
            if not t.raw_data:
                arr = numpy_helper.to_array(t)
                t.ClearField("float_data")
                t.raw_data = arr.tobytes()
            t.raw_data = t.raw_data[:len(t.raw_data) // 2]   # 864 of 1,728 bytes
    # fc expects 16 features
    p = np.random.RandomState(99)
    for t in m.graph.initializer:
        if t.name == "fc.weight":
            t.CopyFrom(numpy_helper.from_array((p.randn(4, 16) * 0.5).astype(np.float32), "fc.weight"))
    return m


def unsupported_op():
    p = tiny_params()
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Erf", ["c"], ["e"], name="my_erf_node"),
    ] + head_nodes("e")
    inits = [numpy_helper.from_array(p["w"], "conv.weight"),
             numpy_helper.from_array(p["b"], "conv.bias")] + head_inits(p)
    return _model(nodes, inits, name="unsupported_op")


def no_output():
    m = tiny_ok()
    del m.graph.output[:]
    return m


def build_all():
    """Ordered list of (file name, bytes, valid, description)."""
    ok = tiny_ok()
    ok_bytes = ok.SerializeToString()
    garbage = np.random.RandomState(0xBAD).randint(0, 256, 1000).astype(np.uint8).tobytes()
    items = [
        ("tiny_ok.onnx", ok, True,
         "valid: Conv(3->8)+BN+Relu+GAP+Flatten+Gemm, input [batch,3,8,8] -> logits [batch,4], opset 13"),
        ("tiny_ok_folded.onnx", tiny_ok_folded(), True,
         "valid: tiny_ok with BN folded into the Conv (no BatchNormalization node), same logits"),
        ("truncated.onnx", ok_bytes[:len(ok_bytes) // 2], False,
         "tiny_ok.onnx cut in half (%d of %d bytes)" % (len(ok_bytes) // 2, len(ok_bytes))),
        ("garbage.onnx", garbage, False, "1000 pseudo-random bytes (seed 0xBAD)"),
        ("empty.onnx", b"", False, "0 bytes (parses as an empty ModelProto: no graph)"),
        ("cycle.onnx", cycle(), False,
         "nodes cycle_add and cycle_relu feed each other (loop_a <-> loop_b)"),
        ("missing_initializer.onnx", tiny_ok(weight_name="conv.weight.missing", extra_weight=False), False,
         "Conv `conv` reads `conv.weight.missing`: no initializer, graph input or producer"),
        ("short_tensor.onnx", short_tensor(), False,
         "initializer conv.weight dims 16x3x3x3 (1728 bytes float32) but raw_data has 864 bytes"),
        ("unsupported_op.onnx", unsupported_op(), False,
         "valid ONNX with an Erf node named my_erf_node (op not supported by adamant)"),
        ("bad_attr.onnx", tiny_ok(kernel_attr=[5, 5]), False,
         "Conv kernel_shape [5,5] but weight conv.weight is 8x3x3x3"),
        ("no_output.onnx", no_output(), False, "tiny_ok with graph.output removed"),
    ]
    out = []
    for name, obj, valid, desc in items:
        data = obj if isinstance(obj, bytes) else obj.SerializeToString(deterministic=True)
        out.append((name, data, valid, desc, obj))
    return out


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: make_hostile_models.py OUTDIR", file=sys.stderr)
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    manifest = {}
    for name, data, valid, desc, obj in build_all():
        if valid:
            onnx.checker.check_model(obj)
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
        manifest[name] = {"expect_ok": valid, "description": desc}
        print("%-26s %6d bytes  %s" % (name, len(data), desc))
    with open(os.path.join(outdir, "hostile_models.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")

    # self-checks: the hostile files really are hostile in the intended way
    try:
        onnx.load_from_string(open(os.path.join(outdir, "garbage.onnx"), "rb").read())
        print("warning: garbage.onnx parsed as a ModelProto")
    except Exception:
        pass
    try:
        import onnxruntime as ort
    except ImportError:
        return 0
    x = np.random.RandomState(5).rand(3, 3, 8, 8).astype(np.float32)
    z = []
    for name in ("tiny_ok.onnx", "tiny_ok_folded.onnx"):
        s = ort.InferenceSession(os.path.join(outdir, name), providers=["CPUExecutionProvider"])
        z.append(s.run(None, {"input": x})[0])
    print("onnxruntime: tiny_ok vs tiny_ok_folded max |diff| %.2e (logits |max| %.2f)"
          % (float(np.abs(z[0] - z[1]).max()), float(np.abs(z[0]).max())))
    for name in ("cycle.onnx", "missing_initializer.onnx", "short_tensor.onnx", "bad_attr.onnx",
                 "truncated.onnx", "garbage.onnx", "empty.onnx", "no_output.onnx"):
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            s = ort.InferenceSession(os.path.join(outdir, name), so, providers=["CPUExecutionProvider"])
            s.run(None, {"input": x})
            print("note: onnxruntime accepted %s" % name)
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
