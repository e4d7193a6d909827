#!/usr/bin/env python3
"""forward_agreement.py -- adamant's logits against ONNX Runtime, model by model.

For every shared model (../shared/models/{external,mbn}), the per-domain MBN sets, the merged
single-file models, and torchvision-style ImageNet ResNet-18/50 (random weights, made by
scripts/make_imagenet_resnet.py into /tmp), runs batch 1 and batch 8 through adamant and ONNX
Runtime (per sample for fixed-batch exports) and reports max|adamant - ort| / max|ort|.
Inputs: real CIFAR-10 test images for the CIFAR models, uniform noise for ImageNet models.
Writes benchmarks/results/forward_agreement.{json,md}; exits 1 if any deviation exceeds 1e-4.

Run (pyenv python3, after `make`):  python3 benchmarks/forward_agreement.py [--no-imagenet]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
os.environ.setdefault("ADAMANT_LIBRARY", os.path.join(ROOT, "dist", "lib", "libadamant.so"))
import refcommon  # noqa: E402
import adamant  # noqa: E402

LIMIT = 1e-4


def ort_logits(path, x, mean, std):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if mean is not None:
        x = (x - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    fixed = isinstance(inp.shape[0], int)
    if fixed:
        return np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-imagenet", action="store_true")
    args = ap.parse_args()
    _, images, _ = refcommon.load_cifar10_test()
    cifar = refcommon.to_nchw_float(images[:8])
    rng = np.random.default_rng(0)
    rows = []

    def check(name, model, path, x, mean=None, std=None, domain=None):
        for b in (1, 8):
            xb = np.ascontiguousarray(x[:b])
            got = model.predict(xb, domain=domain)
            ref = ort_logits(path, xb, mean, std)
            dev = float(np.abs(got - ref).max() / np.abs(ref).max())
            rows.append(dict(model=name, batch=b, deviation=dev, ok=dev <= LIMIT))
            print("%-40s batch %d  max rel deviation %.2e %s" % (name, b, dev, "ok" if dev <= LIMIT else "FAIL"), flush=True)

    for stem in refcommon.MODELS:
        path, mean, std = refcommon.model_info(stem)
        check(stem, adamant.load(path, mean=mean, std=std), path, cifar, mean, std)
    mbn = os.path.join(refcommon.shared_dir(), "models", "mbn")
    for depth in (8, 14, 20):
        files = {d: os.path.join(mbn, "mbn_resnet%d.%s.onnx" % (depth, d)) for d in ("clean", "adv")}
        m = adamant.load(files)
        for d in ("clean", "adv"):
            check("mbn_resnet%d {clean,adv} set, domain %s" % (depth, d), m, files[d], cifar, domain=d)
        merged = "/tmp/adamant_merged_resnet%d.onnx" % depth
        m.save(merged)
        check("mbn_resnet%d merged file (ORT: as is)" % depth, adamant.load(merged), merged, cifar)
    if not args.no_imagenet:
        for arch in ("resnet18", "resnet50"):
            path = "/tmp/adamant_%s.onnx" % arch
            if not os.path.exists(path):
                subprocess.check_call([sys.executable, os.path.join(ROOT, "scripts", "make_imagenet_resnet.py"),
                                       "--arch", arch, "--out", path], stdout=subprocess.DEVNULL)
            x = rng.random((8, 3, 224, 224), dtype=np.float32)
            check("ImageNet %s (random weights)" % arch, adamant.load(path), path, x)
    out = os.path.join(ROOT, "benchmarks", "results", "forward_agreement")
    json.dump({"limit": LIMIT, "records": rows}, open(out + ".json", "w"), indent=1)
    with open(out + ".md", "w") as f:
        f.write("| model | batch | max abs diff / max abs logit vs ONNX Runtime |\n|---|---|---|\n")
        for r in rows:
            f.write("| %s | %d | %.2e |\n" % (r["model"], r["batch"], r["deviation"]))
    bad = sum(not r["ok"] for r in rows)
    print("\n%d passed, %d failed" % (len(rows) - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
