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
             (benchmarks/_torch_worker.py under the current interpreter,
             sys.executable, which must have torch: pip install -r
             benchmarks/requirements.txt), torch.set_num_threads(T); inference through
             torch.jit.trace + torch.jit.freeze under no_grad, gradients through
             the traced graph with autograd. Two workers run: one with
             libgomp's default OpenMP wait policy and one with
             OMP_WAIT_POLICY=PASSIVE; both are timed, interleaved like two
             engines, and the lower median stands for PyTorch (the JSON has
             both). Why: on this 2-vCPU VM, libgomp's spin-waiting makes short
             calls stall for 50-150 ms now and then (mbn_resnet20 at batch 1:
             median 2.2 ms but 6 % of calls > 20 ms, and often the first calls
             after another engine ran), which PASSIVE avoids, while PASSIVE
             costs 25-30 % on batch-128 calls. --no-torch-passive turns the
             second worker off.

Protocol (the machine is shared and noisy)
    Every measurement is interleaved across engines: round r runs each engine
    once, the engine order rotated by r (A B C, B C A, C A B, ...). A sample
    starts with --settle-ms (150) of untimed calls of its engine, so the previous
    engine's spinning pool threads have stopped. Warm-up
    rounds first (also used to size the work); a sample is one untimed priming
    call followed by `inner` timed back-to-back calls (inner > 1 only for calls
    shorter than ~15 ms), so it measures the steady state of that engine;
    the reported figure is the median over the rounds, with the 25/75 %
    quantiles in the JSON. The CPU time other processes used during each
    measurement is recorded (and flagged from 0.25 cores); --wait-quiet S waits
    up to S s for quiet before each measurement and repeats disturbed ones.
    Headline: RATIOS adamant/ORT and adamant/PyTorch (< 1 = adamant faster).

Correctness first
    Before timing, the outputs of the very calls being timed are compared:
    logits of all engines pairwise (max |a-b| / max |b| < 1e-4, same argmax),
    and for the PGD step adamant's per-sample losses (< 1e-4) and input
    gradients against PyTorch: every sample < 5e-2 and cosine of the batch
    gradient > 0.99999 (median and samples above 1e-3 reported) -- a ReLU
    input within float32 rounding of 0 may switch sides and change that one
    sample's gradient along a path, in PyTorch float32 as much as in adamant. A
    failed check is printed, marked in the outputs and makes the exit status 1.

Writes
    benchmarks/results/bench.json, bench.md, latency_vs_depth.png
    (with --quick: bench_quick.json / bench_quick.md / latency_vs_depth_quick.png,
    so a smoke test does not overwrite a full run; --out-prefix overrides).

Run (any python3 with benchmarks/requirements.txt installed, after `make dist`):
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/bench.py            # ~6-7 min
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/bench.py --quick    # ~1 min, CIFAR only
    python3 benchmarks/bench.py --models mbn,resnet18 --threads 1
    python3 benchmarks/bench.py --wait-quiet 30    # shared machine: wait for quiet, redo disturbed rows
    (ADAMANT_LIBRARY defaults to dist/lib/libadamant.so of this tree.)
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

