#!/usr/bin/env python3
"""make_grad_fixtures.py -- reference input-gradient fixtures for adamant's tests.

What it makes
    Tests/Fixtures/gradients/<model>.npz for mbn_resnet8.clean, mbn_resnet8.adv,
    cifar10_resnet_2b and cifar10_sri_resnet_a (the last two with the CIFAR-10
    mean/std applied in front of the graph; gradients are w.r.t. the PIXEL-space
    input either way).  Each compressed npz holds:
        x         float32 [8,3,32,32]  pixels in [0,1]: for each class 0..7 the first
                                       test image (by sorted path) that is "kink-safe"
                                       for all four models (see below)
        labels    int64   [8]
        logits    float64 [8,10]
        loss_ce   float64 [8]          per-sample cross-entropy
        grad_ce   float32 [8,3,32,32]  d loss_ce[i] / d x[i]
        loss_cw   float64 [8]          CW margin  max_{j!=y} z_j - z_y
        grad_cw   float32 [8,3,32,32]  d loss_cw[i] / d x[i]
        mean, std float32 [3] or [0]   normalisation applied before the graph (empty if none)
    Only numeric arrays are stored; manifest.json beside them lists the image
    paths, labels, ONNX file (under shared/models) and mean/std per model.
    Gradients are autograd of the SUM of the per-sample losses, so each sample's
    gradient is its own.  Everything is computed in float64 (weights cast to
    double) with scripts/onnx_torch.py; gradients are stored rounded to float32
    (relative rounding error ~6e-8, far below any float32 runtime's error),
    scalars in float64.

Interpreter
    Debian's /usr/bin/python3 (python3-torch, python3-onnx, python3-pil).

How to run
    /usr/bin/python3 scripts/make_grad_fixtures.py [--out Tests/Fixtures/gradients]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx_torch import load_registered  # noqa: E402

FIXTURE_MODELS = ["mbn_resnet8.clean", "mbn_resnet8.adv", "cifar10_resnet_2b", "cifar10_sri_resnet_a"]


def cw_margin(z, y):
    """max_{j != y} z_j - z_y, per sample."""
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf"))
    return other.max(1).values - zy


def kink_margin_ok(model, x, y, relu_tol=1e-6, cw_gap=1e-4):
    """Per-sample bool: far enough from every ReLU and CW-max kink (float64 model).

    Element positions whose ReLU input is below relu_tol for EVERY candidate in x
    are dead units (the external models' hidden FC layer has units with ~1e-8
    weights) and are ignored."""
    with torch.no_grad():
        env = model(x, return_all=True)
        ok = torch.ones(x.shape[0], dtype=torch.bool)
        for n in model.nodes:
            if n.op_type == "Relu":
                v = env[n.input[0]].abs().flatten(1)
                near = v < relu_tol
                dead = near.all(0, keepdim=True)
                ok &= ~(near & ~dead).any(1)
        z = env[model.outputs[0]]
        other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf"))
        top2 = other.topk(2, dim=1).values
        ok &= (top2[:, 0] - top2[:, 1]) > cw_gap
    return ok


def grads_stable(name, x, y, shared, tol=1e-4):
    """Per-sample bool: float32 and float64 gradients agree to tol (relative)."""
    r64 = compute(load_registered(name, torch.float64, shared), x.double(), y)
    r32 = compute(load_registered(name, torch.float32, shared), x.float(), y)
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    for k in ("grad_ce", "grad_cw"):
        d = (r32[k].double() - r64[k]).abs().flatten(1).max(1).values
        ok &= d <= tol * r64[k].abs().flatten(1).max(1).values
    return ok


def pick_images(names, images, labels, shared, per_class=8, candidates=64):
    """For classes 0..per_class-1: the first image (sorted path) safe for all models."""
    chosen = []
    for c in range(per_class):
        cand = np.nonzero(labels == c)[0][:candidates]
        x = torch.from_numpy(refcommon.to_nchw_float(images[cand]))
        y = torch.full((len(cand),), c, dtype=torch.int64)
        ok = torch.ones(len(cand), dtype=torch.bool)
        for name in names:
            ok &= kink_margin_ok(load_registered(name, torch.float64, shared), x.double(), y)
            ok &= grads_stable(name, x, y, shared)
        if not bool(ok.any()):
            raise SystemExit("no kink-safe image among the first %d of class %d" % (candidates, c))
        chosen.append(int(cand[int(torch.nonzero(ok)[0, 0])]))
    return chosen


def compute(model, x, y):
    out = {}
    with torch.no_grad():
        out["logits"] = model(x)
    for name, fn in (("ce", lambda z: F.cross_entropy(z, y, reduction="none")),
                     ("cw", lambda z: cw_margin(z, y))):
        xi = x.clone().requires_grad_(True)
        losses = fn(model(xi))
        grad, = torch.autograd.grad(losses.sum(), xi)
        out["loss_" + name] = losses.detach()
        out["grad_" + name] = grad
    return out


def main():
    ap = argparse.ArgumentParser(description="write gradient fixtures")
    ap.add_argument("--out", default=os.path.join(refcommon.REPO_ROOT, "Tests", "Fixtures", "gradients"))
    ap.add_argument("--models", default=",".join(FIXTURE_MODELS))
    ap.add_argument("--shared", help="path of shared/ (default ../shared from the repo root)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    paths, images, labels = refcommon.load_cifar10_test(args.shared)
    names = [m for m in args.models.split(",") if m]
    idx = pick_images(names, images, labels, args.shared)
    x32 = refcommon.to_nchw_float(images[idx])
    y = torch.from_numpy(labels[idx].astype(np.int64))
    print("images:", [paths[i] for i in idx])

    manifest = dict(
        description="Input-gradient fixtures written by scripts/make_grad_fixtures.py "
                    "(float64 torch reference through scripts/onnx_torch.py). Arrays: x f32 "
                    "[8,3,32,32] pixels in [0,1]; labels i64 [8]; logits f64 [8,10]; loss_ce, "
                    "loss_cw f64 [8]; grad_ce, grad_cw f32 [8,3,32,32] = d loss[i]/d x[i] in "
                    "pixel space; mean, std f32 [3] or [0] (applied before the graph). "
                    "loss_cw = max_{j!=y} z_j - z_y.",
        paths=[paths[i] for i in idx],
        labels=[int(labels[i]) for i in idx],
        models={})
    for name in names:
        path, mean, std = refcommon.model_info(name, args.shared)
        m64 = load_registered(name, torch.float64, args.shared)
        r64 = compute(m64, torch.from_numpy(x32).double(), y)
        # float32 run, only to report how far a float32 implementation lands
        m32 = load_registered(name, torch.float32, args.shared)
        r32 = compute(m32, torch.from_numpy(x32), y)
        dev = {k: float((r32[k].double() - r64[k]).abs().max() / max(1e-12, float(r64[k].abs().max())))
               for k in r64}
        data = dict(
            x=x32,
            labels=labels[idx].astype(np.int64),
            logits=r64["logits"].numpy(),
            loss_ce=r64["loss_ce"].numpy(),
            grad_ce=r64["grad_ce"].numpy().astype(np.float32),
            loss_cw=r64["loss_cw"].numpy(),
            grad_cw=r64["grad_cw"].numpy().astype(np.float32),
            mean=np.asarray(mean if mean else [], np.float32),
            std=np.asarray(std if std else [], np.float32),
        )
        manifest["models"][name] = dict(
            file=name + ".npz",
            onnx=os.path.relpath(path, os.path.join(refcommon.shared_dir(args.shared), "models")),
            mean=list(mean) if mean else [], std=list(std) if std else [])
        fn = os.path.join(args.out, name + ".npz")
        np.savez_compressed(fn, **data)
        pred = r64["logits"].argmax(1).tolist()
        print("%-22s -> %s (%d KB)  pred=%s  loss_ce=%s" % (
            name, os.path.relpath(fn), os.path.getsize(fn) // 1024, pred,
            np.array2string(data["loss_ce"], precision=3)))
        print("   float32-vs-float64 max rel dev: " +
              ", ".join("%s %.1e" % (k, v) for k, v in sorted(dev.items())))
        manifest["models"][name]["torch_float32_max_rel_dev"] = {k: float("%.2g" % v) for k, v in dev.items()}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
