#!/usr/bin/env python3
"""depth.py -- cost against depth: adamant vs ONNX Runtime vs PyTorch on synthesized ResNets.

What it measures
    The ImageNet bottleneck ResNet family (--depths, default 50,101,152,200,338,638:
    torchvision-style, 224x224, 1000 classes) and the CIFAR ResNet-(6n+2) family
    (--cifar-depths, default 20,56,110,1202: 32x32, 10 classes), with random seeded
    weights, written once by `adamant synth` into --cache-dir (default
    /tmp/adamant_depth/, reused afterwards). Every engine runs the very same file.
    Per model:
      * forward latency at batch 1 and at the large batch (ImageNet: 8, CIFAR: 128);
      * one PGD step = forward + gradient of the cross-entropy w.r.t. the input, at
        batch 1 and the large batch -- adamant `Model.gradient`, PyTorch autograd on the input
        (the Markdown adds each step's cost against adamant's own forward at that batch);
        ONNX Runtime has no gradients: n/a;
      * forward GFLOP/s = FLOPs per image (adamant's count, as `adamant info`) x batch / time;
      * load time of each engine (file -> ready to run).

Engines (same thread count for all, --threads, default 2)
    adamant  the Python binding (bindings/python) with ADAMANT_LIBRARY (default
             dist/lib/libadamant.so), adamant.set_num_threads(T);
    ORT      onnxruntime CPUExecutionProvider, intra_op_num_threads=T, sequential;
    PyTorch  scripts/onnx_torch.py's evaluator (the network built from the same ONNX
             file with torch ops), run **eagerly** (--torch-mode jit: traced and
             frozen instead) in benchmarks/_torch_worker.py, a subprocess under the
             current interpreter (sys.executable; `import torch` must work),
             torch.set_num_threads(T). OpenMP wait policy (--torch-wait): PASSIVE by
             default -- on a shared 2-vCPU machine libgomp's default spin-waiting made
             eager CIFAR ResNet-8 calls ~150x slower (185 ms vs 1.2 ms at batch 1 while
             another job ran); `default` keeps libgomp's policy, `both` times two
             workers like bench.py and reports the lower median (variant in the JSON).

Protocol
    Outputs are cross-checked first on the exact inputs being timed (logits of
    all engines pairwise, max|a-b|/max|b| < 1e-4; PGD step: adamant's per-sample
    losses vs PyTorch < 1e-4 and the cosine of the input gradients > 0.9999).
    Then measurements are interleaved: each round runs every engine once, the
    order rotated per round; --repeats rounds after one warm-up round; a call
    shorter than 0.1 s is repeated back to back inside a sample (preceded by
    untimed calls of the same engine for 150 ms, so the previous engine's spinning
    pool threads have stopped); the median over rounds is reported.

Writes
    benchmarks/results/depth.{md,csv,json,png} (with --quick: depth_quick.*), or --out-prefix.

Run (from the repository root, after `make` and `pip install -r benchmarks/requirements.txt`):
    python3 benchmarks/depth.py --quick                      # 50,101 and 20,56, 3 repeats
    python3 benchmarks/depth.py                              # the full families (long: ResNet-638 at batch 8)
    python3 benchmarks/depth.py --depths 50,152 --cifar-depths 110 --threads 2 --repeats 5
"""
import argparse
import csv
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench  # noqa: E402  (sets up sys.path and ADAMANT_LIBRARY; reuses its torch worker and helpers)
from bench import TorchWorker, cpu_model, loadavg, log, rel_diff  # noqa: E402

import adamant  # noqa: E402
import onnxruntime as ort  # noqa: E402

LOGIT_TOL = 1e-4
GRAD_MIN_COSINE = 0.9999
ENGINES = ("adamant", "ort", "torch")
LABEL = {"adamant": "adamant", "ort": "ONNX Runtime", "torch": "PyTorch"}