# PyTorch runs in a worker process under this very interpreter (it must have `torch`).
TORCH_PYTHON = sys.executable
WORKER = os.path.join(HERE, "_torch_worker.py")
WORK_DIR = "/tmp/adamant_bench"
ENGINES = ("adamant", "ort", "torch")
LOGIT_TOL = 1e-4
GRAD_TOL = 1e-3
# A ReLU whose float32 pre-activation lies within rounding error of 0 can switch
# sides between two correct implementations; that sample's input gradient then
# differs along one path. Checked against PyTorch float64: mbn_resnet8/20 have
# 1-3 such samples per 128 in adamant and in PyTorch float32 alike
# (pre-activations of 1e-8..1e-7 against activations ~5); the synthetic
# ResNet-50 (millions of ReLUs per 224x224 image) has them in 4-5 of 8 samples,
# up to 1.1e-2 for PyTorch float32 and 1.4e-2 for adamant. So a gradient check
# passes when the losses agree (< LOGIT_TOL), no sample's gradient differs by
# more than GRAD_MAX_TOL (a wrong gradient is off by O(1)) and the cosine of
# the whole batch gradient is > GRAD_MIN_COSINE; the per-sample median and the
# number of samples above GRAD_TOL are reported.
GRAD_MAX_TOL = 0.05
GRAD_MIN_COSINE = 0.99999
# A measurement during which other processes used at least this many cores is flagged.
BUSY_CORES = 0.25
# With --wait-quiet, a measurement disturbed by other processes is repeated (at most this often).
MAX_RETRIES = 2

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


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_busy_s():
    """Seconds of busy CPU time of the whole machine (all CPUs) since boot, and steal time."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return None, None
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0
    return busy / _CLK, steal / _CLK


def _proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / _CLK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


class ForeignLoad:
    """CPU used by processes other than this benchmark (and its torch worker) over an interval,
    in cores: (machine busy time - our busy time) / wall time. Also steal time (VMs)."""

    def __init__(self, pids):
        self.pids = pids

    def snapshot(self):
        busy, steal = _cpu_busy_s()
        own = sum(_proc_cpu_s(p) for p in self.pids)
        return time.perf_counter(), busy, steal, own

    @staticmethod
    def between(a, b):
        if a[1] is None or b[1] is None:
            return None
        wall = max(1e-9, b[0] - a[0])
        return {"foreign_cores": round(max(0.0, (b[1] - a[1]) - (b[3] - a[3])) / wall, 3),
                "steal_cores": round((b[2] - a[2]) / wall, 3)}

    def wait_quiet(self, max_s, threshold=0.25, window=1.0):
        """Waits (up to max_s) for a `window`-second interval with foreign load below threshold."""
        t0 = time.perf_counter()
        while True:
            a = self.snapshot()
            time.sleep(window)
            f = self.between(a, self.snapshot())
            waited = time.perf_counter() - t0
            if f is None or f["foreign_cores"] < threshold or waited >= max_s:
                return round(waited, 1), f


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
    def __init__(self, threads, omp_wait_policy=None):
        env = dict(os.environ)
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(threads)
        env.pop("OMP_WAIT_POLICY", None)
        if omp_wait_policy:
            env["OMP_WAIT_POLICY"] = omp_wait_policy
        self.omp_wait_policy = omp_wait_policy or "default"
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
    [rounds_min, rounds_max]). Every sample starts with one untimed priming call
    of the same engine: on this VM the first call after another engine ran is
    erratic (PyTorch's OpenMP threads can take 50-200 ms to get going again), and
    a benchmark of repeated inference / PGD steps is about the steady state.
    Runners named "engine/variant" are alternatives of one engine, each timed
    like an engine of its own; the variant with the lowest median stands for
    the engine (all variants' figures are kept under "variants").
    Returns {engine: stats}."""
    names = list(runners)
    est = {n: [] for n in names}
    for r in range(warmup):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            est[n].append(runners[n](1))  # (each call to a runner first makes one untimed priming call)
    per_call = {n: min(v) for n, v in est.items()}
    inner = {n: int(min(50, max(1, math.ceil(sample_s / max(per_call[n], 1e-6))))) if per_call[n] < sample_s
             else 1 for n in names}
    # a sample: the priming call and untimed calls for SETTLE_S, then the timed ones
    round_s = sum(max(per_call[n], SETTLE_S) + per_call[n] * inner[n] for n in names)
    rounds = int(min(rounds_max, max(rounds_min, budget_s / max(round_s, 1e-9))))
    samples = {n: [] for n in names}
    for r in range(rounds):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            samples[n].append(runners[n](inner[n]))
    stats = {}
    for n in names:
        q = quantiles(samples[n])
        q["inner"] = inner[n]
        stats[n] = q
    out = {}
    for n in names:  # "engine/variant": the variant with the lowest median stands for the engine
        eng = n.split("/")[0]
        if eng not in out or stats[n]["median_ms"] < out[eng]["median_ms"]:
            out[eng] = dict(stats[n])
            if "/" in n:
                out[eng]["variant"] = n.split("/", 1)[1]
                out[eng]["variants"] = {k.split("/", 1)[1]: v for k, v in stats.items() if k.split("/")[0] == eng}
    return out


