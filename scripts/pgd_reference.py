#!/usr/bin/env python3
"""pgd_reference.py -- independent PyTorch PGD reference for adamant.

What it makes
    benchmarks/results/pgd_reference_torch.json: a list of records
    {model, domain, eps, alpha, steps, n, clean_acc, robust_acc, seconds, ...}
    and a printed table.  Also (re)writes Tests/Fixtures/cifar10_eval_subset.json,
    the 1,000 test-image indices/paths/labels of the evaluation subset, so that
    code without torch (adamant's Swift tests) can use exactly the same images.

Settings (the ones adamant uses)
    L-inf PGD with torchattacks semantics, untargeted, BN in inference mode:
        x_adv = clamp(x + U(-eps, eps), 0, 1)                 (random start)
        repeat steps: x_adv += alpha * sign(d/dx_adv sum_i CE(f(x_adv)_i, y_i))
                      x_adv  = clamp(x + clamp(x_adv - x, -eps, eps), 0, 1)
    robust_acc = accuracy of f on the final x_adv (all n images counted).
    Images: the 1,000 CIFAR-10 test images of the models' json `eval_subset`,
        torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:1000]
    indexing the 10,000 test images sorted by path (test/<class>/NNNN.jpg).
    Configs:
        mbn_resnet{8,14,20} x domain {clean, adv} (attacked and evaluated through
            the same domain file): eps=8/255, alpha=2/255, PGD-10 and PGD-50
        external models (CIFAR mean/std applied before the graph):
            eps=2/255, alpha=0.5/255, PGD-10 and PGD-50
    The random start uses torch.manual_seed(--seed) at the start of every config.
    Forward/backward: scripts/onnx_torch.py (torch ops on the ONNX graph), float32.

Interpreter
    Debian's /usr/bin/python3 (python3-torch, python3-onnx, python3-pil;
    python3-tqdm optional for progress bars).  torch.set_num_threads(1).

How to run
    /usr/bin/python3 scripts/pgd_reference.py                    # everything (~1 h on 1 core)
    /usr/bin/python3 scripts/pgd_reference.py --limit 100 --models mbn_resnet8 --steps 10
    nohup /usr/bin/python3 scripts/pgd_reference.py > /tmp/pgd_ref.log 2>&1 &
    Flags: --limit N (first N of the subset), --models a,b (mbn_resnet8 means both
    domains; mbn_resnet8.adv one domain), --steps 10,50, --batch 250, --out FILE.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx_torch import OnnxTorchModel  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None

MBN_EPS, MBN_ALPHA = 8 / 255, 2 / 255
EXT_EPS, EXT_ALPHA = 2 / 255, 0.5 / 255

# (model, domain, registered name, eps, alpha)
CONFIGS = []
for _d in (8, 14, 20):
    for _dom in ("clean", "adv"):
        CONFIGS.append(("mbn_resnet%d" % _d, _dom, "mbn_resnet%d.%s" % (_d, _dom), MBN_EPS, MBN_ALPHA))
for _m in ("cifar10_resnet_2b", "cifar10_sri_resnet_a"):
    CONFIGS.append((_m, "default", _m, EXT_EPS, EXT_ALPHA))


def eval_subset(n_total=10000, n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].tolist()


def pgd(model, x, y, eps, alpha, steps, random_start=True):
    """torchattacks-style L-inf PGD (untargeted). Returns x_adv (detached)."""
    x = x.detach()
    adv = x.clone()
    if random_start:
        adv = adv + torch.empty_like(adv).uniform_(-eps, eps)
        adv = torch.clamp(adv, 0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        adv = torch.clamp(x + delta, 0, 1).detach()
    return adv


def select_configs(spec):
    if not spec:
        return list(CONFIGS)
    want = [s.strip() for s in spec.split(",") if s.strip()]
    out = []
    for c in CONFIGS:
        if any(w == c[0] or w == c[2] for w in want):
            out.append(c)
    unknown = [w for w in want if not any(w == c[0] or w == c[2] for c in CONFIGS)]
    if unknown:
        raise SystemExit("unknown model(s): %s; known: %s" % (unknown, sorted({c[0] for c in CONFIGS} | {c[2] for c in CONFIGS})))
    return out


def print_table(records):
    print()
    print("%-22s %-8s %7s %8s %5s %6s %9s %10s %8s" % ("model", "domain", "eps", "alpha", "steps", "n",
                                                       "clean_acc", "robust_acc", "seconds"))
    for r in records:
        print("%-22s %-8s %7.4f %8.5f %5d %6d %9.3f %10.3f %8.1f" % (
            r["model"], r["domain"], r["eps"], r["alpha"], r["steps"], r["n"],
            r["clean_acc"], r["robust_acc"], r["seconds"]))
    print()


def write_subset_fixture(path, idx, paths, labels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {
        "description": "CIFAR-10 evaluation subset: torch.randperm(10000, "
                       "generator=torch.Generator().manual_seed(0))[:1000] over the test "
                       "images sorted by path (written by scripts/pgd_reference.py)",
        "indices": [int(i) for i in idx],
        "paths": [paths[i] for i in idx],
        "labels": [int(labels[i]) for i in idx],
    }
    with open(path, "w") as f:  # one key per line, lists on one line each
        f.write("{\n" + ",\n".join(" %s: %s" % (json.dumps(k), json.dumps(v))
                                    for k, v in data.items()) + "\n}\n")


def main():
    ap = argparse.ArgumentParser(description="independent PyTorch PGD reference")
    ap.add_argument("--models", default="", help="comma list (default: all 8 configs)")
    ap.add_argument("--steps", default="10,50", help="comma list of PGD step counts")
    ap.add_argument("--limit", type=int, default=1000, help="number of subset images (<=1000)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0, help="random-start seed (per config)")
    ap.add_argument("--no-random-start", action="store_true")
    ap.add_argument("--out", default=os.path.join(refcommon.REPO_ROOT, "benchmarks", "results",
                                                  "pgd_reference_torch.json"))
    ap.add_argument("--subset-out", default=os.path.join(refcommon.REPO_ROOT, "Tests", "Fixtures",
                                                         "cifar10_eval_subset.json"),
                    help="where to write the 1,000-image subset list ('' to skip)")
    ap.add_argument("--shared", help="path of shared/ (default ../shared from the repo root)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    steps_list = [int(s) for s in args.steps.split(",") if s]
    configs = select_configs(args.models)

    paths, images, labels = refcommon.load_cifar10_test(args.shared)
    assert len(paths) == 10000, len(paths)
    idx_all = eval_subset(len(paths), 1000, 0)
    if args.subset_out:
        write_subset_fixture(args.subset_out, idx_all, paths, labels)
    idx = idx_all[:args.limit]
    X = torch.from_numpy(refcommon.to_nchw_float(images[idx]))
    Y = torch.from_numpy(labels[idx])
    n = len(idx)
    print("pgd_reference: %d images, configs=%s, steps=%s, batch=%d, threads=%d"
          % (n, [c[2] for c in configs], steps_list, args.batch, args.threads), flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    records = []
    for model_name, domain, reg, eps, alpha in configs:
        path, mean, std = refcommon.model_info(reg, args.shared)
        model = OnnxTorchModel(path, mean=mean, std=std, dtype=torch.float32)
        # clean accuracy (deterministic, shared by all step counts)
        t0 = time.time()
        correct_clean = 0
        with torch.no_grad():
            for b in range(0, n, args.batch):
                correct_clean += int((model(X[b:b + args.batch]).argmax(1) == Y[b:b + args.batch]).sum())
        clean_acc = correct_clean / n
        print("%s [%s] clean acc %.3f (%.1fs)" % (model_name, domain, clean_acc, time.time() - t0), flush=True)
        for steps in steps_list:
            torch.manual_seed(args.seed)
            t0 = time.time()
            correct_adv = 0
            both = 0
            batches = range(0, n, args.batch)
            it = tqdm(batches, desc="%s.%s PGD-%d" % (model_name, domain, steps), file=sys.stdout,
                      mininterval=30) if tqdm else batches
            for b in it:
                xb, yb = X[b:b + args.batch], Y[b:b + args.batch]
                adv = pgd(model, xb, yb, eps, alpha, steps, random_start=not args.no_random_start)
                with torch.no_grad():
                    ok_adv = model(adv).argmax(1) == yb
                    ok_clean = model(xb).argmax(1) == yb
                correct_adv += int(ok_adv.sum())
                both += int((ok_adv & ok_clean).sum())
                if not tqdm:
                    print("  %s.%s PGD-%d: %d/%d images, %.0fs" % (model_name, domain, steps,
                          min(b + args.batch, n), n, time.time() - t0), flush=True)
            sec = time.time() - t0
            rec = dict(model=model_name, domain=domain, onnx=os.path.basename(path),
                       eps=eps, alpha=alpha, steps=steps, n=n,
                       clean_acc=clean_acc, robust_acc=correct_adv / n,
                       robust_and_clean_acc=both / n, seconds=round(sec, 2),
                       random_start=not args.no_random_start, seed=args.seed,
                       loss="CE summed over batch", norm="Linf",
                       mean=list(mean) if mean else None, std=list(std) if std else None,
                       dtype="float32", threads=args.threads, torch=torch.__version__)
            records.append(rec)
            print("%s [%s] eps=%.4f PGD-%d robust acc %.3f (%.1fs)"
                  % (model_name, domain, eps, steps, rec["robust_acc"], sec), flush=True)
            with open(args.out + ".tmp", "w") as f:
                json.dump(records, f, indent=1)
                f.write("\n")
            os.replace(args.out + ".tmp", args.out)
    print_table(records)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
