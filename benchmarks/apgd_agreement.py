#!/usr/bin/env python3
"""apgd_agreement.py -- adamant's APGD against torchattacks' APGD / APGDT.

The PyTorch side runs torchattacks 3.5.1 (`pip install torchattacks`) on the
ONNX models through scripts/onnx_torch.py's independent evaluator (torch ops on
the ONNX graph, BN in inference mode); adamant runs through its Python binding.
Same models, images, eps, steps and restarts:

    APGD-CE   torchattacks.APGD(norm="Linf", loss="ce", n_restarts=R, seed=0)
              vs Model.apgd(loss="ce")
    APGD-T    torchattacks.APGDT(norm="Linf", n_classes=10, n_restarts=R, seed=0)
              (targeted DLR over the 9 most likely wrong classes)
              vs Model.apgd(loss="dlr", targeted="top-k", n_target_classes=9)
    AA-lite   a sample counts as robust when it survives both (the AND of the two
              runs above; adamant's Model.autoattack_lite gives exactly that set, as
              it draws the same random starts -- --check-lite runs it and checks)

Rows: mbn_resnet{8,14,20} x BN domain {clean, adv} at eps 8/255, and the
external models (CIFAR-10 mean/std before the graph) at eps 2/255, as in
pgd_agreement.py. Images: the first --n of the models' 1,000-image evaluation
subset (Tests/Fixtures/cifar10_eval_subset.json) of ../shared's CIFAR-10 test set.

Agreement: clean accuracy identical; each robust accuracy within +-1.5 points.
The torch results are cached per row in --reference (reused unless
--rerun-torch), adamant's per row in --out.json (reused unless --rerun-adamant),
so rows can be run in parts. Writes --out.{json,md} and exits non-zero on a disagreement.

Run (pyenv python3 with torch + torchattacks, after `make`):
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/apgd_agreement.py [--n 500] [--steps 10]
        [--rows mbn_resnet8.adv,cifar10_resnet_2b] [--torch-only] [--adamant-only]
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

TOLERANCE = 0.015
MBN_EPS, EXT_EPS = 8 / 255, 2 / 255

ROWS = [("mbn_resnet%d" % d, dom, MBN_EPS) for d in (8, 14, 20) for dom in ("clean", "adv")]
ROWS += [(m, "default", EXT_EPS) for m in ("cifar10_resnet_2b", "cifar10_sri_resnet_a")]


def row_key(model, dom):
    return model if dom == "default" else "%s.%s" % (model, dom)


def load_images(n):
    subset = json.load(open(os.path.join(ROOT, "Tests", "Fixtures", "cifar10_eval_subset.json")))
    _, images, labels = refcommon.load_cifar10_test()
    idx = np.array(subset["indices"])[:n]
    return refcommon.to_nchw_float(images[idx]), labels[idx].astype(np.int64)


def torch_row(model, dom, eps, x, y, steps, restarts, batch):
    """torchattacks APGD (CE) and APGDT (DLR) through the ONNX evaluator; per-sample robustness."""
    import torch
    import torchattacks
    from onnx_torch import OnnxTorchModel

    if dom == "default":
        path, mean, std = refcommon.model_info(model)
    else:
        path, mean, std = refcommon.model_info(row_key(model, dom))
    ev = OnnxTorchModel(path, mean=mean, std=std, dtype=torch.float32)

    class Net(torch.nn.Module):  # torchattacks wants an nn.Module with parameters (for its device)
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, t):
            return ev(t)

    net = Net().eval()
    t0 = time.time()
    preds = {"clean": [], "ce": [], "t": []}
    for s in range(0, len(y), batch):
        xb, yb = torch.from_numpy(x[s:s + batch]), torch.from_numpy(y[s:s + batch])
        with torch.no_grad():
            preds["clean"].append(net(xb).argmax(1).numpy())
        ce = torchattacks.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=restarts, seed=0, loss="ce")
        adv = ce(xb, yb)
        with torch.no_grad():
            preds["ce"].append(net(adv).argmax(1).numpy())
        tt = torchattacks.APGDT(net, norm="Linf", eps=eps, steps=steps, n_restarts=restarts, seed=0, n_classes=10)
        adv = tt(xb, yb)
        with torch.no_grad():
            preds["t"].append(net(adv).argmax(1).numpy())
    p = {k: np.concatenate(v) for k, v in preds.items()}
    rob_ce, rob_t = p["ce"] == y, p["t"] == y
    return dict(model=model, domain=dom, eps=eps, steps=steps, restarts=restarts, n=int(len(y)),
                clean_acc=float(np.mean(p["clean"] == y)), apgd_ce=float(np.mean(rob_ce)),
                apgd_t=float(np.mean(rob_t)), aa_lite=float(np.mean(rob_ce & rob_t)),
                seconds=time.time() - t0, torch=torch.__version__, torchattacks=torchattacks.__version__)


def adamant_row(model, dom, eps, x, y, steps, restarts, cache, check_lite=False):
    import adamant
    if model not in cache:
        if model.startswith("mbn_"):
            d = os.path.join(refcommon.shared_dir(), "models", "mbn")
            cache[model] = adamant.load({k: os.path.join(d, "%s.%s.onnx" % (model, k)) for k in ("clean", "adv")})
        else:
            path, mean, std = refcommon.model_info(model)
            cache[model] = adamant.load(path, mean=mean, std=std)
    m = cache[model]
    d = dom if dom in m.domains else m.domains[0]
    t0 = time.time()
    clean = float(np.mean(m.predict(x, domain=d).argmax(1) == y))
    _, ce = m.apgd(x, y, eps=eps, steps=steps, restarts=restarts, loss="ce", domain=d, seed=0, return_details=True)
    _, tt = m.apgd(x, y, eps=eps, steps=steps, restarts=restarts, loss="dlr", targeted="top-k", n_target_classes=9,
                   domain=d, seed=0, return_details=True)
    # Model.autoattack_lite draws the same random starts, so its robust set is exactly this AND
    # (test_apgd.py checks it); --check-lite runs it too.
    aa = float(np.mean((ce["predictions"] == y) & (tt["predictions"] == y)))
    if check_lite:
        lite = m.autoattack_lite(x, y, eps=eps, steps=steps, restarts=restarts, n_target_classes=9, domain=d, seed=0)
        assert abs(lite["robust_acc"] - aa) < 1e-12, (lite, aa)
    return dict(clean_acc=clean, apgd_ce=float(np.mean(ce["predictions"] == y)),
                apgd_t=float(np.mean(tt["predictions"] == y)), aa_lite=aa, seconds=time.time() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--n", type=int, default=500, help="images (first n of the evaluation subset)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--rows", default=None, help="comma-separated: mbn_resnet8 (both domains), mbn_resnet8.adv, cifar10_resnet_2b")
    ap.add_argument("--reference", default=os.path.join(ROOT, "benchmarks", "results", "apgd_reference_torch.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "apgd_agreement"))
    ap.add_argument("--torch-only", action="store_true", help="fill the torch cache and stop")
    ap.add_argument("--adamant-only", action="store_true", help="only rows with cached torch results")
    ap.add_argument("--rerun-torch", action="store_true", help="recompute cached torch rows")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=250, help="torch batch size")
    ap.add_argument("--no-write", action="store_true", help="print only (for tests)")
    ap.add_argument("--rerun-adamant", action="store_true", help="recompute adamant rows already in --out.json")
    ap.add_argument("--check-lite", action="store_true", help="also run Model.autoattack_lite and check it")
    args = ap.parse_args()

    wanted = set(args.rows.split(",")) if args.rows else None
    rows = [r for r in ROWS if wanted is None or r[0] in wanted or row_key(r[0], r[1]) in wanted]
    x, y = load_images(args.n)
    ref = json.load(open(args.reference)) if os.path.exists(args.reference) else {"records": []}

    def cached(model, dom):
        for r in ref["records"]:
            if (r["model"], r["domain"], r["n"], r["steps"], r["restarts"]) == (model, dom, args.n, args.steps, args.restarts):
                return r
        return None

    for model, dom, eps in rows:
        if args.adamant_only:
            break
        if cached(model, dom) is None or args.rerun_torch:
            import torch
            torch.set_num_threads(args.torch_threads)
            r = torch_row(model, dom, eps, x, y, args.steps, args.restarts, args.batch)
            ref["records"] = [q for q in ref["records"] if not (
                (q["model"], q["domain"], q["n"], q["steps"], q["restarts"]) == (model, dom, args.n, args.steps, args.restarts))]
            ref["records"].append(r)
            if not args.no_write:
                os.makedirs(os.path.dirname(args.reference), exist_ok=True)
                with open(args.reference, "w") as f:
                    json.dump(ref, f, indent=1)
            print("torch %-28s clean %.1f%%  APGD-CE %.1f%%  APGD-T %.1f%%  AA-lite %.1f%%  %.0fs" % (
                row_key(model, dom), 100 * r["clean_acc"], 100 * r["apgd_ce"], 100 * r["apgd_t"], 100 * r["aa_lite"],
                r["seconds"]), flush=True)
    if args.torch_only:
        return 0

    import adamant
    print(adamant.backend_info())
    out, failures, cache = [], 0, {}
    previous = {}
    if not args.no_write and not args.rerun_adamant and os.path.exists(args.out + ".json"):
        for q in json.load(open(args.out + ".json"))["records"]:
            previous[(q["model"], q["domain"], q["n"], q["steps"], q["restarts"])] = q
    for model, dom, eps in rows:
        t = cached(model, dom)
        if t is None:
            print("no torch result for %s (run without --adamant-only)" % row_key(model, dom))
            continue
        q = previous.get((model, dom, args.n, args.steps, args.restarts))
        if q is not None:
            a = {k: q["adamant_" + k] for k in ("clean", "apgd_ce", "apgd_t", "aa_lite")}
            a["clean_acc"] = a.pop("clean")
            a["seconds"] = q["adamant_seconds"]
        else:
            a = adamant_row(model, dom, eps, x, y, args.steps, args.restarts, cache, args.check_lite)
        diffs = {k: 100 * (a[k] - t[k]) for k in ("apgd_ce", "apgd_t", "aa_lite")}
        ok = abs(a["clean_acc"] - t["clean_acc"]) < 1e-9 and all(abs(v) <= 100 * TOLERANCE + 1e-9 for v in diffs.values())
        failures += not ok
        row = dict(model=model, domain=dom, eps=eps, steps=args.steps, restarts=args.restarts, n=args.n,
                   torch_clean=t["clean_acc"], adamant_clean=a["clean_acc"],
                   **{"torch_" + k: t[k] for k in ("apgd_ce", "apgd_t", "aa_lite")},
                   **{"adamant_" + k: a[k] for k in ("apgd_ce", "apgd_t", "aa_lite")},
                   **{"diff_" + k: v for k, v in diffs.items()}, agree=ok,
                   adamant_seconds=a["seconds"], torch_seconds=t["seconds"])
        out.append(row)
        if not args.no_write:
            keep = [v for k, v in previous.items() if (k[0], k[1]) not in {(r["model"], r["domain"]) for r in out}]
            with open(args.out + ".json", "w") as f:
                json.dump({"backend": adamant.backend_info(), "tolerance_points": 100 * TOLERANCE,
                           "records": out + keep}, f, indent=1)
        print("%-28s clean %.1f%% / %.1f%%  APGD-CE %.1f / %.1f (%+.1f)  APGD-T %.1f / %.1f (%+.1f)  AA-lite %.1f / %.1f (%+.1f)  %s  %.0fs vs %.0fs" % (
            row_key(model, dom), 100 * a["clean_acc"], 100 * t["clean_acc"], 100 * a["apgd_ce"], 100 * t["apgd_ce"],
            diffs["apgd_ce"], 100 * a["apgd_t"], 100 * t["apgd_t"], diffs["apgd_t"], 100 * a["aa_lite"],
            100 * t["aa_lite"], diffs["aa_lite"], "ok" if ok else "DISAGREE", a["seconds"], t["seconds"]), flush=True)

    if not args.no_write:
        with open(args.out + ".json", "w") as f:
            json.dump({"backend": adamant.backend_info(), "tolerance_points": 100 * TOLERANCE, "records": out}, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write("| model | BN domain | eps | clean (adamant / PyTorch) | APGD-CE (adamant / torchattacks) | "
                    "APGD-T (adamant / torchattacks) | APGD-CE + APGD-T (adamant / torch) | max diff (points) |\n")
            f.write("|---|---|---|---|---|---|---|---|\n")
            for r in out:
                f.write("| %s | %s | %d/255 | %.1f %% / %.1f %% | %.1f %% / %.1f %% | %.1f %% / %.1f %% | %.1f %% / %.1f %% | %+.1f |\n" % (
                    r["model"], r["domain"], round(r["eps"] * 255), 100 * r["adamant_clean"], 100 * r["torch_clean"],
                    100 * r["adamant_apgd_ce"], 100 * r["torch_apgd_ce"], 100 * r["adamant_apgd_t"], 100 * r["torch_apgd_t"],
                    100 * r["adamant_aa_lite"], 100 * r["torch_aa_lite"],
                    max((r["diff_apgd_ce"], r["diff_apgd_t"], r["diff_aa_lite"]), key=abs)))
    print("\n%d passed, %d failed" % (len(out) - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
