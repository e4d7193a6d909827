#!/usr/bin/env python3
"""apgd_step_cost.py -- what one APGD step costs against one PGD step (issue #12: at most +5 %).

Both attacks run on the same batch of correctly classified CIFAR-10 test images (APGD does not
attack the others) through the same BN
domain, every sample stepping to the end (PGD early_stop=False, APGD
early_stop=False), L-inf, eps 8/255. A step's cost is the slope of the run time
over the step count, (t(S2) - t(S1)) / (S2 - S1), so each attack's fixed work
(clean forward, APGD's gradient at the start point, the final judging forward)
cancels out; the whole-run ratio at S2 steps is printed too. Each time is the
minimum over --repeats runs, PGD and APGD interleaved, measured both as wall time and as
the process's CPU time (all threads; robust to other processes sharing the cores).

Run (after `make`):
    ADAMANT_LIBRARY=dist/lib/libadamant.so python3 benchmarks/apgd_step_cost.py [--model mbn_resnet20] [--batch 100]
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import refcommon  # noqa: E402
import adamant  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default="mbn_resnet20")
    ap.add_argument("--domain", default="adv")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", default="10,40", help="S1,S2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    s1, s2 = (int(v) for v in args.steps.split(","))
    _, images, labels = refcommon.load_cifar10_test()
    d = os.path.join(refcommon.shared_dir(), "models", "mbn")
    m = adamant.load({k: os.path.join(d, "%s.%s.onnx" % (args.model, k)) for k in ("clean", "adv")})
    # Only images the model gets right: APGD does not attack the others, PGD would step them all.
    x = refcommon.to_nchw_float(images[:4 * args.batch])
    y = labels[:4 * args.batch].astype(np.int64)
    ok = m.predict(x, domain=args.domain).argmax(1) == y
    x, y = np.ascontiguousarray(x[ok][:args.batch]), y[ok][:args.batch]
    runs = {
        "pgd": lambda s: m.pgd(x, y, eps=8 / 255, alpha=2 / 255, steps=s, domain=args.domain, early_stop=False),
        "apgd": lambda s: m.apgd(x, y, eps=8 / 255, steps=s, domain=args.domain, early_stop=False),
    }
    best = {(k, s): float("inf") for k in runs for s in (s1, s2)}
    cpu = dict(best)
    runs["pgd"](2)  # warm-up: buffer pool, thread pool
    runs["apgd"](2)
    for _ in range(args.repeats):
        for s in (s1, s2):
            for k, f in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f(s)
                best[(k, s)] = min(best[(k, s)], time.perf_counter() - t0)
                cpu[(k, s)] = min(cpu[(k, s)], time.process_time() - c0)
    step = {k: (best[(k, s2)] - best[(k, s1)]) / (s2 - s1) for k in runs}
    cstep = {k: (cpu[(k, s2)] - cpu[(k, s1)]) / (s2 - s1) for k in runs}
    print(adamant.backend_info())
    print("%s %s, batch %d, L-inf eps 8/255, min of %d runs" % (args.model, args.domain, args.batch, args.repeats))
    for k in runs:
        print("  %-4s  %3d steps %.3f s   %3d steps %.3f s   per step %.2f ms" % (
            k, s1, best[(k, s1)], s2, best[(k, s2)], 1e3 * step[k]))
        print("        CPU time: %3d steps %.3f s   %3d steps %.3f s   per step %.2f ms" % (
            s1, cpu[(k, s1)], s2, cpu[(k, s2)], 1e3 * cstep[k]))
    print("APGD / PGD per step: wall %.3f, CPU %.3f   whole %d-step run: wall %.3f, CPU %.3f" % (
        step["apgd"] / step["pgd"], cstep["apgd"] / cstep["pgd"], s2, best[("apgd", s2)] / best[("pgd", s2)],
        cpu[("apgd", s2)] / cpu[("pgd", s2)]))


if __name__ == "__main__":
    main()