def find_cli(arg):
    for c in (arg, os.environ.get("ADAMANT_CLI"), os.path.join(ROOT, "dist", "bin", "adamant")):
        if c and os.path.exists(c):
            return c
    raise SystemExit("adamant CLI not found: run `make` (dist/bin/adamant), or pass --adamant-cli / ADAMANT_CLI")


def synth(cli, family, depth, seed, cache):
    name = ("resnet%d" if family == "imagenet" else "cifar_resnet%d") % depth
    path = os.path.join(cache, "%s_seed%d.onnx" % (name, seed))
    if not os.path.exists(path):
        tmp = path + ".part%d" % os.getpid()
        flag = "--depth" if family == "imagenet" else "--cifar-depth"
        t0 = time.perf_counter()
        subprocess.run([cli, "synth", flag, str(depth), "--seed", str(seed), "-o", tmp], check=True,
                       stdout=sys.stderr)
        os.replace(tmp, path)
        log("  synthesized %s in %.1f s" % (path, time.perf_counter() - t0))
    return name, path


def measure(runners, repeats, sample_s=0.1):
    """Interleaved timing: {engine: f(inner, prime) -> s per call} -> {engine: [s per round]}.
    One warm-up round sizes `inner` (calls per sample) and whether a sample starts with an
    untimed priming call (calls shorter than 1 s)."""
    names = list(runners)
    per_call = {n: runners[n](1, 0) for n in names}  # warm-up round
    inner = {n: 1 if per_call[n] >= sample_s else int(min(50, math.ceil(sample_s / max(per_call[n], 1e-6))))
             for n in names}
    prime = {n: 1 if per_call[n] < 1.0 else 0 for n in names}
    samples = {n: [] for n in names}
    for r in range(repeats):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            samples[n].append(runners[n](inner[n], prime[n]))
    return samples


# Seconds of untimed calls before a primed sample: bench.py's default (--settle-ms there; why 150 ms:
# the comment at its SETTLE_S).
SETTLE_S = bench.SETTLE_S


def timed(f):
    def run(inner, prime):
        t0 = time.perf_counter()
        for _ in range(prime):
            f()
        while prime and time.perf_counter() - t0 < SETTLE_S:
            f()
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        return (time.perf_counter() - t0) / inner
    return run


