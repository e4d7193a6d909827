#!/usr/bin/env python3
"""onnx_torch.py -- a small, independent PyTorch evaluator of ONNX graphs.

What it is
    The reference forward pass used by adamant's Python tooling
    (make_grad_fixtures.py, pgd_reference.py).  The ONNX file is parsed with
    the `onnx` package and its nodes are run with plain torch ops in
    topological order, so the result is differentiable (autograd) and can be
    evaluated in float32 or float64.  It shares no code with adamant's Swift
    runtime nor with onnxruntime, which is the point: three independent
    implementations that must agree.

    Supported ops: Conv, BatchNormalization (inference mode), Relu, Add, Sub,
    Mul, Div, Identity, Constant, GlobalAveragePool, Flatten, Reshape, Gemm,
    MatMul, MaxPool, AveragePool, Pad, Concat, Clip, Softmax.
    Reshape: a fixed batch of 1 in shape[0] is treated as "the batch" (the
    external VNN-COMP models declare [1,3,32,32] and Reshape to [1,-1]).

    Input is a pixel-space batch [N,3,32,32]; an optional mean/std is applied
    before the graph (the external models need the CIFAR-10 mean/std, the MBN
    models normalise inside the graph).

Interpreter
    Debian's /usr/bin/python3 (python3-torch, python3-onnx, python3-pil).
    `--ort-dump` (used internally by the self-test) needs only numpy+onnxruntime
    and runs under the pyenv `python3`.

How to run
    /usr/bin/python3 scripts/onnx_torch.py --selftest        # all 8 shared models
    /usr/bin/python3 scripts/onnx_torch.py --selftest --n 16 --models mbn_resnet8.clean
    /usr/bin/python3 scripts/onnx_torch.py MODEL.onnx [--mean ... --std ...]  # logits of 10 test images

    The self-test decodes a few CIFAR-10 test images, computes logits with this
    evaluator (float32 and float64), computes logits with onnxruntime in the
    interpreter that has it (a subprocess exchanging .npy files if needed), and
    reports the max abs deviation per model; it fails if any exceeds --tol or
    if the predicted classes differ.

As a library
    from onnx_torch import OnnxTorchModel
    m = OnnxTorchModel("model.onnx", mean=..., std=..., dtype=torch.float64)
    logits = m(x)            # x: torch tensor [N,3,H,W] in pixel space
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    HAVE_TORCH = True
except ImportError:  # the --ort-dump path does not need torch
    torch = None
    F = None
    HAVE_TORCH = False


# ----------------------------------------------------------------------------
# ONNX parsing helpers (onnx package only)
# ----------------------------------------------------------------------------

def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _opset(model):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


def toposort(nodes, available):
    """Kahn-style topological order of `nodes` given names already available.

    Raises ValueError on a cycle or on an input that nothing provides.
    """
    available = set(available)
    available.add("")  # optional inputs are spelled as empty names
    remaining = list(nodes)
    order = []
    while remaining:
        progressed = False
        rest = []
        for n in remaining:
            if all(i in available for i in n.input):
                order.append(n)
                available.update(n.output)
                progressed = True
            else:
                rest.append(n)
        remaining = rest
        if not progressed:
            produced = set()
            for n in remaining:
                produced.update(n.output)
            missing = sorted({i for n in remaining for i in n.input
                              if i not in available and i not in produced})
            if missing:
                raise ValueError("unresolvable node inputs (not an initializer, graph input "
                                 "or node output): %s" % missing)
            raise ValueError("graph has a cycle among nodes: %s"
                             % [n.name or n.op_type for n in remaining])
    return order


# ----------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------

class OnnxTorchModel:
    """Evaluate an ONNX graph with torch ops.  Callable: logits = model(x)."""

    def __init__(self, model_or_path, mean=None, std=None, dtype=None, device="cpu"):
        import onnx
        from onnx import numpy_helper
        if not HAVE_TORCH:
            raise RuntimeError("OnnxTorchModel needs torch (use Debian's /usr/bin/python3)")
        if isinstance(model_or_path, (str, os.PathLike)):
            model = onnx.load(str(model_or_path))
            self.path = str(model_or_path)
        else:
            model = model_or_path
            self.path = None
        self.model = model
        self.dtype = dtype or torch.float32
        self.device = device
        self.opset = _opset(model)
        g = model.graph
        self.consts = {}
        for init in g.initializer:
            self.consts[init.name] = self._tensor(numpy_helper.to_array(init))
        self.inputs = [i.name for i in g.input if i.name not in self.consts]
        if len(self.inputs) != 1:
            raise ValueError("expected exactly one non-initializer graph input, got %s" % self.inputs)
        self.input_name = self.inputs[0]
        self.outputs = [o.name for o in g.output]
        if not self.outputs:
            raise ValueError("graph has no outputs")
        self.nodes = toposort(g.node, list(self.consts) + self.inputs)
        self.node_attrs = [_attrs(n) for n in self.nodes]
        for n, a in zip(self.nodes, self.node_attrs):
            if n.op_type not in self.OPS:
                raise NotImplementedError("unsupported op %s (node %r)" % (n.op_type, n.name))
        self.mean = None if mean is None else self._tensor(np.asarray(mean, np.float64).reshape(1, -1, 1, 1))
        self.std = None if std is None else self._tensor(np.asarray(std, np.float64).reshape(1, -1, 1, 1))

    def _tensor(self, arr):
        arr = np.asarray(arr)
        t = torch.from_numpy(arr.copy())
        if t.is_floating_point():
            t = t.to(self.dtype)
        return t.to(self.device)

    def to(self, dtype):
        """Cast all float tensors (weights, mean/std) to `dtype`, in place."""
        self.dtype = dtype
        for k, v in self.consts.items():
            if v.is_floating_point():
                self.consts[k] = v.to(dtype)
        if self.mean is not None:
            self.mean = self.mean.to(dtype)
            self.std = self.std.to(dtype)
        return self

    def __call__(self, x, return_all=False):
        return self.forward(x, return_all=return_all)

    def forward(self, x, return_all=False):
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        env = dict(self.consts)
        env[self.input_name] = x
        self._batch = x.shape[0]
        for node, attrs in zip(self.nodes, self.node_attrs):
            args = [env[i] if i else None for i in node.input]
            outs = self.OPS[node.op_type](self, args, attrs)
            if not isinstance(outs, tuple):
                outs = (outs,)
            for name, val in zip(node.output, outs):
                if name:
                    env[name] = val
        if return_all:
            return env
        if len(self.outputs) == 1:
            return env[self.outputs[0]]
        return tuple(env[o] for o in self.outputs)

    # ---------------------------------------------------------------- ops --

    @staticmethod
    def _pads_split(pads, nd):
        """ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end] -> (begin, end)."""
        if not pads:
            return [0] * nd, [0] * nd
        return list(pads[:nd]), list(pads[nd:])

    @staticmethod
    def _auto_pad(auto_pad, in_sp, k, s, d):
        begins, ends = [], []
        for i in range(len(in_sp)):
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out = -(-in_sp[i] // s[i])
                eff = (k[i] - 1) * d[i] + 1
                total = max(0, (out - 1) * s[i] + eff - in_sp[i])
                small, big = total // 2, total - total // 2
                if auto_pad == "SAME_UPPER":
                    begins.append(small); ends.append(big)
                else:
                    begins.append(big); ends.append(small)
            else:  # VALID
                begins.append(0); ends.append(0)
        return begins, ends

    def _spatial_pads(self, x, attrs, kernel):
        nd = len(kernel)
        strides = list(attrs.get("strides", [1] * nd))
        dil = list(attrs.get("dilations", [1] * nd))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if isinstance(auto_pad, bytes):
            auto_pad = auto_pad.decode()
        if auto_pad not in ("NOTSET", ""):
            b, e = self._auto_pad(auto_pad, list(x.shape[2:]), kernel, strides, dil)
        else:
            b, e = self._pads_split(attrs.get("pads"), nd)
        return b, e, strides, dil

    @staticmethod
    def _fpad(begins, ends):
        # F.pad wants last dim first: (w_begin, w_end, h_begin, h_end, ...)
        out = []
        for bb, ee in zip(reversed(begins), reversed(ends)):
            out += [bb, ee]
        return out

    def op_conv(self, a, at):
        x, w = a[0], a[1]
        b = a[2] if len(a) > 2 else None
        kernel = list(w.shape[2:])
        if "kernel_shape" in at and list(at["kernel_shape"]) != kernel:
            raise ValueError("Conv kernel_shape %s does not match weight %s"
                             % (list(at["kernel_shape"]), list(w.shape)))
        begins, ends, strides, dil = self._spatial_pads(x, at, kernel)
        group = at.get("group", 1)
        nd = len(kernel)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        if begins == ends:
            return conv(x, w, b, stride=strides, padding=begins, dilation=dil, groups=group)
        x = F.pad(x, self._fpad(begins, ends))
        return conv(x, w, b, stride=strides, padding=0, dilation=dil, groups=group)

    def op_bn(self, a, at):
        x, scale, bias, mean, var = a[:5]
        eps = at.get("epsilon", 1e-5)
        shp = [1, -1] + [1] * (x.dim() - 2)
        inv = scale / torch.sqrt(var + eps)
        return x * inv.reshape(shp) + (bias - mean * inv).reshape(shp)

    def op_relu(self, a, at):
        return torch.relu(a[0])

    def _bin(self, a, at, fn):
        x, y = a
        if self.opset < 7 and at.get("broadcast", 0) and "axis" in at:
            axis = at["axis"]
            if axis < 0:
                axis += x.dim()
            y = y.reshape(list(y.shape) + [1] * (x.dim() - axis - y.dim()))
        return fn(x, y)

    def op_add(self, a, at):
        return self._bin(a, at, torch.add)

    def op_sub(self, a, at):
        return self._bin(a, at, torch.sub)

    def op_mul(self, a, at):
        return self._bin(a, at, torch.mul)

    def op_div(self, a, at):
        if not a[0].is_floating_point() and not a[1].is_floating_point():
            return self._bin(a, at, lambda p, q: torch.div(p, q, rounding_mode="trunc"))
        return self._bin(a, at, torch.div)

    def op_identity(self, a, at):
        return a[0]

    def op_constant(self, a, at):
        from onnx import numpy_helper
        if "value" in at:
            return self._tensor(numpy_helper.to_array(at["value"]))
        if "value_float" in at:
            return self._tensor(np.array(at["value_float"], np.float32))
        if "value_floats" in at:
            return self._tensor(np.array(at["value_floats"], np.float32))
        if "value_int" in at:
            return self._tensor(np.array(at["value_int"], np.int64))
        if "value_ints" in at:
            return self._tensor(np.array(at["value_ints"], np.int64))
        raise NotImplementedError("Constant with attributes %s" % list(at))

    def op_gap(self, a, at):
        x = a[0]
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def op_flatten(self, a, at):
        x = a[0]
        axis = at.get("axis", 1)
        if axis < 0:
            axis += x.dim()
        lead = 1
        for s in x.shape[:axis]:
            lead *= s
        return x.reshape(lead, -1)

    def op_reshape(self, a, at):
        x = a[0]
        if len(a) > 1 and a[1] is not None:
            shape = [int(v) for v in a[1].reshape(-1).tolist()]
        else:  # opset < 5: shape attribute
            shape = list(at["shape"])
        allowzero = at.get("allowzero", 0)
        shape = list(shape)
        for i, s in enumerate(shape):
            if s == 0 and not allowzero:
                shape[i] = x.shape[i]
        # A hard-coded batch of 1 in an exported graph means "the batch".
        if shape and shape[0] == 1 and x.dim() > 0 and x.shape[0] == self._batch and self._batch != 1:
            shape[0] = self._batch
        return x.reshape(shape)

    def op_gemm(self, a, at):
        A, B = a[0], a[1]
        C = a[2] if len(a) > 2 else None
        if at.get("transA", 0):
            A = A.t()
        if at.get("transB", 0):
            B = B.t()
        y = A @ B
        alpha = at.get("alpha", 1.0)
        beta = at.get("beta", 1.0)
        if alpha != 1.0:
            y = y * alpha
        if C is not None:
            y = y + (C * beta if beta != 1.0 else C)
        return y

    def op_matmul(self, a, at):
        return torch.matmul(a[0], a[1])

    def op_maxpool(self, a, at):
        x = a[0]
        kernel = list(at["kernel_shape"])
        begins, ends, strides, dil = self._spatial_pads(x, at, kernel)
        if at.get("storage_order", 0):
            raise NotImplementedError("MaxPool storage_order=1")
        ceil = bool(at.get("ceil_mode", 0))
        nd = len(kernel)
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        if begins != ends or any(2 * p > k for p, k in zip(begins, kernel)):
            x = F.pad(x, self._fpad(begins, ends), value=float("-inf"))
            begins = [0] * nd
        return pool(x, kernel, stride=strides, padding=begins, dilation=dil, ceil_mode=ceil)

    def op_avgpool(self, a, at):
        x = a[0]
        kernel = list(at["kernel_shape"])
        begins, ends, strides, dil = self._spatial_pads(x, at, kernel)
        if any(d != 1 for d in dil):
            raise NotImplementedError("AveragePool with dilations")
        ceil = bool(at.get("ceil_mode", 0))
        cip = bool(at.get("count_include_pad", 0))
        nd = len(kernel)
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        if begins == ends and all(2 * p <= k for p, k in zip(begins, kernel)):
            return pool(x, kernel, stride=strides, padding=begins, ceil_mode=ceil,
                        count_include_pad=cip)
        # asymmetric padding: sum over the padded input, divide by the count
        fp = self._fpad(begins, ends)
        xs = F.pad(x, fp)
        s = pool(xs, kernel, stride=strides, padding=0, ceil_mode=ceil, count_include_pad=True)
        if cip:
            return s
        ones = F.pad(torch.ones_like(x[:1, :1]), fp)
        cnt = pool(ones, kernel, stride=strides, padding=0, ceil_mode=ceil, count_include_pad=True)
        return s / cnt

    def op_pad(self, a, at):
        x = a[0]
        mode = at.get("mode", b"constant")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if self.opset < 11:
            pads = list(at["pads"])
            value = at.get("value", 0.0)
        else:
            pads = [int(v) for v in a[1].reshape(-1).tolist()]
            value = 0.0
            if len(a) > 2 and a[2] is not None and a[2].numel() > 0:
                value = float(a[2].reshape(-1)[0])
            if len(a) > 3 and a[3] is not None:
                raise NotImplementedError("Pad with axes input")
        nd = x.dim()
        begins, ends = pads[:nd], pads[nd:]
        if any(p < 0 for p in pads):
            # negative pads crop
            sl = tuple(slice(-b if b < 0 else None, (e if e < 0 else None)) for b, e in zip(begins, ends))
            x = x[sl]
            begins = [max(0, b) for b in begins]
            ends = [max(0, e) for e in ends]
        fp = self._fpad(begins, ends)
        # trim trailing zero pairs so reflect/replicate work on N-2 spatial dims
        while len(fp) >= 2 and fp[-1] == 0 and fp[-2] == 0:
            fp = fp[:-2]
        if not fp:
            return x
        if mode == "constant":
            return F.pad(x, fp, mode="constant", value=value)
        tmode = {"reflect": "reflect", "edge": "replicate"}[mode]
        return F.pad(x, fp, mode=tmode)

    def op_concat(self, a, at):
        return torch.cat([t for t in a if t is not None], dim=at["axis"])

    def op_clip(self, a, at):
        x = a[0]
        if self.opset < 11:
            lo = at.get("min", None)
            hi = at.get("max", None)
        else:
            lo = a[1] if len(a) > 1 else None
            hi = a[2] if len(a) > 2 else None
        if lo is not None:
            x = torch.maximum(x, lo if torch.is_tensor(lo) else torch.tensor(lo, dtype=x.dtype))
        if hi is not None:
            x = torch.minimum(x, hi if torch.is_tensor(hi) else torch.tensor(hi, dtype=x.dtype))
        return x

    def op_softmax(self, a, at):
        x = a[0]
        if self.opset >= 13:
            return torch.softmax(x, dim=at.get("axis", -1))
        axis = at.get("axis", 1)
        if axis < 0:
            axis += x.dim()
        shp = x.shape
        lead = 1
        for s in shp[:axis]:
            lead *= s
        return torch.softmax(x.reshape(lead, -1), dim=1).reshape(shp)

    OPS = {
        "Conv": op_conv,
        "BatchNormalization": op_bn,
        "Relu": op_relu,
        "Add": op_add,
        "Sub": op_sub,
        "Mul": op_mul,
        "Div": op_div,
        "Identity": op_identity,
        "Constant": op_constant,
        "GlobalAveragePool": op_gap,
        "Flatten": op_flatten,
        "Reshape": op_reshape,
        "Gemm": op_gemm,
        "MatMul": op_matmul,
        "MaxPool": op_maxpool,
        "AveragePool": op_avgpool,
        "Pad": op_pad,
        "Concat": op_concat,
        "Clip": op_clip,
        "Softmax": op_softmax,
    }


def load_registered(name, dtype=None, shared=None):
    """OnnxTorchModel for one of the 8 shared models, with the right mean/std."""
    path, mean, std = refcommon.model_info(name, shared)
    return OnnxTorchModel(path, mean=mean, std=std, dtype=dtype)


# ----------------------------------------------------------------------------
# onnxruntime side (no torch)
# ----------------------------------------------------------------------------

def ort_logits(path, x, mean=None, std=None):
    """Logits from onnxruntime; fixed-batch graphs are run one image at a time."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.asarray(x, np.float32)
    if mean is not None:
        x = ((x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1))
             / np.asarray(std, np.float32).reshape(1, -1, 1, 1)).astype(np.float32)
    fixed = isinstance(inp.shape[0], int)
    if fixed and inp.shape[0] != x.shape[0]:
        outs = [sess.run(None, {inp.name: x[i:i + inp.shape[0]]})[0] for i in range(0, len(x), inp.shape[0])]
        return np.concatenate(outs, 0)
    return sess.run(None, {inp.name: x})[0]


