#!/usr/bin/env python3
"""pgd_agreement.py -- adamant's PGD against the independent PyTorch reference.

Runs adamant (through its Python binding) with exactly the settings of
scripts/pgd_reference.py -- untargeted L-inf PGD, torchattacks semantics,
random start, BN in inference mode, the attack through the evaluated domain --
on the same 1,000 CIFAR-10 test images (the models' `eval_subset`), and
compares with benchmarks/results/pgd_reference_torch.json (made by
scripts/pgd_reference.py under Debian's python3-torch).

Agreement: clean accuracy identical; accuracy under attack within +-1.5 points.
Writes benchmarks/results/pgd_agreement.{json,md} and exits non-zero on a
disagreement.

Run (pyenv python3, after `make`):
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/pgd_agreement.py [--models mbn_resnet8] [--steps 10]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import refcommon  # noqa: E402
import adamant  # noqa: E402

TOLERANCE = 0.015


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--reference", default=os.path.join(ROOT, "benchmarks", "results", "pgd_reference_torch.json"))
    ap.add_argument("--models", default=None, help="comma-separated model stems (e.g. mbn_resnet8,cifar10_resnet_2b)")
    ap.add_argument("--steps", default=None, help="comma-separated step counts (default: all in the reference)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "pgd_agreement"))
    ap.add_argument("--batch-size", type=int, default=250)
    args = ap.parse_args()

    ref = json.load(open(args.reference))
    records = ref["records"] if isinstance(ref, dict) else ref
    subset = json.load(open(os.path.join(ROOT, "Tests", "Fixtures", "cifar10_eval_subset.json")))
    _, images, labels = refcommon.load_cifar10_test()
    idx = np.array(subset["indices"])
    x = refcommon.to_nchw_float(images[idx])
    y = labels[idx]
    wanted_models = set(args.models.split(",")) if args.models else None
    wanted_steps = {int(s) for s in args.steps.split(",")} if args.steps else None
    print(adamant.backend_info())

    rows, out, failures = [], [], 0
    cache = {}
    for r in records:
        stem = r["model"]
        if wanted_models and stem not in wanted_models:
            continue
        if wanted_steps and int(r["steps"]) not in wanted_steps:
            continue
        n = int(r["n"])
        key = stem
        if key not in cache:
            if stem.startswith("mbn_"):
                d = os.path.join(refcommon.shared_dir(), "models", "mbn")
                cache[key] = adamant.load({dom: os.path.join(d, "%s.%s.onnx" % (stem, dom)) for dom in ("clean", "adv")})
            else:
                path, mean, std = refcommon.model_info(stem)
                cache[key] = adamant.load(path, mean=mean, std=std)
        m = cache[key]
        dom = r["domain"] if r["domain"] in m.domains else m.domains[0]
        t0 = time.time()
        res = m.evaluate(x[:n], y[:n], attack="pgd", domains=[dom], batch_size=args.batch_size, progress=False,
                         eps=float(r["eps"]), alpha=float(r["alpha"]), steps=int(r["steps"]), random_start=True,
                         seed=0)[dom]
        secs = time.time() - t0
        dc = res["clean_acc"] - r["clean_acc"]
        dr = res["robust_acc"] - r["robust_acc"]
        ok = abs(dc) < 1e-9 and abs(dr) <= TOLERANCE + 1e-9
        failures += not ok
        row = dict(model=stem, domain=dom, eps=r["eps"], alpha=r["alpha"], steps=r["steps"], n=n,
                   torch_clean=r["clean_acc"], adamant_clean=res["clean_acc"], torch_robust=r["robust_acc"],
                   adamant_robust=res["robust_acc"], diff_points=100 * dr, agree=ok, adamant_seconds=secs,
                   torch_seconds=r.get("seconds"))
        out.append(row)
        line = "%-22s %-7s eps=%.4f PGD-%-3d clean %.1f%% vs %.1f%%  robust %.1f%% vs %.1f%%  (%+.1f pts) %s  %.0fs" % (
            stem, dom, r["eps"], r["steps"], 100 * res["clean_acc"], 100 * r["clean_acc"], 100 * res["robust_acc"],
            100 * r["robust_acc"], 100 * dr, "ok" if ok else "DISAGREE", secs)
        print(line, flush=True)
        rows.append(row)

    with open(args.out + ".json", "w") as f:
        json.dump({"backend": adamant.backend_info(), "tolerance_points": 100 * TOLERANCE, "records": out}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("| model | BN domain | eps | steps | clean (adamant / PyTorch) | PGD acc (adamant / PyTorch) | diff (points) |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| %s | %s | %d/255 | %d | %.1f %% / %.1f %% | %.1f %% / %.1f %% | %+.1f |\n" % (
                r["model"], r["domain"], round(r["eps"] * 255), r["steps"], 100 * r["adamant_clean"],
                100 * r["torch_clean"], 100 * r["adamant_robust"], 100 * r["torch_robust"], r["diff_points"]))
    print("\n%d passed, %d failed" % (len(rows) - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
