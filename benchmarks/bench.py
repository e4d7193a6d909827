#!/usr/bin/env python3
"""bench.py -- adamant vs ONNX Runtime vs PyTorch, side by side, in one run.

What it measures, per model
    * fwd latency    : inference at batch 1 (ms per call);
    * fwd throughput : inference at batch 128 (CIFAR models) or batch 8
                       (ImageNet ResNet-18/50 at 224x224);
    * PGD step       : forward + backward w.r.t. the input (CE loss, per-sample
                       gradients) at batch 128 (CIFAR) / 8 (ImageNet) --
                       adamant `Model.gradient`, PyTorch autograd on the input;
                       ONNX Runtime cannot differentiate: n/a.
    Models: mbn_resnet8/14/20 (BN domain `clean`; latency as depth grows), the
    two external VNN-COMP models (CIFAR mean/std applied by each engine) and
    synthetic torchvision-style ImageNet ResNet-18/50 (random weights, made by
    scripts/make_imagenet_resnet.py into /tmp/adamant_bench/, reused if present).

Engines
    adamant  this repository's library through the Python binding,
             adamant.set_num_threads(T);
    ORT      onnxruntime CPUExecutionProvider, intra_op_num_threads=T,
             inter_op_num_threads=1, default graph optimizations (ORT_ENABLE_ALL).
             The external models declare a fixed batch of 1; ORT gets a copy
             with a symbolic batch (Reshape [1,-1] -> [0,-1]) and the CIFAR
             mean/std as Sub/Div nodes in front, so it batches like the others
             and gets pixel-space input;
    PyTorch  scripts/onnx_torch.py's evaluator in a subprocess
             (benchmarks/_torch_worker.py under Debian's /usr/bin/python3,
             torch 1.13 CPU), torch.set_num_threads(T); inference through
             torch.jit.trace + torch.jit.freeze under no_grad, gradients through
             the traced graph with autograd.

Protocol (the machine is shared and noisy)
    Every measurement is interleaved across engines: round r runs each engine
    once, the engine order rotated by r (A B C, B C A, C A B, ...). Warm-up
    rounds first (also used to size the work); a sample is the mean of
    `inner` back-to-back calls (inner > 1 only for calls shorter than ~15 ms);
    the reported figure is the median over the rounds, with the 25/75 %
    quantiles in the JSON. Headline: RATIOS adamant/ORT and adamant/PyTorch
    (< 1 = adamant faster).

Correctness first
    Before timing, the outputs of the very calls being timed are compared:
    logits of all engines pairwise (max |a-b| / max |b| < 1e-4, same argmax),
    and for the PGD step adamant's per-sample losses (< 1e-4) and input
    gradients against PyTorch, per sample: median difference < 1e-4 and at most
    3 % of the samples (at least 1) above 1e-3 -- a ReLU input within float32
    rounding of 0 may switch sides and change that one sample's gradient. A
    failed check is printed, marked in the outputs and makes the exit status 1.

Writes
    benchmarks/results/bench.json, bench.md, latency_vs_depth.png
    (with --quick: bench_quick.json / bench_quick.md / latency_vs_depth_quick.png,
    so a smoke test does not overwrite a full run; --out-prefix overrides).

Run (pyenv python3, after `make dist`):
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/bench.py            # ~10 min
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/bench.py --quick    # ~1-2 min, CIFAR only
    python3 benchmarks/bench.py --models mbn,resnet18 --threads 1
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
if "ADAMANT_LIBRARY" not in os.environ:
    _default_lib = os.path.join(ROOT, "dist", "lib", "libadamant.so")
    if os.path.exists(_default_lib):
        os.environ["ADAMANT_LIBRARY"] = _default_lib

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import adamant  # noqa: E402
import refcommon  # noqa: E402

TORCH_PYTHON = "/usr/bin/python3"
WORKER = os.path.join(HERE, "_torch_worker.py")
WORK_DIR = "/tmp/adamant_bench"
ENGINES = ("adamant", "ort", "torch")
LOGIT_TOL = 1e-4
GRAD_TOL = 1e-3
# A ReLU whose float32 pre-activation lies within rounding error of 0 can switch
# sides between two correct implementations; that sample's input gradient then
# differs by a whole path (seen: mbn_resnet8 samples 11 and 29, pre-activations
# 2e-8 and 1e-7 against activations ~5; on sample 11 torch float32 itself differs
# from torch float64 by 5e-3). So gradients are compared per sample: the median
# per-sample difference must be < LOGIT_TOL and at most this fraction of the
# samples (at least 1) may exceed GRAD_TOL.
GRAD_OUTLIER_FRACTION = 0.03

# name -> description; "kind" picks batch sizes and inputs.
MODELS = [
    {"name": "mbn_resnet8", "kind": "cifar", "depth": 8, "mbn": True},
    {"name": "mbn_resnet14", "kind": "cifar", "depth": 14, "mbn": True},
    {"name": "mbn_resnet20", "kind": "cifar", "depth": 20, "mbn": True},
    {"name": "cifar10_resnet_2b", "kind": "cifar", "external": True},
    {"name": "cifar10_sri_resnet_a", "kind": "cifar", "external": True},
    {"name": "resnet18", "kind": "imagenet", "arch": "resnet18"},
    {"name": "resnet50", "kind": "imagenet", "arch": "resnet50"},
]

# (config id, what, batch) per model kind
CONFIGS = {
    "cifar": [("fwd_b1", "fwd", 1), ("fwd_b128", "fwd", 128), ("grad_b128", "grad", 128)],
    "imagenet": [("fwd_b1", "fwd", 1), ("fwd_b8", "fwd", 8), ("grad_b8", "grad", 8)],
}
CONFIG_LABEL = {"fwd_b1": "fwd b1 (latency)", "fwd_b128": "fwd b128", "fwd_b8": "fwd b8",
                "grad_b128": "fwd+bwd b128", "grad_b8": "fwd+bwd b8"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def log(*a):
    print(*a, flush=True)


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def rel_diff(a, b):
    """max |a - b| / max |b| (0 when both are zero)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    den = float(np.max(np.abs(b))) if b.size else 0.0
    num = float(np.max(np.abs(a - b))) if a.size else 0.0
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def quantiles(v):
    v = np.asarray(v, np.float64)
    return {"median_ms": float(np.median(v)) * 1e3, "p25_ms": float(np.percentile(v, 25)) * 1e3,
            "p75_ms": float(np.percentile(v, 75)) * 1e3, "min_ms": float(v.min()) * 1e3,
            "rounds": int(v.size)}