def bench_model(family, depth, name, path, args, tws, tmp):
    t0 = time.perf_counter()
    m = adamant.load(path)
    load = {"adamant": time.perf_counter() - t0}
    x1 = np.random.RandomState(0).uniform(0.0, 1.0, (1,) + tuple(m.input_shape)).astype(np.float32)
    t0 = time.perf_counter()
    m.predict(x1)
    first = {"adamant": time.perf_counter() - t0}  # the first inference after loading (batch 1)
    info = m.info()
    flops = info["flops_per_sample"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load["ort"] = time.perf_counter() - t0
    in_name = sess.get_inputs()[0].name
    t0 = time.perf_counter()
    sess.run(None, {in_name: x1})
    first["ort"] = time.perf_counter() - t0
    load["torch"] = min(w.call(op="load", key=name, path=path, mean=None, std=None)["load_s"] for w in tws.values())
    small, large = (1, args.batch) if family == "imagenet" else (1, args.cifar_batch)
    shape = tuple(m.input_shape)
    rec = {"family": family, "model": name, "depth": depth, "onnx": path, "parameters": info["parameters"],
           "flops_per_sample": flops, "file_bytes": os.path.getsize(path),
           "load_s": {e: round(v, 4) for e, v in load.items()},
           "first_run_s": {e: round(v, 4) for e, v in first.items()}, "configs": []}
    log("\n== %s  (%.1fM parameters, %.2f GFLOP/image, file %.0f MB; load: adamant %.2f s, ORT %.2f s, PyTorch %.2f s)"
        % (name, info["parameters"] / 1e6, flops / 1e9, rec["file_bytes"] / 1e6, load["adamant"], load["ort"],
           load["torch"]))
    for what, batch in (("fwd", small), ("fwd", large), ("grad", small), ("grad", large)):
        rng = np.random.RandomState(batch)
        x = rng.uniform(0.0, 1.0, (batch,) + shape).astype(np.float32)
        y = rng.randint(0, m.num_classes, batch).astype(np.int64)
        xp, yp, op = (os.path.join(tmp, "%s_%s%d.%s.npy" % (name, what, batch, s)) for s in ("x", "y", "out"))
        np.save(xp, x)
        np.save(yp, y)
        try:
            preps = [w.call(op="prepare", key=name, kind=what, batch=batch, x=xp, y=yp,
                            out=op + ("" if k == 0 else ".%d" % k), mode=args.torch_mode) for k, w in enumerate(tws.values())]
            torch_ok = True
        except RuntimeError as e:
            # PyTorch's worker died (e.g. killed out of memory: eager autograd keeps every activation):
            # this measure goes on without PyTorch, and a fresh worker serves the next ones.
            log("   PyTorch failed on %s %s b%d (%s; out of memory?): PyTorch n/a for this measure" % (name, what, batch, e))
            for p in list(tws):
                tws[p] = TorchWorker(args.threads, None if p == "default" else p)
                tws[p].call(op="load", key=name, path=path, mean=None, std=None)
            preps, torch_ok = [{"mode": args.torch_mode}], False
        c = {"what": what, "batch": batch, "torch_mode": preps[0]["mode"]}
        torch_runners = {"torch/" + v: (lambda inner, prime, b=batch, wh=what, w=w:
                                        w.call(op="run", key=name, kind=wh, batch=b, inner=inner, prime=prime,
                                               settle=SETTLE_S)["s"])
                         for v, w in tws.items()} if torch_ok else {}
        if what == "fwd":
            outs = {"adamant": m.predict(x), "ort": sess.run(None, {in_name: x})[0]}
            if torch_ok:
                outs["torch"] = np.load(op)
            diffs = {"%s_vs_%s" % (a, b): rel_diff(outs[a], outs[b])
                     for a, b in (("adamant", "ort"), ("adamant", "torch"), ("torch", "ort")) if a in outs and b in outs}
            worst = max(diffs.values())
            c["agreement"] = {"logits_max_rel_diff": diffs, "worst": worst,
                              "finite": bool(all(np.isfinite(v).all() for v in outs.values())),
                              "ok": bool(worst < LOGIT_TOL and all(np.isfinite(v).all() for v in outs.values()))}
            runners = {"adamant": timed(lambda: m.predict(x)), "ort": timed(lambda: sess.run(None, {in_name: x}))}
        elif not torch_ok:
            m.gradient(x, y, loss="ce")
            c["agreement"] = {"worst": 0.0, "ok": True, "note": "no PyTorch reference (PyTorch failed)"}
            runners = {"adamant": timed(lambda: m.gradient(x, y, loss="ce"))}
        else:
            la, ga = m.gradient(x, y, loss="ce")
            lt, gt = np.load(op + ".loss.npy"), np.load(op + ".grad.npy")
            a64, t64 = ga.ravel().astype(np.float64), gt.ravel().astype(np.float64)
            cos = float(np.dot(a64, t64) / max(1e-300, np.linalg.norm(a64) * np.linalg.norm(t64)))
            dl = rel_diff(la, lt)
            c["agreement"] = {"loss_max_rel_diff": dl, "grad_max_rel_diff": rel_diff(ga, gt), "grad_cosine": cos,
                              "worst": dl, "ok": bool(dl < LOGIT_TOL and cos > GRAD_MIN_COSINE)}
            runners = {"adamant": timed(lambda: m.gradient(x, y, loss="ce"))}
        runners.update(torch_runners)
        try:
            samples = measure(runners, args.repeats)
        except RuntimeError as e:
            # A PyTorch worker died while timing (killed out of memory: the timed call holds more than
            # the prepared one): time the others alone, with fresh workers for the next measures.
            log("   PyTorch failed while timing %s %s b%d (%s; out of memory?): PyTorch n/a for this measure"
                % (name, what, batch, e))
            for p in list(tws):
                tws[p] = TorchWorker(args.threads, None if p == "default" else p)
                tws[p].call(op="load", key=name, path=path, mean=None, std=None)
            torch_ok = False
            samples = measure({k: v for k, v in runners.items() if not k.startswith("torch/")}, args.repeats)
        c["samples_ms"] = {e: [round(s * 1e3, 4) for s in v] for e, v in samples.items()}
        med = {e: float(np.median(v)) * 1e3 for e, v in samples.items()}
        c["median_ms"] = {e: med[e] for e in ("adamant", "ort") if e in med}
        if torch_ok:
            variant = min((k for k in med if k.startswith("torch/")), key=lambda k: med[k])
            c["median_ms"]["torch"] = med[variant]
            c["torch_wait_policy"] = variant.split("/", 1)[1]
        c["gflops"] = {e: flops * batch / (t / 1e3) / 1e9 for e, t in c["median_ms"].items()} if what == "fwd" else {}
        rec["configs"].append(c)
        log(row_text(rec, c))
        if not c["agreement"]["ok"]:
            log("   OUTPUT MISMATCH: %s" % json.dumps(c["agreement"]))
    # The step / forward ratio from pairs: a forward and a PGD step (same batch, same input) run back to
    # back, the order swapped every pair, one ratio per pair (the machine's speed drifts between the
    # measures above, minutes apart on the deep models; a pair's two calls are seconds apart).
    del sess
    rec["paired"] = {}
    for batch in (small, large):
        rng = np.random.RandomState(batch)
        x = rng.uniform(0.0, 1.0, (batch,) + shape).astype(np.float32)
        y = rng.randint(0, m.num_classes, batch).astype(np.int64)
        t0 = time.perf_counter()
        m.predict(x)
        t1 = time.perf_counter()
        m.gradient(x, y, loss="ce")
        tf, tg = t1 - t0, time.perf_counter() - t1
        # Short calls in runs of ~20 ms a side; pairs for ~3 s, at least --repeats (3 or more), at most 30.
        inner = max(1, int(0.02 / max(tf, 1e-6)))
        pairs = min(30, max(3, args.repeats, int(3.0 / max(inner * (tf + tg), 1e-6))))
        ratios = []
        for k in range(pairs):
            t = {}
            for what in (("fwd", "grad") if k % 2 == 0 else ("grad", "fwd")):
                t0 = time.perf_counter()
                for _ in range(inner):
                    if what == "fwd":
                        m.predict(x)
                    else:
                        m.gradient(x, y, loss="ce")
                t[what] = time.perf_counter() - t0
            ratios.append(t["grad"] / t["fwd"])
        rec["paired"][str(batch)] = [round(v, 4) for v in ratios]
        log("  %-16s PGD step / forward, b%d, %d pairs: median %.2f (%.2f-%.2f)"
            % (name, batch, len(ratios), float(np.median(ratios)), min(ratios), max(ratios)))
    for w in tws.values():
        w.call(op="unload", key=name)
    del m
    return rec


def config_label(c):
    return ("forward b%d" if c["what"] == "fwd" else "PGD step b%d") % c["batch"]


def fmt_ms(v):
    return "n/a" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)