# Seconds of untimed calls before each sample (--settle-ms): after every run ONNX Runtime's pool
# thread spins on for 40-60 ms of CPU time (ONNX Runtime 1.32, 2 intra-op threads, read from
# /proc/self/task: 40 ms after an mbn_resnet20 run, 60 ms after a ResNet-50 one), and sharing the
# cores with the engine timed next it takes longer in wall time: on AMD EPYC family 25 model 1,
# 2 threads each, a chain of eight 1x1 layers (28x28, batch 1) that adamant runs in 5-7 ms took it
# 9-13 ms for the first 80 ms after ONNX Runtime had run the same model (adamant's own workers use
# no CPU time after a call; PyTorch's OpenMP threads may spin too). 50 ms, the old default, left
# samples inside that window (bench.py on mbn_resnet20 and cifar10_resnet_2b at batch 1: adamant /
# ORT 1.16x and 1.22x with 50 ms, 1.11x and 1.05x with 200 ms). The engine under test keeps running
# meanwhile: a pause instead would let the (virtual) CPUs go idle and slow every engine's first
# calls after it.
SETTLE_S = 0.15


def timed(f):
    def run(inner, prime=1):
        if prime:  # at least one untimed call, and untimed calls for SETTLE_S
            t0 = time.perf_counter()
            f()
            while time.perf_counter() - t0 < SETTLE_S:
                f()
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        return (time.perf_counter() - t0) / inner
    return run


def bench_model(spec, args, tws, tmp):
    name = spec["name"]
    load_meter = ForeignLoad([os.getpid()] + [w.p.pid for w in tws.values()])
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
    for w in tws.values():
        w.call(op="load", key=name, path=spec["onnx"], mean=spec["mean"], std=spec["std"])
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
        preps = {v: w.call(op="prepare", key=name, kind=what, batch=batch, x=xp, y=yp,
                           out=op if v == "default" else op + "." + v)
                 for v, w in tws.items()}
        c = {"what": what, "batch": batch, "torch_mode": preps["default"]["mode"]}

        def torch_runners(b=batch, w=what):
            return {"torch/omp_wait=%s" % v: (lambda inner, tw=tw: tw.call(op="run", key=name, kind=w, batch=b,
                                                                          inner=inner, prime=1, settle=SETTLE_S)["s"])
                    for v, tw in tws.items()}
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
                       "ort": timed(lambda: sess.run(None, {in_name: x}))}
            runners.update(torch_runners())
        else:
            la, ga = m.gradient(x, y, domain=domain, loss="ce")
            lt, gt = np.load(op + ".loss.npy"), np.load(op + ".grad.npy")
            dl, dg = rel_diff(la, lt), rel_diff(ga, gt)
            per = np.array([rel_diff(ga[i], gt[i]) for i in range(batch)])
            n_off = int(np.sum(per > GRAD_TOL))
            ga64, gt64 = ga.ravel().astype(np.float64), gt.ravel().astype(np.float64)
            cos = float(np.dot(ga64, gt64) / max(1e-300, np.linalg.norm(ga64) * np.linalg.norm(gt64)))
            c["agreement"] = {"loss_max_rel_diff": dl, "grad_max_rel_diff": dg, "grad_cosine": cos,
                              "grad_per_sample_median_rel_diff": float(np.median(per)),
                              "grad_samples_above_tol": n_off, "tolerance_loss": LOGIT_TOL,
                              "tolerance_grad": GRAD_TOL, "tolerance_grad_any_sample": GRAD_MAX_TOL,
                              "tolerance_grad_cosine": GRAD_MIN_COSINE,
                              "ok": bool(dl < LOGIT_TOL and dg < GRAD_MAX_TOL and cos > GRAD_MIN_COSINE)}
            runners = {"adamant": timed(lambda: m.gradient(x, y, domain=domain, loss="ce"))}
            runners.update(torch_runners())
        # --- timing
        if args.quick:
            warmup, rmin, rmax, budget = 2, 5, 7, 1.5
        elif heavy:
            warmup, rmin, rmax, budget = 2, 5, 15, 14.0
        else:
            warmup, rmin, rmax, budget = 3, 9, 40, 8.0
        discarded = []
        for attempt in range(1 + (MAX_RETRIES if args.wait_quiet > 0 else 0)):
            if args.wait_quiet > 0:
                waited, before = load_meter.wait_quiet(args.wait_quiet)
                c["waited_for_quiet_s"] = round(c.get("waited_for_quiet_s", 0) + waited, 1)
                if waited > 1.5:
                    log("  (waited %.0f s for other processes to calm down; foreign load now %s cores)"
                        % (waited, before and before["foreign_cores"]))
            snap = load_meter.snapshot()
            t0 = time.perf_counter()
            stats = measure(runners, warmup, rmin, rmax, budget, sample_s=0.015)
            c["wall_s"] = round(time.perf_counter() - t0, 2)
            c["machine"] = load_meter.between(snap, load_meter.snapshot())
            busy = c["machine"] and c["machine"]["foreign_cores"] >= BUSY_CORES
            if not busy or attempt == MAX_RETRIES or args.wait_quiet <= 0:
                break
            discarded.append(c["machine"]["foreign_cores"])
            log("  (other processes used %.1f cores during %s %s: measuring again)"
                % (c["machine"]["foreign_cores"], name, cid))
        if discarded:
            c["discarded_attempts_foreign_cores"] = discarded
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
    for w in tws.values():
        w.call(op="unload", key=name)
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
        s = "grad max %.0e, %d/%d > %.0e" % (a["grad_max_rel_diff"], a["grad_samples_above_tol"], c["batch"],
                                            a["tolerance_grad"])
    return s + ("" if a["ok"] else " FAIL")


