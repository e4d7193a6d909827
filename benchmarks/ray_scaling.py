"""Throughput of adamant.distributed.evaluate with 1 and 2 Ray workers vs single-process evaluate.

    python3 benchmarks/ray_scaling.py [--images 512] [--steps 10] [--depth 20] [--repeats 3]

mbn_resnet<depth>'s adv domain (../shared/models/mbn), the first --images CIFAR-10 test images
(classes interleaved), clean pass + PGD-<steps> (eps 8/255, alpha 2/255, seed 0), batch 64.
Configurations on one machine:
  * single process, adamant at 1 and at 2 threads (Model.evaluate);
  * Ray, 1 worker x 2 threads and 2 workers x 1 thread (one local cluster on loopback; start-up
    and the workers' model loading are timed separately, not in the throughput).
Each is warmed up on one batch per worker, then timed in --repeats interleaved rounds (best and
median kept); every run's table must equal the single-process one. Writes
benchmarks/results/ray_scaling.md (and .json). Run it on an otherwise idle machine.
"""
import argparse
import io
import json
import os
import platform
import sys
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
sys.path.insert(0, os.path.join(REPO, "bindings", "python"))
if "ADAMANT_LIBRARY" not in os.environ and os.path.exists(os.path.join(REPO, "dist", "lib", "libadamant.so")):
    os.environ["ADAMANT_LIBRARY"] = os.path.join(REPO, "dist", "lib", "libadamant.so")