def fmt_ratio(a, b):
    return "n/a" if a is None or b is None else "%.2f" % (a / b)


def row_text(rec, c):
    ms = c["median_ms"]
    return ("  %-16s %-15s adamant %9s ms  ORT %9s ms  PyTorch %9s ms  | GFLOP/s %s | agree %s"
            % (rec["model"], config_label(c), fmt_ms(ms.get("adamant")), fmt_ms(ms.get("ort")), fmt_ms(ms.get("torch")),
               " / ".join("%.1f" % c["gflops"][e] for e in ENGINES if e in c["gflops"]) or "-",
               "ok" if c["agreement"]["ok"] else "NO"))


MD_HEADER = ["model", "depth", "params", "GFLOP/img", "measure", "adamant ms", "ORT ms", "PyTorch ms",
             "adamant GFLOP/s", "ORT GFLOP/s", "PyTorch GFLOP/s", "adamant/ORT", "adamant/PyTorch", "outputs agree"]


def table_rows(records):
    rows = []
    for r in records:
        for c in r["configs"]:
            ms, g = c["median_ms"], c["gflops"]
            rows.append([r["model"], str(r["depth"]), "%.1fM" % (r["parameters"] / 1e6), "%.2f" % (r["flops_per_sample"] / 1e9),
                         config_label(c), fmt_ms(ms.get("adamant")), fmt_ms(ms.get("ort")), fmt_ms(ms.get("torch")),
                         *["%.1f" % g[e] if e in g else "n/a" for e in ENGINES],
                         fmt_ratio(ms.get("adamant"), ms.get("ort")), fmt_ratio(ms.get("adamant"), ms.get("torch")),
                         "yes" if c["agreement"]["ok"] else "NO (%.1e)" % c["agreement"]["worst"]])
    return rows