HEADER = ("%-21s %-17s %10s %10s %10s   %8s %8s   %s"
          % ("model", "measure", "adamant ms", "ORT ms", "torch ms", "a/ORT", "a/torch", "agree (max rel diff)"))


def torch_ms_text(t):
    return fmt_ms(t["median_ms"]) + (" P" if t.get("variant", "").endswith("PASSIVE") else "")


def busy_text(c):
    m = c.get("machine")
    if m and m["foreign_cores"] >= BUSY_CORES:
        return "  [other processes: %.1f cores]" % m["foreign_cores"]
    return ""


def row_text(name, cid, c):
    e = c["engines"]
    return ("%-21s %-17s %10s %10s %10s   %8s %8s   %s%s"
            % (name, CONFIG_LABEL[cid], fmt_ms(e["adamant"]["median_ms"]),
               fmt_ms(e["ort"]["median_ms"] if e.get("ort") else None), torch_ms_text(e["torch"]),
               fmt_ratio(c["ratio_vs_ort"]), fmt_ratio(c["ratio_vs_torch"]), agree_text(c), busy_text(c)))


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
             "`scripts/onnx_torch.py`; inference jit.trace+freeze under no_grad, gradients via autograd "
             "through the traced graph; OpenMP wait policy %s, both timed and the lower median reported "
             "(marked `P` in the PyTorch column when PASSIVE won)"
             % (t.get("torch"), t.get("threads"), t.get("blas"), t.get("mkldnn"),
                " / ".join(meta.get("torch_omp_wait_policies", ["default"]))))
    L.append("* medians over interleaved rounds (engine order rotated each round; each sample after %g ms of untimed "
             "calls of its engine, so the previous engine's spinning threads have stopped) after warm-up; "
             "ratio < 1 means adamant is faster\n" % meta.get("settle_ms", 0))
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
             "| adamant ms/image | outputs agree (max rel diff) | other load |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
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
            mach = c.get("machine")
            busy = "n/a" if not mach else ("%.2f%s" % (mach["foreign_cores"],
                                                         " (!)" if mach["foreign_cores"] >= BUSY_CORES else ""))
            L.append("| %s | %s | **%s** | **%s** | %s | %s | %s | %s | %s | %s |" % (
                r["model"], CONFIG_LABEL[cid], fmt_ratio(c["ratio_vs_ort"]), fmt_ratio(c["ratio_vs_torch"]),
                fmt_ms(e["adamant"]["median_ms"]), fmt_ms(e["ort"]["median_ms"] if e.get("ort") else None),
                torch_ms_text(e["torch"]), fmt_ms(c["per_image_ms"]["adamant"]), ag, busy))
    L.append("\nORT cannot differentiate, so PGD-step rows have no ORT figure. ImageNet models "
             "(synthetic ResNet-18/50, 224x224, random weights) use batch 8 for throughput and the PGD step; "
             "CIFAR models batch 128. Logits are compared pairwise across the three engines "
             "(max |a-b| / max |b| < %g, identical argmax); losses and input gradients adamant vs PyTorch, "
             "gradients per sample (every sample < %g, cosine of the batch gradient > %g; the median and the "
             "samples above %g are shown: a ReLU input within float32 rounding of 0 may switch sides, changing "
             "that sample's gradient along one path -- PyTorch float32 does so against float64 as often).\n"
             % (LOGIT_TOL, GRAD_MAX_TOL, GRAD_MIN_COSINE, GRAD_TOL))
    L.append("\"other load\" = CPU cores used by other processes during the measurement "
             "(from /proc/stat minus this benchmark's own processes); (!) marks >= %.2f cores, where the absolute "
             "times, and PyTorch's above all (its OpenMP threads wait on each other when one is descheduled), "
             "are unreliable.\n" % BUSY_CORES)
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
            st = [r["configs"][cid]["engines"][e] for r in mbn]
            b = [r["configs"][cid]["batch"] for r in mbn]
            err = [[(q["median_ms"] - q["p25_ms"]) / n for q, n in zip(st, b)],
                   [(q["p75_ms"] - q["median_ms"]) / n for q, n in zip(st, b)]]
            ax.errorbar(depths, ys, yerr=err, marker=mk, color=col, label=label, capsize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ResNet depth (mbn_resnetD)")
        ax.set_ylabel("ms per image")
        ax.set_xticks(depths)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("CIFAR ResNet-(6n+2): time per image vs depth (median, bars: 25-75 %% of rounds%s)"
                 % (", --quick" if quick else ""),
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
    ap.add_argument("--settle-ms", type=float, default=150, metavar="MS",
                    help="untimed calls of the engine under test before each sample, for at least MS ms, so the "
                         "previous engine's spinning threads have stopped (default 150; 0 = one priming call)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each measurement wait up to S seconds for other processes to use < %.2f "
                         "cores, and repeat (up to %d times) a measurement they disturbed (shared machines); "
                         "the load is recorded either way" % (BUSY_CORES, MAX_RETRIES))
    ap.add_argument("--no-torch-passive", dest="torch_passive", action="store_false",
                    help="only run PyTorch with libgomp's default OpenMP wait policy (by default a second "
                         "worker with OMP_WAIT_POLICY=PASSIVE is timed too and the faster median is reported)")
    ap.add_argument("--out-prefix", default=None,
                    help="output path prefix (default benchmarks/results/bench, or bench_quick with --quick)")
    args = ap.parse_args()
    global SETTLE_S
    SETTLE_S = max(0.0, args.settle_ms) / 1000
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
    tws = {"default": TorchWorker(args.threads)}
    if args.torch_passive:
        tws["PASSIVE"] = TorchWorker(args.threads, "PASSIVE")
    tw = tws["default"]
    log("onnxruntime %s (CPU EP, %d intra-op threads) | torch %s (%d threads, BLAS %s; OpenMP wait policy: %s)"
        % (ort.__version__, args.threads, tw.info["torch"], tw.info["threads"], tw.info["blas"],
           " or ".join(tws)))
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick, "settle_ms": args.settle_ms,
            "argv": sys.argv[1:], "threads": args.threads, "cpus": cpus, "cpu": cpu_model(),
            "loadavg_start": loadavg(), "adamant_version": adamant.__version__, "backend_info": binfo,
            "adamant_library": adamant.LIBRARY_PATH,
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "onnxruntime": ort.__version__, "torch": tw.info, "python": platform.python_version(),
            "torch_omp_wait_policies": list(tws),
            "tolerances": {"logits_max_rel_diff": LOGIT_TOL, "loss_max_rel_diff": LOGIT_TOL,
                           "grad_per_sample_median_rel_diff": LOGIT_TOL, "grad_per_sample_rel_diff": GRAD_TOL,
                           "grad_any_sample_rel_diff": GRAD_MAX_TOL, "grad_min_cosine": GRAD_MIN_COSINE},
            "protocol": "per measurement: warm-up rounds, then rounds each running every engine once "
                        "(order rotated per round); sample = settle_ms of untimed calls (at least one), then the mean of "
                        "`inner` timed back-to-back calls; "
                        "median over rounds; times measured in the engine's own process"}
    log("models: %s\n" % ", ".join(s["name"] for s in specs))
    log(HEADER)
    records = []
    tmp = tempfile.mkdtemp(prefix="adm_bench_", dir=WORK_DIR)
    try:
        for spec in specs:
            records.append(bench_model(spec, args, tws, tmp))
    finally:
        for w in tws.values():
            w.close()
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