def ort_dump(models, x_path, out_dir, shared=None, extra=None):
    """Save onnxruntime logits of each model to OUT_DIR/<name>.ort.npy.

    `extra` maps names to ONNX paths of synthetic graphs (no mean/std)."""
    x = np.load(x_path)
    for name in models:
        path, mean, std = refcommon.model_info(name, shared)
        np.save(os.path.join(out_dir, name + ".ort.npy"), ort_logits(path, x, mean, std))
    for name, path in (extra or {}).items():
        xe = np.load(os.path.join(out_dir, name + ".x.npy"))
        np.save(os.path.join(out_dir, name + ".ort.npy"), ort_logits(path, xe))


def synthetic_op_graphs(out_dir):
    """Two small graphs exercising the ops the shared models don't use
    (MaxPool, AveragePool, Pad, Concat, Clip, Softmax, MatMul, Mul, Constant,
    asymmetric/auto padding), one in opset 13 and one in opset 9 (attribute
    forms of Pad/Clip, legacy Softmax).  Returns {name: (path, x)}."""
    import onnx
    from onnx import helper, TensorProto, numpy_helper
    rng = np.random.RandomState(1)
    out = {}
    for opset in (13, 9):
        inits = [
            numpy_helper.from_array(rng.randn(4, 3, 3, 3).astype(np.float32) * 0.5, "w"),
            numpy_helper.from_array(rng.randn(4).astype(np.float32) * 0.1, "b"),
            numpy_helper.from_array(rng.randn(32, 5).astype(np.float32) * 0.3, "wm"),
            numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        ]
        nodes = []
        if opset >= 11:
            inits += [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64), "pads"),
                      numpy_helper.from_array(np.array(0.25, np.float32), "padv"),
                      numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
                      numpy_helper.from_array(np.array(2.0, np.float32), "hi")]
            nodes.append(helper.make_node("Pad", ["x", "pads", "padv"], ["p"], mode="constant"))
        else:
            nodes.append(helper.make_node("Pad", ["x"], ["p"], mode="constant",
                                          pads=[0, 0, 1, 0, 0, 0, 0, 2], value=0.25))
        nodes += [
            # 9x10 -> SAME_UPPER stride 2 -> 5x5
            helper.make_node("Conv", ["p", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                             auto_pad="SAME_UPPER"),
            helper.make_node("MaxPool", ["c"], ["mp"], kernel_shape=[3, 3], strides=[1, 1],
                             pads=[1, 1, 1, 1]),
            helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[2, 2],
                             pads=[0, 0, 1, 1], count_include_pad=0),
        ]
        if opset >= 11:
            nodes.append(helper.make_node("Clip", ["ap", "lo", "hi"], ["cl"]))
        else:
            nodes.append(helper.make_node("Clip", ["ap"], ["cl"], min=-0.5, max=2.0))
        nodes += [
            helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
                np.array(-1.5, np.float32), "kv")),
            helper.make_node("Mul", ["ap", "k"], ["m"]),
            helper.make_node("Concat", ["cl", "m"], ["cat"], axis=1),     # [N,8,3,3]->
            helper.make_node("AveragePool", ["cat"], ["ap2"], kernel_shape=[2, 2], strides=[1, 1]),
            helper.make_node("Reshape", ["ap2", "shape"], ["flat"]),     # [N,32]
            helper.make_node("MatMul", ["flat", "wm"], ["mm"]),
            helper.make_node("Softmax", ["mm"], ["y"], axis=1),
        ]
        g = helper.make_graph(nodes, "ops%d" % opset,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 7 if opset >= 13 else 4
        onnx.checker.check_model(m)
        path = os.path.join(out_dir, "ops_opset%d.onnx" % opset)
        onnx.save(m, path)
        out["ops_opset%d" % opset] = (path, rng.rand(6, 3, 8, 8).astype(np.float32))
    return out


def _python_with(module, candidates):
    for c in candidates:
        if not c:
            continue
        exe = shutil.which(c) if not os.path.isabs(c) else (c if os.path.exists(c) else None)
        if not exe:
            continue
        r = subprocess.run([exe, "-c", "import %s" % module], capture_output=True)
        if r.returncode == 0:
            return exe
    return None


def ort_python():
    return _python_with("onnxruntime", [os.environ.get("ADAMANT_ORT_PYTHON"), "python3", "python"])


def torch_python():
    return _python_with("torch", [os.environ.get("ADAMANT_TORCH_PYTHON"), "/usr/bin/python3", "python3"])


# ----------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------

def selftest(models, n, tol, shared=None):
    torch.set_num_threads(1)
    paths, images, labels = refcommon.load_cifar10_test(shared)
    # a spread of images: the first n/10 of every class
    k = max(1, -(-n // 10))
    idx = refcommon.first_per_class(paths, labels, k)[:n]
    x = refcommon.to_nchw_float(images[idx])
    with tempfile.TemporaryDirectory(prefix="onnx_torch_selftest_") as tmp:
        x_path = os.path.join(tmp, "x.npy")
        np.save(x_path, x)
        synth = synthetic_op_graphs(tmp)
        for sname, (spath, sx) in synth.items():
            np.save(os.path.join(tmp, sname + ".x.npy"), sx)
        extra = {k: v[0] for k, v in synth.items()}
        have_ort = True
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            have_ort = False
        if have_ort:
            ort_dump(models, x_path, tmp, shared, extra)
        else:
            exe = ort_python()
            if exe is None:
                raise SystemExit("no interpreter with onnxruntime found (set ADAMANT_ORT_PYTHON)")
            cmd = [exe, os.path.abspath(__file__), "--ort-dump", x_path, "--out", tmp,
                   "--models", ",".join(models),
                   "--extra", json.dumps(extra)]
            if shared:
                cmd += ["--shared", shared]
            subprocess.run(cmd, check=True)
        results = []
        ok = True
        print("%-22s %5s %14s %14s %8s %8s" % ("model", "n", "max|f32-ort|", "max|f64-ort|",
                                                  "argmax=", "acc"))
        for name in models:
            ref = np.load(os.path.join(tmp, name + ".ort.npy")).astype(np.float64)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                m32 = load_registered(name, torch.float32, shared)
                l32 = m32(xt).numpy().astype(np.float64)
                m64 = load_registered(name, torch.float64, shared)
                l64 = m64(xt.double()).numpy()
            d32 = float(np.abs(l32 - ref).max())
            d64 = float(np.abs(l64 - ref).max())
            agree = bool((l32.argmax(1) == ref.argmax(1)).all() and (l64.argmax(1) == ref.argmax(1)).all())
            acc = float((ref.argmax(1) == labels[idx]).mean())
            scale = float(np.abs(ref).max())
            good = agree and d32 <= tol * max(1.0, scale) and d64 <= tol * max(1.0, scale)
            ok &= good
            print("%-22s %5d %14.3e %14.3e %8s %8.3f%s" % (name, len(x), d32, d64, agree, acc,
                                                         "" if good else "  FAIL"))
            results.append(dict(model=name, n=len(x), max_abs_dev_f32=d32, max_abs_dev_f64=d64,
                                max_abs_logit=scale, argmax_agree=agree))
        for sname, (spath, sx) in synth.items():
            ref = np.load(os.path.join(tmp, sname + ".ort.npy")).astype(np.float64)
            with torch.no_grad():
                l32 = OnnxTorchModel(spath)(torch.from_numpy(sx)).numpy().astype(np.float64)
                l64 = OnnxTorchModel(spath, dtype=torch.float64)(torch.from_numpy(sx)).numpy()
            d32 = float(np.abs(l32 - ref).max())
            d64 = float(np.abs(l64 - ref).max())
            good = d32 <= tol and d64 <= tol
            ok &= good
            print("%-22s %5d %14.3e %14.3e %8s %8s%s" % (sname, len(sx), d32, d64, "-", "-",
                                                       "" if good else "  FAIL"))
            results.append(dict(model=sname, n=len(sx), max_abs_dev_f32=d32, max_abs_dev_f64=d64))
    print("selftest:", "OK" if ok else "FAILED")
    return ok, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", help="ONNX file to evaluate on a few test images")
    ap.add_argument("--selftest", action="store_true", help="compare with onnxruntime on the shared models")
    ap.add_argument("--models", default=",".join(refcommon.MODELS),
                    help="comma-separated registered models for --selftest/--ort-dump")
    ap.add_argument("--n", type=int, default=20, help="images for --selftest")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs deviation allowed (relative to max |logit| if >1)")
    ap.add_argument("--json", help="write the self-test results here")
    ap.add_argument("--mean", type=float, nargs=3)
    ap.add_argument("--std", type=float, nargs=3)
    ap.add_argument("--shared", help="path of shared/ (default ../shared from the repo root)")
    ap.add_argument("--ort-dump", metavar="X_NPY", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--extra", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]

    if args.ort_dump:
        ort_dump(models, args.ort_dump, args.out, args.shared,
                 json.loads(args.extra) if args.extra else None)
        return 0

    if not HAVE_TORCH:
        exe = torch_python()
        if exe is None:
            raise SystemExit("torch not available; run with Debian's /usr/bin/python3")
        return subprocess.call([exe, os.path.abspath(__file__)] + (argv or sys.argv[1:]))

    torch.set_num_threads(1)
    if args.selftest:
        ok, results = selftest(models, args.n, args.tol, args.shared)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0 if ok else 1

    if not args.model:
        ap.error("give an ONNX file or --selftest")
    paths, images, labels = refcommon.load_cifar10_test(args.shared)
    idx = refcommon.first_per_class(paths, labels, 1)
    x = torch.from_numpy(refcommon.to_nchw_float(images[idx]))
    m = OnnxTorchModel(args.model, mean=args.mean, std=args.std)
    with torch.no_grad():
        z = m(x)
    np.set_printoptions(precision=4, suppress=True, linewidth=150)
    print(z.numpy())
    print("pred", z.argmax(1).tolist(), "labels", labels[idx].tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