def write_md(path, meta, records):
    L = ["# Cost against depth: adamant vs ONNX Runtime vs PyTorch", "",
         "Written by `benchmarks/depth.py` on %s (%s). %d threads per engine, median of %d interleaved rounds "
         "(calls under 1 s: each sample after %g ms of untimed calls of its engine); "
         "ratios < 1 = adamant faster. PyTorch: %s, OpenMP wait policy %s. Synthesized ResNets (random seeded weights, `adamant synth`), "
         "the same ONNX file for every engine. PGD step = forward + input gradient (CE); ONNX Runtime has no gradients."
         % (meta["date"], meta["cpu"], meta["threads"], meta["repeats"], meta.get("settle_ms", 50), meta["torch_mode"],
            "/".join(meta["torch_wait"])), "",
         "| " + " | ".join(MD_HEADER) + " |", "|" + "---|" * len(MD_HEADER)]
    L += ["| " + " | ".join(r) + " |" for r in table_rows(records)]
    L += ["", "A PGD step against adamant's own forward pass (same batch), and against PyTorch's step. \"step / forward\" "
          "divides the medians above; \"paired\" is the median (and range) of the ratios of forward and step calls run "
          "back to back, order swapped every pair, which the machine's drift between measures does not reach:", "",
          "| model | batch | adamant forward ms | adamant PGD step ms | step / forward | step / forward, paired "
          "| PyTorch step ms | adamant step / PyTorch step |",
          "|---|---|---|---|---|---|---|---|"]
    for r in records:
        by = {(c["what"], c["batch"]): c["median_ms"] for c in r["configs"]}
        for b in sorted({c["batch"] for c in r["configs"]}):
            f, g = by.get(("fwd", b), {}), by.get(("grad", b), {})
            pr = r.get("paired", {}).get(str(b))
            paired = "%.2f (%.2f-%.2f, %d pairs)" % (float(np.median(pr)), min(pr), max(pr), len(pr)) if pr else "n/a"
            if "adamant" in f and "adamant" in g:
                L.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                    r["model"], b, fmt_ms(f["adamant"]), fmt_ms(g["adamant"]), fmt_ratio(g["adamant"], f["adamant"]),
                    paired, fmt_ms(g.get("torch")), fmt_ratio(g["adamant"], g.get("torch"))))
    L += ["", "Load time (file -> ready) and the first inference after it (batch 1), seconds; the last two"
          " columns are load + first run and its ratio adamant / ORT:", "",
          "| model | adamant load | ORT load | PyTorch load | adamant first run | ORT first run "
          "| adamant load + first | ORT load + first | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ld, fr = r["load_s"], r.get("first_run_s", {})
        a = ld["adamant"] + fr.get("adamant", 0.0)
        o = ld["ort"] + fr.get("ort", 0.0)
        L.append("| %s | %.2f | %.2f | %.2f | %s | %s | %.2f | %.2f | %.2fx |" % (
            r["model"], ld["adamant"], ld["ort"], ld["torch"],
            "%.3f" % fr["adamant"] if "adamant" in fr else "n/a", "%.3f" % fr["ort"] if "ort" in fr else "n/a",
            a, o, a / o))
    L += ["", "Versions: %s" % meta["versions"], ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_csv(path, records, threads):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["family", "model", "depth", "parameters", "flops_per_sample", "measure", "batch", "engine", "median_ms",
                    "gflops", "load_s", "threads", "outputs_agree"])
        for r in records:
            for c in r["configs"]:
                for e, t in c["median_ms"].items():
                    w.writerow([r["family"], r["model"], r["depth"], r["parameters"], r["flops_per_sample"],
                                "forward" if c["what"] == "fwd" else "pgd_step", c["batch"], e, "%.4f" % t,
                                "%.3f" % c["gflops"][e] if e in c["gflops"] else "", "%.4f" % r["load_s"][e], threads,
                                c["agreement"]["ok"]])


def plot(path, records, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fams = [f for f in ("imagenet", "cifar") if any(r["family"] == f for r in records)]
    style = {"adamant": ("C0", "o"), "ort": ("C1", "s"), "torch": ("C2", "^")}
    fig, axes = plt.subplots(2, len(fams), figsize=(6.5 * len(fams), 8), squeeze=False)
    for j, fam in enumerate(fams):
        rs = sorted([r for r in records if r["family"] == fam], key=lambda r: r["depth"])
        depths = [r["depth"] for r in rs]
        ax, gx = axes[0][j], axes[1][j]
        for ci, ls in ((1, "-"), (2, "--"), (0, ":")):
            for e, (col, mk) in style.items():
                ys = [r["configs"][ci]["median_ms"].get(e) for r in rs]
                if all(v is None for v in ys):
                    continue
                ys = [np.nan if v is None else v for v in ys]  # a gap where an engine has no figure
                ax.plot(depths, ys, ls, marker=mk, color=col, label="%s, %s" % (LABEL[e], config_label(rs[0]["configs"][ci])))
        for e, (col, mk) in style.items():
            ys = [r["configs"][1]["gflops"].get(e) for r in rs]
            if all(v is None for v in ys):
                continue
            ys = [np.nan if v is None else v for v in ys]
            gx.plot(depths, ys, "-", marker=mk, color=col, label="%s, %s" % (LABEL[e], config_label(rs[0]["configs"][1])))
        title = "ImageNet bottleneck ResNet (224x224)" if fam == "imagenet" else "CIFAR ResNet-(6n+2) (32x32)"
        ax.set_title("%s: latency" % title, fontsize=10)
        ax.set_ylabel("ms per call (median)")
        ax.set_yscale("log")
        gx.set_title("%s: forward GFLOP/s" % title, fontsize=10)
        gx.set_ylabel("GFLOP/s")
        gx.set_ylim(bottom=0)
        for a in (ax, gx):
            a.set_xlabel("depth")
            a.set_xticks(depths)
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
    fig.suptitle("Cost against depth, %d threads per engine (PyTorch %s)%s"
                 % (meta["threads"], meta["torch_mode"], ", --quick" if meta["quick"] else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ints(s):
    return [int(v) for v in s.split(",") if v.strip()] if s else []


def main():
    ap = argparse.ArgumentParser(description="cost against depth: adamant vs ONNX Runtime vs PyTorch on synthesized ResNets")
    ap.add_argument("--depths", default=None, help="ImageNet bottleneck depths (default 50,101,152,200,338,638; "
                    "--quick: 50,101; '' for none)")
    ap.add_argument("--cifar-depths", default=None, help="CIFAR ResNet depths (default 20,56,110,1202; --quick: 20,56)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement (default 5; --quick 3)")
    ap.add_argument("--batch", type=int, default=8, help="large batch for ImageNet models (default 8)")
    ap.add_argument("--cifar-batch", type=int, default=128, help="large batch for CIFAR models (default 128)")
    ap.add_argument("--quick", action="store_true", help="small depths, 3 repeats: a smoke test of a few minutes")
    ap.add_argument("--torch-mode", choices=("eager", "jit"), default="eager",
                    help="PyTorch eager (default) or traced+frozen (jit)")
    ap.add_argument("--torch-wait", choices=("passive", "default", "both"), default="passive",
                    help="PyTorch's OpenMP wait policy (default passive; both: two workers, lower median)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthesized weights")
    ap.add_argument("--cache-dir", default="/tmp/adamant_depth", help="where synthesized models are kept")
    ap.add_argument("--adamant-cli", default=None, help="the adamant CLI (default $ADAMANT_CLI, else dist/bin/adamant)")
    ap.add_argument("--out-prefix", default=None, help="default benchmarks/results/depth (depth_quick with --quick)")
    args = ap.parse_args()
    if args.depths is None:
        args.depths = "50,101" if args.quick else "50,101,152,200,338,638"
    if args.cifar_depths is None:
        args.cifar_depths = "20,56" if args.quick else "20,56,110,1202"
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.threads < 1 or args.repeats < 1:
        ap.error("--threads and --repeats must be >= 1")
    cli = find_cli(args.adamant_cli)
    prefix = args.out_prefix or os.path.join(HERE, "results", "depth_quick" if args.quick else "depth")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    os.makedirs(args.cache_dir, exist_ok=True)

    t_start = time.perf_counter()
    adamant.set_num_threads(args.threads)
    policies = {"passive": ["PASSIVE"], "default": ["default"], "both": ["default", "PASSIVE"]}[args.torch_wait]
    tws = {p: TorchWorker(args.threads, None if p == "default" else p) for p in policies}
    tw = tws[policies[0]]
    versions = {"adamant": adamant.__version__, "adamant_library": adamant.LIBRARY_PATH,
                "adamant_backend": adamant.backend_info(), "adamant_cli": cli, "onnxruntime": ort.__version__,
                "torch": tw.info["torch"], "torch_blas": tw.info["blas"], "python": sys.version.split()[0],
                "python_executable": sys.executable}
    log("adamant %s (%s), backend %s" % (adamant.__version__, adamant.LIBRARY_PATH, adamant.backend_info()))
    log("onnxruntime %s | torch %s under %s (OpenMP wait policy %s) | %d threads each"
        % (ort.__version__, tw.info["torch"], sys.executable, " or ".join(policies), args.threads))
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:], "quick": args.quick,
            "threads": args.threads, "repeats": args.repeats, "settle_ms": SETTLE_S * 1000, "torch_mode": args.torch_mode,
            "torch_wait": policies, "seed": args.seed,
            "cpu": cpu_model(), "loadavg_start": loadavg(), "versions": versions}
    jobs = [("imagenet", d) for d in ints(args.depths)] + [("cifar", d) for d in ints(args.cifar_depths)]
    records = []
    tmp = tempfile.mkdtemp(prefix="adm_depth_")
    try:
        for i, (fam, d) in enumerate(jobs):
            log("[%d/%d] %s depth %d" % (i + 1, len(jobs), fam, d))
            name, path = synth(cli, fam, d, args.seed, args.cache_dir)
            records.append(bench_model(fam, d, name, path, args, tws, tmp))
    finally:
        for w in tws.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["loadavg_end"] = loadavg()
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)

    rows = table_rows(records)
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(MD_HEADER)]
    log("\n| " + " | ".join(h.ljust(w) for h, w in zip(MD_HEADER, widths)) + " |")
    log("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        log("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
    with open(prefix + ".json", "w") as f:
        json.dump({"meta": meta, "models": records}, f, indent=1)
    write_md(prefix + ".md", meta, records)
    write_csv(prefix + ".csv", records, args.threads)
    if records:
        plot(prefix + ".png", records, meta)
    log("\nwrote %s.{md,csv,json,png} (%.0f s)" % (prefix, meta["wall_s"]))
    bad = [(r["model"], config_label(c)) for r in records for c in r["configs"] if not c["agreement"]["ok"]]
    if bad:
        log("OUTPUT MISMATCH in: %s" % ", ".join("%s/%s" % b for b in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
