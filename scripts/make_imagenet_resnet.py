#!/usr/bin/env python3
"""make_imagenet_resnet.py -- synthetic torchvision-style ImageNet ResNet ONNX files.

What it makes
    A randomly initialised (seeded, deterministic) ResNet-18 (BasicBlock [2,2,2,2])
    or ResNet-50 (Bottleneck [3,4,6,3], stride on the 3x3 conv as torchvision
    v1.5) with the torchvision layout and parameter names:
        input `input` float32 [batch,3,224,224] (dynamic batch) ->
        [optional Sub/Div ImageNet normalisation, --normalize] ->
        conv1 7x7/2 pad 3 + bn1 + ReLU + MaxPool 3x3/2 pad 1 ->
        layer1..layer4 (1x1 conv + BN downsample shortcuts) ->
        GlobalAveragePool -> Flatten -> Gemm (fc) -> `logits` [batch,1000]
    opset 13.  BatchNormalization nodes are kept, with non-trivial statistics:
    running_mean ~ N(0,0.1), running_var ~ U(0.5,1.5), gamma ~ U(0.5,1.5),
    beta ~ N(0,0.1).  Conv weights are He-initialised (std sqrt(2/fan_in)); the
    last conv of every residual branch is scaled by 1/sqrt(number of blocks)
    so activations don't grow with depth, and the fc layer is calibrated with
    onnxruntime on random inputs so logits have a std of about --logit-std
    (O(1..10)).  No torch, no downloads: numpy + the onnx helper API.

    --domains clean,adv writes one file per domain, OUT.<domain>.onnx, that share
    the graph and every conv/fc weight and differ only in the BatchNormalization
    tensors (named like the shared MBN models: layer1.0.bn1.<domain>.weight ...),
    for testing multi-domain loading on ImageNet-size networks.

    Every written file is checked with onnx.checker and run with onnxruntime
    (output finite, not constant across classes nor across inputs).
    Sizes: ResNet-18 ~47 MB, ResNet-50 ~103 MB per file -- generate, don't commit.

Interpreter
    pyenv `python3` (numpy, onnx, onnxruntime).

How to run
    python3 scripts/make_imagenet_resnet.py --arch resnet18 --out /tmp/resnet18.onnx
    python3 scripts/make_imagenet_resnet.py --arch resnet50 --normalize --seed 1 --out /tmp/r50.onnx
    python3 scripts/make_imagenet_resnet.py --arch resnet18 --domains clean,adv --out /tmp/r18
        # -> /tmp/r18.clean.onnx, /tmp/r18.adv.onnx
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


class Builder:
    """Collects nodes and initializers; BN tensors are generated per domain."""

    def __init__(self, seed, domains, n_blocks):
        self.rng = np.random.RandomState(seed)
        # one independent stream per domain for BN statistics
        self.bn_rngs = {d: np.random.RandomState([seed, 1000 + i]) for i, d in enumerate(domains)}
        self.domains = domains
        self.multi = len(domains) > 1 or domains[0] is not None
        self.nodes = []
        self.shared = {}                      # name -> np array (conv/fc weights, mean/std)
        self.bn = {d: {} for d in domains}    # domain -> {name: array}
        self.res_scale = 1.0 / np.sqrt(n_blocks)

    def conv(self, x, name, cin, cout, k, stride, pad, scale=1.0):
        fan_in = cin * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(cout, cin, k, k)) * scale
        wname = name + ".weight"
        self.shared[wname] = w.astype(np.float32)
        out = "/%s/Conv_output_0" % name.replace(".", "/")
        self.nodes.append(helper.make_node(
            "Conv", [x, wname], [out], name="/%s/Conv" % name.replace(".", "/"),
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
            dilations=[1, 1], group=1))
        return out

    def bnorm(self, x, name, c):
        names = []
        for d in self.domains:
            r = self.bn_rngs[d]
            prefix = name + ("." + d if d else "")
            vals = {
                "weight": r.uniform(0.5, 1.5, c),
                "bias": r.normal(0.0, 0.1, c),
                "running_mean": r.normal(0.0, 0.1, c),
                "running_var": r.uniform(0.5, 1.5, c),
            }
            for k, v in vals.items():
                self.bn[d][prefix + "." + k] = v.astype(np.float32)
            names.append(prefix)
        out = "/%s/BatchNormalization_output_0" % name.replace(".", "/")
        # node inputs are filled in per domain at export time (placeholder prefix)
        self.nodes.append(("BN", x, out, name, "/%s/BatchNormalization" % name.replace(".", "/")))
        return out

    def relu(self, x, name):
        out = "/%s/Relu_output_0" % name.replace(".", "/")
        self.nodes.append(helper.make_node("Relu", [x], [out], name="/%s/Relu" % name.replace(".", "/")))
        return out

    def add(self, a, b, name):
        out = "/%s/Add_output_0" % name.replace(".", "/")
        self.nodes.append(helper.make_node("Add", [a, b], [out], name="/%s/Add" % name.replace(".", "/")))
        return out

    def to_model(self, domain, arch, fc_scale=1.0):
        nodes = []
        for n in self.nodes:
            if isinstance(n, tuple):
                _, x, out, name, nname = n
                prefix = name + ("." + domain if domain else "")
                nodes.append(helper.make_node(
                    "BatchNormalization",
                    [x, prefix + ".weight", prefix + ".bias", prefix + ".running_mean",
                     prefix + ".running_var"], [out], name=nname, epsilon=1e-5, momentum=0.9))
            else:
                nodes.append(n)
        tensors = dict(self.shared)
        if fc_scale != 1.0:
            tensors["fc.weight"] = (tensors["fc.weight"] * fc_scale).astype(np.float32)
            tensors["fc.bias"] = (tensors["fc.bias"] * fc_scale).astype(np.float32)
        tensors.update(self.bn[domain])
        inits = [numpy_helper.from_array(v, k) for k, v in tensors.items()]
        graph = helper.make_graph(
            nodes, "%s%s" % (arch, "_" + domain if domain else ""),
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
            inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="adamant-make_imagenet_resnet")
        model.ir_version = 7
        return model


def build(arch, seed, normalize, domains):
    kind, layers = ARCHS[arch]
    b = Builder(seed, domains, sum(layers))
    x = "input"
    if normalize:
        b.shared["mean"] = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
        b.shared["std"] = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
        b.nodes.append(helper.make_node("Sub", ["input", "mean"], ["/Sub_output_0"], name="/Sub"))
        b.nodes.append(helper.make_node("Div", ["/Sub_output_0", "std"], ["/Div_output_0"], name="/Div"))
        x = "/Div_output_0"
    x = b.conv(x, "conv1", 3, 64, 7, 2, 3)
    x = b.bnorm(x, "bn1", 64)
    x = b.relu(x, "relu")
    mp = "/maxpool/MaxPool_output_0"
    b.nodes.append(helper.make_node("MaxPool", [x], [mp], name="/maxpool/MaxPool",
                                    kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                    ceil_mode=0, dilations=[1, 1]))
    x = mp
    expansion = 1 if kind == "basic" else 4
    cin = 64
    for li, (nblocks, width) in enumerate(zip(layers, [64, 128, 256, 512])):
        for bi in range(nblocks):
            stride = 2 if (bi == 0 and li > 0) else 1
            p = "layer%d.%d" % (li + 1, bi)
            cout = width * expansion
            identity = x
            if kind == "basic":
                h = b.relu(b.bnorm(b.conv(x, p + ".conv1", cin, width, 3, stride, 1), p + ".bn1", width), p + ".relu")
                h = b.bnorm(b.conv(h, p + ".conv2", width, width, 3, 1, 1, scale=b.res_scale), p + ".bn2", width)
            else:
                h = b.relu(b.bnorm(b.conv(x, p + ".conv1", cin, width, 1, 1, 0), p + ".bn1", width), p + ".relu")
                h = b.relu(b.bnorm(b.conv(h, p + ".conv2", width, width, 3, stride, 1), p + ".bn2", width),
                           p + ".relu_1")
                h = b.bnorm(b.conv(h, p + ".conv3", width, cout, 1, 1, 0, scale=b.res_scale), p + ".bn3", cout)
            if stride != 1 or cin != cout:
                identity = b.bnorm(b.conv(x, p + ".downsample.0", cin, cout, 1, stride, 0),
                                   p + ".downsample.1", cout)
            x = b.relu(b.add(h, identity, p), p + ".relu_2")
            cin = cout
    gap = "/avgpool/GlobalAveragePool_output_0"
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], [gap], name="/avgpool/GlobalAveragePool"))
    flat = "/Flatten_output_0"
    b.nodes.append(helper.make_node("Flatten", [gap], [flat], name="/Flatten", axis=1))
    bound = 1.0 / np.sqrt(cin)
    b.shared["fc.weight"] = b.rng.uniform(-bound, bound, (1000, cin)).astype(np.float32)
    b.shared["fc.bias"] = b.rng.uniform(-bound, bound, 1000).astype(np.float32)
    b.nodes.append(helper.make_node("Gemm", [flat, "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm",
                                    alpha=1.0, beta=1.0, transB=1))
    return b


def run_ort(model, x):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def probe_inputs(seed, normalize):
    """Four quite different pixel-space images in [0,1]: uniform noise, a smooth
    colour pattern, a coarse checkerboard and a mid-grey image."""
    r = np.random.RandomState([seed, 7])
    yy, xx = np.meshgrid(np.linspace(0, 1, 224), np.linspace(0, 1, 224), indexing="ij")
    smooth = np.stack([0.5 + 0.5 * np.sin(6 * xx + 1), 0.5 + 0.5 * np.cos(5 * yy),
                       0.5 + 0.5 * np.sin(4 * (xx + yy))])
    checker = np.broadcast_to((((yy * 7).astype(int) + (xx * 7).astype(int)) % 2)[None], (3, 224, 224))
    checker = checker * np.array([0.9, 0.2, 0.6]).reshape(3, 1, 1)
    x = np.stack([r.uniform(0.0, 1.0, (3, 224, 224)), smooth, checker, np.full((3, 224, 224), 0.5)])
    return x.astype(np.float32)


def check(model, x, label):
    onnx.checker.check_model(model)
    z = run_ort(model, x)
    finite = bool(np.isfinite(z).all())
    spread = float(z.std(axis=1).min())
    between = float(min(np.abs(z[i] - z[j]).max() for i in range(len(z)) for j in range(i)))
    ok = finite and spread > 1e-3 and between > 1e-3
    print("  %s: logits %s, std over classes %.3f, |z|max %.2f, min over input pairs of max |zi-zj| %.3f, argmax %s -> %s"
          % (label, list(z.shape), spread, float(np.abs(z).max()), between, z.argmax(1).tolist(),
             "OK" if ok else "FAILED"))
    return ok, z


def main():
    ap = argparse.ArgumentParser(description="write a synthetic ImageNet ResNet ONNX file")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="resnet18")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--normalize", action="store_true", help="put ImageNet Sub/Div inside the graph")
    ap.add_argument("--domains", default="", help="e.g. clean,adv: one file per BN domain")
    ap.add_argument("--logit-std", type=float, default=3.0, help="target std of the logits")
    ap.add_argument("--out", required=True, help="output .onnx (with --domains: stem; .<domain>.onnx added)")
    args = ap.parse_args()

    domains = [d for d in args.domains.split(",") if d] or [None]
    if len(set(domains)) != len(domains):
        ap.error("duplicate domain names")
    b = build(args.arch, args.seed, args.normalize, domains)
    x = probe_inputs(args.seed, args.normalize)
    # calibrate the fc scale on the first domain so logits are O(1..10)
    z = run_ort(b.to_model(domains[0], args.arch), x)
    scale = args.logit_std / max(1e-12, float(z.std()))
    print("%s seed=%d normalize=%s: raw logit std %.4g, fc scaled by %.4g"
          % (args.arch, args.seed, args.normalize, float(z.std()), scale))

    ok_all = True
    outs = []
    stem = args.out[:-5] if args.out.endswith(".onnx") else args.out
    for d in domains:
        model = b.to_model(d, args.arch, fc_scale=scale)
        path = args.out if d is None else "%s.%s.onnx" % (stem, d)
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        onnx.save(model, path)
        ok, _ = check(onnx.load(path), x, "%s (%.1f MB)" % (path, os.path.getsize(path) / 1e6))
        ok_all &= ok
        outs.append(path)
    if len(outs) > 1:
        # sanity: the domain files differ only in BatchNormalization tensors
        ms = [onnx.load(p) for p in outs]
        bn_inputs = [{i for n in m.graph.node if n.op_type == "BatchNormalization" for i in n.input[1:]}
                     for m in ms]
        other = [{t.name: numpy_helper.to_array(t).tobytes() for t in m.graph.initializer if t.name not in bn}
                 for m, bn in zip(ms, bn_inputs)]
        same = all(o == other[0] for o in other[1:])
        ops = [[n.op_type for n in m.graph.node] for m in ms]
        same &= all(o == ops[0] for o in ops[1:])
        print("  domain files share graph and non-BN weights:", "OK" if same else "FAILED")
        ok_all &= same
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