# ---------------------------------------------------------------------------
# the PyTorch worker (subprocess)
# ---------------------------------------------------------------------------

class TorchWorker:
    def __init__(self, threads):
        env = dict(os.environ)
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(threads)
        self.p = subprocess.Popen([TORCH_PYTHON, WORKER, "--threads", str(threads)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=None, env=env, text=True, bufsize=1)
        self.info = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("torch worker exited (status %s)" % self.p.poll())
        r = json.loads(line)
        if not r.get("ok"):
            raise RuntimeError("torch worker: %s" % r.get("error"))
        return r

    def call(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        if self.p.poll() is None:
            try:
                self.call(op="quit")
            except Exception:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()


# ---------------------------------------------------------------------------
# models and inputs
# ---------------------------------------------------------------------------

def ort_ready_copy(path, mean, std, out_path):
    """A batch-dynamic copy of `path` for ORT, with mean/std as Sub/Div nodes in front."""
    m = onnx.load(path)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    inp = [i for i in g.input if i.name not in inits][0]
    inp.type.tensor_type.shape.dim[0].ClearField("dim_value")
    inp.type.tensor_type.shape.dim[0].dim_param = "batch"
    for o in g.output:
        if o.type.tensor_type.shape.dim:
            o.type.tensor_type.shape.dim[0].ClearField("dim_value")
            o.type.tensor_type.shape.dim[0].dim_param = "batch"
    del g.value_info[:]
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shp = numpy_helper.to_array(inits[n.input[1]]).copy()
            if shp.size and shp[0] == 1:
                shp[0] = 0  # 0 = copy the batch dimension
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shp.astype(np.int64), n.input[1]))
    if mean is not None:
        raw = "__adm_bench_pixels"
        mid = "__adm_bench_centered"
        for n in g.node:
            for k, name in enumerate(n.input):
                if name == inp.name:
                    n.input[k] = mid + "_n"
        g.initializer.extend([
            numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, -1, 1, 1), "__adm_bench_mean"),
            numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, -1, 1, 1), "__adm_bench_std")])
        pre = [helper.make_node("Sub", [raw, "__adm_bench_mean"], [mid], name="__adm_bench_sub"),
               helper.make_node("Div", [mid, "__adm_bench_std"], [mid + "_n"], name="__adm_bench_div")]
        nodes = pre + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
        inp.name = raw
    onnx.checker.check_model(m)
    onnx.save(m, out_path)
    return out_path


