#!/usr/bin/env python3
"""nonlocal_bench.py -- adamant vs ONNX Runtime on ResNets with feature-denoising (non-local)
blocks, as in Xie et al. 2019's ResNet-152-Denoise (a denoising block after each of the four
groups: 1x1 theta/phi embeddings, einsum, softmax over H*W, einsum, 1x1 conv + BN, residual).

The PyTorch definition (bindings/python/tests/robust_models.py: ResNetDenoise) is exported with
random weights to ONNX (opset 17, dynamic batch) under /tmp/adamant_bench/ and reused when present.
Both engines run the same file at batch 1 (224x224) on --threads threads (adamant.set_num_threads,
ORT intra_op_num_threads, inter_op 1, ORT_ENABLE_ALL). Logits are compared first (max |a-b| /
max |b| < 1e-4). Timing follows bench.py's protocol in small: rounds alternate the engines (order
rotated), each sample starts with --settle-ms of untimed calls of its own engine, the figure is
the median over rounds. Also timed: adamant's input gradient (forward + backward, CE loss).

    python3 benchmarks/nonlocal_bench.py --arch resnet152-denoise --rounds 7
    python3 benchmarks/nonlocal_bench.py --arch resnet50-denoise --json out.json
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "bindings", "python"))
sys.path.insert(0, os.path.join(REPO, "bindings", "python", "tests"))
if "ADAMANT_LIBRARY" not in os.environ and os.path.exists(os.path.join(REPO, "dist", "lib", "libadamant.so")):
    os.environ["ADAMANT_LIBRARY"] = os.path.join(REPO, "dist", "lib", "libadamant.so")

ARCHS = {
    "resnet152-denoise": dict(blocks=(3, 8, 36, 3), denoise=True),
    "resnet101-denoise": dict(blocks=(3, 4, 23, 3), denoise=True),
    "resnet50-denoise": dict(blocks=(3, 4, 6, 3), denoise=True),
    "resnet152": dict(blocks=(3, 8, 36, 3), denoise=False),
    "resnet50": dict(blocks=(3, 4, 6, 3), denoise=False),
    "resnext50-32x4d": dict(blocks=(3, 4, 6, 3), denoise=False, groups=32, width=128),
    "resnext101-32x8d": dict(blocks=(3, 4, 23, 3), denoise=False, groups=32, width=256),
    "resnext101-32x8d-denoiseall": dict(blocks=(3, 4, 23, 3), denoise=True, denoise_all=True, embed=False,
                                        softmax=False, groups=32, width=256),
}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        fam = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("cpu family"))
        flags = next(l.split(":", 1)[1] for l in info.splitlines() if l.startswith("flags"))
        return "%s (family %s%s)" % (name, fam, ", avx512" if "avx512f" in flags.split() else "")
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def export(arch, path):
    import torch
    import robust_models as rm
    torch.manual_seed(0)
    model = rm.randomize_bn(rm.ResNetDenoise(**ARCHS[arch]), 0).eval()
    # Small-variance weights keep the 150-layer activations in range (random He init explodes), and
    # the BNs that end a residual branch start small, as the reference code's zero-init ones do.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.5)
            if isinstance(m, rm.Bottleneck):
                m.bn3.weight.mul_(0.1)
            if isinstance(m, rm.Denoise):  # the dot-product version is cubic in its input
                m.bn.weight.mul_(0.1 if m.softmax else 1e-4)
        y = model(torch.rand(1, 3, 224, 224))
        assert torch.isfinite(y).all(), "random weights overflow: logits not finite"
    torch.onnx.export(model, torch.rand(1, 3, 224, 224), path, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="resnet152-denoise")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--settle-ms", type=float, default=150)
    ap.add_argument("--no-gradient", action="store_true", help="skip timing adamant's input gradient")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import adamant
    import onnxruntime as ort

    os.makedirs("/tmp/adamant_bench", exist_ok=True)
    path = "/tmp/adamant_bench/%s.onnx" % args.arch
    if not os.path.exists(path):
        print("exporting %s to %s ..." % (args.arch, path), flush=True)
        export(args.arch, path)

    adamant.set_num_threads(args.threads)
    m = adamant.load(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 3, 224, 224), dtype=np.float32)
    a, b = m.predict(x), sess.run(None, {"x": x})[0]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        sys.exit("non-finite logits (adamant finite: %s, ORT finite: %s); delete %s to re-export"
                 % (np.isfinite(a).all(), np.isfinite(b).all(), path))
    err = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    print("logits: max |adamant - ORT| / max |ORT| = %.2e, argmax agree: %s" % (err, bool((a.argmax(1) == b.argmax(1)).all())))
    if err > 1e-4:
        sys.exit("logits disagree beyond 1e-4")

    y = np.zeros(args.batch, dtype=np.int32)
    engines = {"adamant": lambda: m.predict(x), "ort": lambda: sess.run(None, {"x": x})}
    if not args.no_gradient:
        engines["adamant_grad"] = lambda: m.gradient(x, y, loss="ce")
    for f in engines.values():  # warm-up
        f(); f()
    times = {k: [] for k in engines}
    names = list(engines)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            f = engines[k]
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.settle_ms / 1000:
                f()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    out = {"arch": args.arch, "batch": args.batch, "threads": args.threads, "cpu": cpu_name(),
           "adamant_ms": round(med["adamant"], 2), "ort_ms": round(med["ort"], 2),
           "ratio_adamant_over_ort": round(med["adamant"] / med["ort"], 3), "logit_rel_err": err,
           "rounds": args.rounds, "onnxruntime": ort.__version__}
    if "adamant_grad" in med:
        out["adamant_gradient_ms"] = round(med["adamant_grad"], 2)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