import adamant  # noqa: E402
import adamant.distributed as ad  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar(n):
    """The first n CIFAR-10 test images, interleaving the classes (float32 NCHW in [0, 1])."""
    from PIL import Image
    per = (n + 9) // 10
    want = {c: [] for c in CLASSES}
    with tarfile.open(os.path.join(SHARED, "data", "cifar10", "test.tar.gz"), "r:gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and m.name.endswith(".jpg") and len(parts) >= 3 and parts[-2] in want \
                    and len(want[parts[-2]]) < per:
                want[parts[-2]].append((m.name, tf.extractfile(m).read()))
    imgs = {c: [np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
                for _, d in sorted(want[c])] for c in CLASSES}
    xs, ys = [], []
    for i in range(per):
        for ci, c in enumerate(CLASSES):
            xs.append(imgs[c][i])
            ys.append(ci)
    return np.ascontiguousarray(np.stack(xs[:n]), np.float32), np.array(ys[:n], np.int64)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        get = lambda k: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(k)), "?")
        return "%s (family %s model %s)" % (get("model name"), get("cpu family"), get("model\t"))
    except OSError:
        return platform.processor() or "?"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(HERE, "results", "ray_scaling"))
    a = p.parse_args()
    cpus = os.cpu_count() or 1
    src = {"clean": os.path.join(SHARED, "models", "mbn", "mbn_resnet%d.clean.onnx" % a.depth),
           "adv": os.path.join(SHARED, "models", "mbn", "mbn_resnet%d.adv.onnx" % a.depth)}
    x, y = cifar(a.images)
    kw = dict(attack="pgd", domains="adv", eps=8 / 255, alpha=2 / 255, steps=a.steps, seed=0,
              batch_size=a.batch_size, progress=False)
    load0 = os.getloadavg()

    # Every configuration is set up first (models loaded, actors started, one warm-up batch each),
    # then timed in interleaved rounds (A B C D, A B C D, ...), best of --repeats: on a machine
    # shared with other jobs a slow moment then hits one run of each, not one configuration.
    import ray
    # Logical CPUs doubled only so that both Ray configurations' actors (1 x 2 and 2 x 1 CPUs) stay
    # alive together; they never run at the same time.
    ray.init(num_cpus=2 * cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)
    configs = []
    try:
        m = adamant.load(src)
        for threads in (1, 2):
            def run(xx, yy, threads=threads, **extra):
                adamant.set_num_threads(threads)
                try:
                    return m.evaluate(xx, yy, **kw)
                finally:
                    adamant.set_num_threads(1)  # the driver only waits while Ray workers compute
            configs.append({"config": "single process (Model.evaluate)", "workers": 1, "threads": threads,
                            "startup": None, "run": run, "warm": a.batch_size})
        clusters = []
        for workers in (1, 2):
            threads = max(1, cpus // workers)
            t0 = time.perf_counter()
            c = ad.Cluster(src, num_workers=workers, threads=threads)
            clusters.append(c)
            configs.append({"config": "Ray (adamant.distributed)", "workers": workers, "threads": threads,
                            "startup": time.perf_counter() - t0,
                            "run": lambda xx, yy, c=c, **extra: c.evaluate(xx, yy, **kw, **extra),
                            "warm": workers * a.batch_size})
        for cf in configs:  # warm-up: one full batch per worker, untimed
            w = cf["warm"]
            cf["run"](x[:w], y[:w], **({"num_shards": cf["workers"]} if cf["startup"] is not None else {}))
            cf["times"] = []
        ref = None
        for rnd in range(a.repeats):
            for cf in configs:
                t0 = time.perf_counter()
                res = cf["run"](x, y)
                cf["times"].append(time.perf_counter() - t0)
                ref = ref or res
                assert res == ref, (cf["config"], res, ref)
                cf["result"] = res
                print("round %d: %s %d x %d: %.2f s" % (rnd, cf["config"], cf["workers"], cf["threads"],
                                                        cf["times"][-1]), flush=True)
        for c in clusters:
            c.close()
    finally:
        ray.shutdown()
    load1 = os.getloadavg()
    rows = [{k: v for k, v in cf.items() if k not in ("run", "warm")} for cf in configs]
    for r in rows:
        r["seconds"] = min(r["times"])
        r["median"] = sorted(r["times"])[len(r["times"]) // 2]

    base = next(r for r in rows if r["workers"] == 1 and r["threads"] == min(2, cpus) and r["startup"] is None)
    lines = [
        "# Distributed evaluation on Ray: throughput with 1 and 2 workers",
        "",
        "`python3 benchmarks/ray_scaling.py --images %d --steps %d --depth %d --batch-size %d --repeats %d`"
        % (a.images, a.steps, a.depth, a.batch_size, a.repeats),
        "",
        "mbn_resnet%d, `adv` domain: clean pass + PGD-%d (eps 8/255, alpha 2/255, seed 0) on %d CIFAR-10 test "
        "images, batch %d. CPU: %s, %d cores; Ray %s, adamant %s (%s). Best (and median) of %d interleaved rounds after a warm-up batch; Ray's cluster "
        "start-up and each worker's model load (\"start-up\") are not in the time. Every configuration's "
        "table is identical (robust accuracy %.4f, clean %.4f). Load average before/after: %.2f / %.2f."
        % (a.depth, a.steps, a.images, a.batch_size, cpu_name(), cpus, ray.__version__, adamant.__version__,
           adamant.isa(), a.repeats, ref["adv"]["robust_acc"], ref["adv"]["clean_acc"], load0[0], load1[0]),
        "",
        "| configuration | workers x adamant threads | best time (s) | median (s) | images/s (best) | vs single process, 2 threads | start-up (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append("| %s | %d x %d | %.2f | %.2f | %.1f | %.2fx | %s |" % (
            r["config"], r["workers"], r["threads"], r["seconds"], r["median"], a.images / r["seconds"],
            base["seconds"] / r["seconds"], "-" if r["startup"] is None else "%.1f" % r["startup"]))
    lines += ["", "With 2 workers on 2 cores each worker runs adamant with 1 thread (threads = CPUs / workers, "
              "the default of `adamant.distributed.evaluate`), so the machine is never oversubscribed. "
              "Medians well above the best times mean other jobs shared the two cores during some rounds (this "
              "machine runs other benchmarks); the best times are the comparable figures.", ""]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines))
    with open(a.out + ".json", "w") as f:
        json.dump({"args": vars(a), "cpu": cpu_name(), "cpus": cpus, "load_before": load0, "load_after": load1,
                   "rows": rows}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