def imagenet_model(arch):
    path = os.path.join(WORK_DIR, "%s.onnx" % arch)
    if not os.path.exists(path):
        log("  generating %s with scripts/make_imagenet_resnet.py ..." % path)
        tmp = path + ".tmp.onnx"
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_imagenet_resnet.py"),
                        "--arch", arch, "--seed", "0", "--out", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


def model_sources(spec):
    """Fills spec with: onnx (file for ORT/torch), ort_onnx, mean, std, adamant loader kwargs."""
    name = spec["name"]
    if spec.get("mbn"):
        d = os.path.join(refcommon.shared_dir(), "models", "mbn")
        spec["onnx"] = os.path.join(d, "%s.clean.onnx" % name)
        spec["ort_onnx"] = spec["onnx"]
        spec["mean"] = spec["std"] = None
        spec["adamant_source"] = {dom: os.path.join(d, "%s.%s.onnx" % (name, dom)) for dom in ("clean", "adv")}
        spec["domain"] = "clean"
    elif spec.get("external"):
        path, mean, std = refcommon.model_info(name)
        spec["onnx"] = path
        spec["mean"], spec["std"] = list(mean), list(std)
        spec["ort_onnx"] = ort_ready_copy(path, mean, std, os.path.join(WORK_DIR, "%s.ort.onnx" % name))
        spec["adamant_source"] = path
        spec["domain"] = None
    else:
        path = imagenet_model(spec["arch"])
        spec["onnx"] = spec["ort_onnx"] = path
        spec["mean"] = spec["std"] = None
        spec["adamant_source"] = path
        spec["domain"] = None
    return spec


_CIFAR = None


def inputs_for(kind, batch):
    """Pixel-space inputs (float32 NCHW) and labels: real CIFAR-10 test images, or
    uniform noise with random labels for the ImageNet models."""
    global _CIFAR
    if kind == "cifar":
        if _CIFAR is None:
            _, images, labels = refcommon.load_cifar10_test()
            _CIFAR = (refcommon.to_nchw_float(images[:128]), labels[:128].astype(np.int64))
        return np.ascontiguousarray(_CIFAR[0][:batch]), np.ascontiguousarray(_CIFAR[1][:batch])
    rng = np.random.RandomState(batch)
    x = rng.uniform(0.0, 1.0, (batch, 3, 224, 224)).astype(np.float32)
    y = rng.randint(0, 1000, batch).astype(np.int64)
    return x, y


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------

def measure(runners, warmup, rounds_min, rounds_max, budget_s, sample_s):
    """Interleaved timing of `runners` = {engine: f(inner) -> seconds per call}.

    Warm-up rounds (interleaved) size `inner` per engine (so one sample lasts
    about sample_s) and the number of rounds (about budget_s in total, within
    [rounds_min, rounds_max]). Returns {engine: stats}, rounds."""
    names = list(runners)
    est = {n: [] for n in names}
    for r in range(warmup):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            est[n].append(runners[n](1))
    per_call = {n: min(v[1:] if len(v) > 1 else v) for n, v in est.items()}
    inner = {n: int(min(50, max(1, math.ceil(sample_s / max(per_call[n], 1e-6))))) if per_call[n] < sample_s
             else 1 for n in names}
    round_s = sum(per_call[n] * inner[n] for n in names)
    rounds = int(min(rounds_max, max(rounds_min, budget_s / max(round_s, 1e-9))))
    samples = {n: [] for n in names}
    for r in range(rounds):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            samples[n].append(runners[n](inner[n]))
    out = {}
    for n in names:
        q = quantiles(samples[n])
        q["inner"] = inner[n]
        out[n] = q
    return out


def timed(f):
    def run(inner):
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        return (time.perf_counter() - t0) / inner
    return run


