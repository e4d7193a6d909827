#!/usr/bin/env python3
"""Where the time goes, layer kind by layer kind: adamant against ONNX Runtime at batch 1 (or --batch).

For each model, both engines run the same ONNX file at the same batch (default 1; a file fixed at
batch 1 goes to ONNX Runtime as a batch-dynamic copy) with the same threads, each with
its own per-node profiler: adamant's `ADAMANT_PROFILE=1` (in a child process: it prints at exit)
and ONNX Runtime's `enable_profiling`. Node times are grouped by a key both can name:
`Conv KHxKW/S HxW` (kernel, stride, input size) for a convolution, the op type otherwise, and
shown per forward pass (mean over the runs; adamant's includes its first pass) with adamant's
algorithm for the kind, the ratio and the difference, largest loss first. It tells which kind of
layer a speed-up has to come from; end-to-end latency is `bench.py`'s and `depth.py`'s job (a
profiler adds its own cost per node, ONNX Runtime's a few microseconds).

    python3 benchmarks/layers.py /tmp/r50.onnx --threads 2 --runs 100 --md benchmarks/results/layers.md

Needs onnx, onnxruntime and numpy (benchmarks/requirements.txt) and a built library
(ADAMANT_LIBRARY, else dist/lib/libadamant.so).
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench import cpu_model, ort_ready_copy  # noqa: E402

CHILD = r"""
import sys, numpy as np, adamant
path, threads, runs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
adamant.set_num_threads(threads)
m = adamant.load(path)
x = np.random.default_rng(0).random([batch] + list(m.info()["input"]["shape"]), dtype=np.float32)
for _ in range(runs):
    m.predict(x)
print(adamant.isa())
"""

PROFILE_LINE = re.compile(r"^\s+(.+?)\s{2,}([\d.]+)\s+[\d.]+%\s+(\d+)\s*$")
CONV_KEY = re.compile(r"^Conv (\d+)x(\d+)/(\d+) (\S+) (\d+)x(\d+)$")


def adamant_profile(path, threads, runs, batch=1):
    """({key: (us per forward, algorithm)}, ISA path) from adamant's profile of `runs` forward passes."""
    env = dict(os.environ, ADAMANT_PROFILE="1")
    env.setdefault("ADAMANT_LIBRARY", os.path.join(ROOT, "dist", "lib", "libadamant.so"))
    env["PYTHONPATH"] = os.path.join(ROOT, "bindings", "python") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", CHILD, path, str(threads), str(runs), str(batch)], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("adamant failed on %s:\n%s" % (path, r.stderr[-2000:]))
    out = {}
    for line in r.stderr.splitlines():
        m = PROFILE_LINE.match(line)
        if not m or m.group(1).endswith("(backward)"):
            continue
        label, ms = m.group(1), float(m.group(2))
        c = CONV_KEY.match(label)
        key, algo = (("Conv %sx%s/%s %sx%s" % (c.group(1), c.group(2), c.group(3), c.group(5), c.group(6))), c.group(4)) \
            if c else (label, "")
        us, algos = out.get(key, (0.0, set()))
        out[key] = (us + ms * 1e3 / runs, algos | ({algo} if algo else set()))
    return {k: (us, "/".join(sorted(a))) for k, (us, a) in out.items()}, r.stdout.strip()


def ort_profile(path, threads, runs, batch=1):
    """{key: us per forward} from ONNX Runtime's profile of `runs` runs (after 10 untimed)."""
    import numpy as np
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        o.enable_profiling = True
        o.profile_file_prefix = os.path.join(tmp, "ort")
        if batch > 1:  # a file with a fixed batch of 1 (Reshape to [1, ...]) made batch-dynamic
            path = ort_ready_copy(path, None, None, os.path.join(tmp, "model.onnx"))
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        i = s.get_inputs()[0]
        x = np.random.default_rng(0).random([batch] + list(i.shape[1:]), dtype=np.float32)
        for _ in range(10 + runs):  # 10 warm-up runs, whose events come first (each node keeps its last `runs`)
            s.run(None, {i.name: x})
        with open(s.end_profiling()) as f:
            events = json.load(f)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e)
    out = collections.defaultdict(float)
    for name, evs in per_node.items():
        for e in evs[-runs:]:
            a = e["args"]
            op = a.get("op_name", "?")
            key = op
            ins = [list(d.values())[0] for d in a.get("input_type_shape", [])]
            outs = [list(d.values())[0] for d in a.get("output_type_shape", [])]
            if op in ("Conv", "FusedConv") and len(ins) >= 2 and len(ins[0]) == 4 and outs and len(outs[0]) == 4:
                kh, kw = ins[1][2], ins[1][3]
                stride = max(1, round(ins[0][2] / max(1, outs[0][2])))
                key = "Conv %dx%d/%d %dx%d" % (kh, kw, stride, ins[0][2], ins[0][3])
            elif op.startswith("Reorder"):
                key = "Reorder (ONNX Runtime's layout changes)"
            out[key] += e["dur"] / runs
    return dict(out)


def table(name, ad, ort):
    keys = sorted(set(ad) | set(ort), key=lambda k: -((ad.get(k, (0, ""))[0]) - ort.get(k, 0)))
    lines = ["### %s" % name, "",
             "| layer kind | adamant algorithm | adamant µs | ONNX Runtime µs | adamant / ORT | difference µs |",
             "|---|---|---|---|---|---|"]
    for k in keys:
        a, algo = ad.get(k, (None, ""))
        o = ort.get(k)
        ratio = "%.2f" % (a / o) if a is not None and o else "n/a"
        diff = "%+.0f" % ((a or 0) - (o or 0))
        lines.append("| %s | %s | %s | %s | %s | %s |" % (k, algo or "-", "%.0f" % a if a is not None else "-",
                                                      "%.0f" % o if o is not None else "-", ratio, diff))
    ta, to = sum(v[0] for v in ad.values()), sum(ort.values())
    lines.append("| **sum of nodes** | | %.0f | %.0f | %.2f | %+.0f |" % (ta, to, ta / to if to else 0, ta - to))
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="ONNX models")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100, help="profiled forward passes per engine (default 100)")
    p.add_argument("--batch", type=int, default=1,
                   help="batch size (default 1); above 1 use --threads 1: adamant runs a batch's pieces on the "
                        "threads at once and its profile then sums their times")
    p.add_argument("--md", help="also write the tables to this Markdown file")
    args = p.parse_args()
    out = ["# Per layer kind, batch %d: adamant vs ONNX Runtime" % args.batch, "",
           "Written by `benchmarks/layers.py`: %d threads per engine, mean of %d profiled forward passes "
           "each (per-node profilers on: they add their own cost per node). Key: kernel/stride and input size "
           "of a convolution, else the op type. Largest loss first. CPU: %s." % (args.threads, args.runs, cpu_model()), ""]
    for path in args.models:
        print("profiling %s ..." % path, file=sys.stderr, flush=True)
        ad, isa = adamant_profile(path, args.threads, args.runs, args.batch)
        ort = ort_profile(path, args.threads, args.runs, args.batch)
        t = table("%s (adamant's %s path)" % (os.path.basename(path), isa), ad, ort)
        print(t)
        out.append(t)
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n".join(out))


if __name__ == "__main__":
    main()