def bench_model(spec, args, tw, tmp):
    name = spec["name"]
    t_load = time.perf_counter()
    model_sources(spec)
    m = adamant.load(spec["adamant_source"], mean=spec["mean"], std=spec["std"])
    info = m.info()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(spec["ort_onnx"], so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    tw.call(op="load", key=name, path=spec["onnx"], mean=spec["mean"], std=spec["std"])
    domain = spec["domain"]
    rec = {"model": name, "kind": spec["kind"], "depth": spec.get("depth"),
           "onnx": spec["onnx"], "ort_onnx": spec["ort_onnx"],
           "adamant_domain": domain or m.default_domain, "input_shape": list(m.input_shape),
           "parameters": info.get("parameters"), "flops_per_sample": info.get("flops_per_sample"),
           "configs": {}}
    log("\n== %s  (%s, %s params, %.3g GFLOP/image; setup %.1f s)"
        % (name, spec["kind"], info.get("parameters"), (info.get("flops_per_sample") or 0) / 1e9,
           time.perf_counter() - t_load))
    heavy = spec["kind"] == "imagenet"
    for cid, what, batch in CONFIGS[spec["kind"]]:
        x, y = inputs_for(spec["kind"], batch)
        xp = os.path.join(tmp, "%s_%s.x.npy" % (name, cid))
        yp = os.path.join(tmp, "%s_%s.y.npy" % (name, cid))
        op = os.path.join(tmp, "%s_%s.torch.npy" % (name, cid))
        np.save(xp, x)
        np.save(yp, y)
        prep = tw.call(op="prepare", key=name, kind=what, batch=batch, x=xp, y=yp, out=op)
        c = {"what": what, "batch": batch, "torch_mode": prep["mode"]}
        # --- correctness of the exact calls being timed
        if what == "fwd":
            outs = {"adamant": m.predict(x, domain=domain),
                    "ort": sess.run(None, {in_name: x})[0],
                    "torch": np.load(op)}
            pairs = {}
            for a, b in (("adamant", "ort"), ("adamant", "torch"), ("torch", "ort")):
                pairs["%s_vs_%s" % (a, b)] = rel_diff(outs[a], outs[b])
            worst = max(pairs.values())
            argmax_same = all(np.array_equal(outs["adamant"].argmax(1), outs[e].argmax(1)) for e in ("ort", "torch"))
            c["agreement"] = {"logits_max_rel_diff": pairs, "worst": worst, "tolerance": LOGIT_TOL,
                              "argmax_identical": bool(argmax_same),
                              "ok": bool(worst < LOGIT_TOL and argmax_same)}
            runners = {"adamant": timed(lambda: m.predict(x, domain=domain)),
                       "ort": timed(lambda: sess.run(None, {in_name: x})),
                       "torch": lambda inner, b=batch: tw.call(op="run", key=name, kind=what, batch=b, inner=inner)["s"]}
        else:
            la, ga = m.gradient(x, y, domain=domain, loss="ce")
            lt, gt = np.load(op + ".loss.npy"), np.load(op + ".grad.npy")
            dl, dg = rel_diff(la, lt), rel_diff(ga, gt)
            per = np.array([rel_diff(ga[i], gt[i]) for i in range(batch)])
            n_off = int(np.sum(per > GRAD_TOL))
            allowed = max(1, int(math.ceil(GRAD_OUTLIER_FRACTION * batch)))
            cos = float(np.dot(ga.ravel().astype(np.float64), gt.ravel()) /
                        max(1e-300, np.linalg.norm(ga.ravel().astype(np.float64)) * np.linalg.norm(gt.ravel())))
            c["agreement"] = {"loss_max_rel_diff": dl, "grad_max_rel_diff": dg, "grad_cosine": cos,
                              "grad_per_sample_median_rel_diff": float(np.median(per)),
                              "grad_samples_above_tol": n_off, "grad_samples_above_tol_allowed": allowed,
                              "tolerance_loss": LOGIT_TOL, "tolerance_grad": GRAD_TOL,
                              "ok": bool(dl < LOGIT_TOL and np.median(per) < LOGIT_TOL and n_off <= allowed)}
            runners = {"adamant": timed(lambda: m.gradient(x, y, domain=domain, loss="ce")),
                       "torch": lambda inner, b=batch: tw.call(op="run", key=name, kind=what, batch=b, inner=inner)["s"]}
        # --- timing
        if args.quick:
            warmup, rmin, rmax, budget = 2, 5, 7, 1.5
        elif heavy:
            warmup, rmin, rmax, budget = 2, 5, 15, 14.0
        else:
            warmup, rmin, rmax, budget = 3, 9, 40, 6.0
        t0 = time.perf_counter()
        stats = measure(runners, warmup, rmin, rmax, budget, sample_s=0.015)
        c["wall_s"] = round(time.perf_counter() - t0, 2)
        a = stats["adamant"]["median_ms"]
        c["ratio_vs_ort"] = a / stats["ort"]["median_ms"] if "ort" in stats else None
        c["ratio_vs_torch"] = a / stats["torch"]["median_ms"]
        c["engines"] = {e: stats.get(e) for e in ENGINES}  # ort: None for the PGD step
        c["per_image_ms"] = {e: (s["median_ms"] / batch if s else None) for e, s in c["engines"].items()}
        fl = info.get("flops_per_sample")
        if fl and what == "fwd":
            c["gflops"] = {e: (fl * batch / (s["median_ms"] / 1e3) / 1e9 if s else None)
                           for e, s in c["engines"].items()}
        rec["configs"][cid] = c
        log(row_text(name, cid, c))
    tw.call(op="unload", key=name)
    del sess, m
    return rec


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

def fmt_ms(v):
    if v is None:
        return "n/a"
    return "%.3f" % v if v < 1 else ("%.2f" % v if v < 100 else "%.0f" % v)


def fmt_ratio(v):
    return "n/a" if v is None else "%.2fx" % v


def agree_text(c):
    a = c["agreement"]
    if c["what"] == "fwd":
        s = "%.1e" % a["worst"]
    else:
        s = "g med %.0e, %d/%d > %.0e" % (a["grad_per_sample_median_rel_diff"], a["grad_samples_above_tol"],
                                         c["batch"], a["tolerance_grad"])
    return s + ("" if a["ok"] else " FAIL")


HEADER = ("%-21s %-17s %10s %10s %10s   %8s %8s   %s"
          % ("model", "measure", "adamant ms", "ORT ms", "torch ms", "a/ORT", "a/torch", "agree (max rel diff)"))


def row_text(name, cid, c):
    e = c["engines"]
    return ("%-21s %-17s %10s %10s %10s   %8s %8s   %s"
            % (name, CONFIG_LABEL[cid], fmt_ms(e["adamant"]["median_ms"]),
               fmt_ms(e["ort"]["median_ms"] if e.get("ort") else None), fmt_ms(e["torch"]["median_ms"]),
               fmt_ratio(c["ratio_vs_ort"]), fmt_ratio(c["ratio_vs_torch"]), agree_text(c)))


def geomean(v):
    v = [x for x in v if x]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def summary(records):
    """Geometric means of the ratios per measurement kind."""
    out = {}
    for key in ("fwd_b1", "fwd_big", "grad"):
        ro, rt = [], []
        for r in records:
            for cid, c in r["configs"].items():
                k = "fwd_b1" if cid == "fwd_b1" else ("grad" if c["what"] == "grad" else "fwd_big")
                if k == key:
                    ro.append(c["ratio_vs_ort"])
                    rt.append(c["ratio_vs_torch"])
        out[key] = {"geomean_adamant_over_ort": geomean(ro), "geomean_adamant_over_torch": geomean(rt),
                    "n": len(rt)}
    return out


def write_md(path, meta, records, summ, json_name):
    L = []
    L.append("# adamant vs ONNX Runtime vs PyTorch (CPU)\n")
    L.append("Made by `benchmarks/bench.py`%s on %s; raw numbers in `%s`.\n"
             % (" --quick" if meta["quick"] else "", meta["date"], json_name))
    L.append("* machine: %s, %d threads per engine (of %d CPUs); load average at start %s, at end %s"
             % (meta["cpu"], meta["threads"], meta["cpus"], meta["loadavg_start"], meta["loadavg_end"]))
    L.append("* adamant %s: `%s`" % (meta["adamant_version"], meta["backend_info"]))
    L.append("* ONNX Runtime %s (CPU EP, intra_op_num_threads=%d, default graph optimizations)"
             % (meta["onnxruntime"], meta["threads"]))
    t = meta["torch"]
    L.append("* PyTorch %s (Debian, %d threads, BLAS %s, mkldnn %s), ONNX graphs run by "
             "`scripts/onnx_torch.py`; inference jit.trace+freeze under no_grad, gradients via autograd"
             % (t.get("torch"), t.get("threads"), t.get("blas"), t.get("mkldnn")))
    L.append("* medians over interleaved rounds (engine order rotated each round) after warm-up; "
             "ratio < 1 means adamant is faster\n")
    L.append("## Ratios (geometric means)\n")
    L.append("| measure | adamant / ORT | adamant / PyTorch | rows |")
    L.append("|---|---|---|---|")
    names = {"fwd_b1": "inference, batch 1 (latency)", "fwd_big": "inference, batch 128 / 8 (throughput)",
             "grad": "PGD step (fwd+bwd w.r.t. input), batch 128 / 8"}
    for k, v in summ.items():
        L.append("| %s | %s | %s | %d |" % (names[k], fmt_ratio(v["geomean_adamant_over_ort"]),
                                           fmt_ratio(v["geomean_adamant_over_torch"]), v["n"]))
    L.append("\n## Per model\n")
    L.append("| model | measure | adamant / ORT | adamant / PyTorch | adamant ms | ORT ms | PyTorch ms "
             "| adamant ms/image | outputs agree (max rel diff) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        for cid, c in r["configs"].items():
            e = c["engines"]
            a = c["agreement"]
            if c["what"] == "fwd":
                ag = "logits %.1e%s" % (a["worst"], "" if a["ok"] else " **FAIL**")
            else:
                ag = "loss %.1e; grad median %.1e, %d/%d samples > %g (max %.1e)%s" % (
                    a["loss_max_rel_diff"], a["grad_per_sample_median_rel_diff"], a["grad_samples_above_tol"],
                    c["batch"], a["tolerance_grad"], a["grad_max_rel_diff"], "" if a["ok"] else " **FAIL**")
            L.append("| %s | %s | **%s** | **%s** | %s | %s | %s | %s | %s |" % (
                r["model"], CONFIG_LABEL[cid], fmt_ratio(c["ratio_vs_ort"]), fmt_ratio(c["ratio_vs_torch"]),
                fmt_ms(e["adamant"]["median_ms"]), fmt_ms(e["ort"]["median_ms"] if e.get("ort") else None),
                fmt_ms(e["torch"]["median_ms"]), fmt_ms(c["per_image_ms"]["adamant"]), ag))
    L.append("\nORT cannot differentiate, so PGD-step rows have no ORT figure. ImageNet models "
             "(synthetic ResNet-18/50, 224x224, random weights) use batch 8 for throughput and the PGD step; "
             "CIFAR models batch 128. Logits are compared pairwise across the three engines "
             "(max |a-b| / max |b| < %g, identical argmax); losses and input gradients adamant vs PyTorch, "
             "gradients per sample (median < %g, at most %d %% of the samples -- at least 1 -- above %g: "
             "a ReLU input within float32 rounding of 0 may switch sides, changing that sample's gradient).\n"
             % (LOGIT_TOL, LOGIT_TOL, round(100 * GRAD_OUTLIER_FRACTION), GRAD_TOL))
    with open(path, "w") as f:
        f.write("\n".join(L))


def plot(path, records, quick):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mbn = sorted([r for r in records if r["depth"]], key=lambda r: r["depth"])
    if len(mbn) < 1:
        return False
    depths = [r["depth"] for r in mbn]
    panels = [("fwd_b1", "forward, batch 1 (latency)"), ("fwd_b128", "forward, batch 128"),
              ("grad_b128", "forward + backward (PGD step), batch 128")]
    style = {"adamant": ("adamant", "C0", "o"), "ort": ("ONNX Runtime", "C1", "s"), "torch": ("PyTorch", "C2", "^")}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    for ax, (cid, title) in zip(axes, panels):
        for e, (label, col, mk) in style.items():
            ys = [r["configs"][cid]["per_image_ms"].get(e) for r in mbn]
            if any(v is None for v in ys):
                continue
            ax.plot(depths, ys, marker=mk, color=col, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ResNet depth (mbn_resnetD)")
        ax.set_ylabel("ms per image")
        ax.set_xticks(depths)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("CIFAR ResNet-(6n+2), latency per image vs depth (medians%s)" % (", --quick" if quick else ""),
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------

def select_models(args):
    pool = MODELS if not (args.quick and args.models is None) else [m for m in MODELS if m["kind"] == "cifar"]
    if not args.models:
        return [dict(m) for m in pool]
    toks = [t.strip() for t in args.models.split(",") if t.strip()]
    out = []
    for m in pool:
        for t in toks:
            exact = any(t == mm["name"] for mm in MODELS)
            if (exact and t == m["name"]) or (not exact and t in m["name"]):
                out.append(dict(m))
                break
    if not out:
        raise SystemExit("--models %r matches none of: %s" % (args.models, ", ".join(m["name"] for m in pool)))
    return out


def main():
    ap = argparse.ArgumentParser(description="adamant vs ONNX Runtime vs PyTorch benchmark (one run, interleaved)")
    ap.add_argument("--quick", action="store_true", help="few repeats, CIFAR models only (unless --models)")
    ap.add_argument("--threads", type=int, default=None, help="threads per engine (default: all cores)")
    ap.add_argument("--models", default=None,
                    help="comma-separated names or substrings (e.g. mbn,resnet18); default all "
                         "(with --quick: the CIFAR models)")
    ap.add_argument("--out-prefix", default=None,
                    help="output path prefix (default benchmarks/results/bench, or bench_quick with --quick)")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.threads is None:
        args.threads = cpus
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    specs = select_models(args)
    prefix = args.out_prefix or os.path.join(HERE, "results", "bench_quick" if args.quick else "bench")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    os.makedirs(WORK_DIR, exist_ok=True)

    t_start = time.perf_counter()
    adamant.set_num_threads(args.threads)
    binfo = adamant.backend_info()
    log("adamant %s  backend: %s" % (adamant.__version__, binfo))
    log("library: %s" % adamant.LIBRARY_PATH)
    tw = TorchWorker(args.threads)
    log("onnxruntime %s (CPU EP, %d intra-op threads) | torch %s (%d threads, BLAS %s)"
        % (ort.__version__, args.threads, tw.info["torch"], tw.info["threads"], tw.info["blas"]))
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
            "argv": sys.argv[1:], "threads": args.threads, "cpus": cpus, "cpu": cpu_model(),
            "loadavg_start": loadavg(), "adamant_version": adamant.__version__, "backend_info": binfo,
            "adamant_library": adamant.LIBRARY_PATH,
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "onnxruntime": ort.__version__, "torch": tw.info, "python": platform.python_version(),
            "tolerances": {"logits_max_rel_diff": LOGIT_TOL, "loss_max_rel_diff": LOGIT_TOL,
                           "grad_per_sample_median_rel_diff": LOGIT_TOL, "grad_per_sample_rel_diff": GRAD_TOL,
                           "grad_fraction_of_samples_allowed_above": GRAD_OUTLIER_FRACTION},
            "protocol": "per measurement: warm-up rounds, then rounds each running every engine once "
                        "(order rotated per round); sample = mean of `inner` back-to-back calls; "
                        "median over rounds; times measured in the engine's own process"}
    log("models: %s\n" % ", ".join(s["name"] for s in specs))
    log(HEADER)
    records = []
    tmp = tempfile.mkdtemp(prefix="adm_bench_", dir=WORK_DIR)
    try:
        for spec in specs:
            records.append(bench_model(spec, args, tw, tmp))
    finally:
        tw.close()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["loadavg_end"] = loadavg()
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    summ = summary(records)
    failures = [(r["model"], cid) for r in records for cid, c in r["configs"].items() if not c["agreement"]["ok"]]

    log("\n" + HEADER)
    for r in records:
        for cid, c in r["configs"].items():
            log(row_text(r["model"], cid, c))
    log("\ngeometric means of adamant time / other engine time (< 1: adamant faster):")
    for k, v in summ.items():
        log("  %-8s  vs ORT %s   vs torch %s   (%d rows)" % (k, fmt_ratio(v["geomean_adamant_over_ort"]),
                                                         fmt_ratio(v["geomean_adamant_over_torch"]), v["n"]))

    res = {"meta": meta, "summary": summ, "agreement_failures": failures, "models": records}
    with open(prefix + ".json", "w") as f:
        json.dump(res, f, indent=1)
    write_md(prefix + ".md", meta, records, summ, os.path.basename(prefix + ".json"))
    png = os.path.join(os.path.dirname(prefix), "latency_vs_depth%s.png" % ("_quick" if args.quick and not args.out_prefix else ""))
    if args.out_prefix:
        png = prefix + "_latency_vs_depth.png"
    wrote_png = plot(png, records, args.quick)
    log("\nwrote %s.json, %s.md%s  (%.0f s, load average %s -> %s)"
        % (prefix, prefix, (", " + png) if wrote_png else "", meta["wall_s"], meta["loadavg_start"],
           meta["loadavg_end"]))
    if failures:
        log("OUTPUT MISMATCH in: %s" % ", ".join("%s/%s" % f for f in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
