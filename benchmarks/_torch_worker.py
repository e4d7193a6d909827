#!/usr/bin/env python3
"""_torch_worker.py -- the PyTorch side of benchmarks/bench.py (not meant to be run by hand).

Runs under the interpreter of its parent (bench.py / depth.py start it with
sys.executable, which must have torch) and evaluates ONNX graphs with
scripts/onnx_torch.py's independent evaluator. The parent starts it once as a subprocess and drives it with one JSON command per line
on stdin; every reply is one JSON line on stdout (everything else the worker
or torch prints goes to stderr). Arrays travel as .npy files in a directory
bench.py owns. Timings are measured inside this process with
time.perf_counter(), so the pipe round trip is never part of a measurement.

How torch runs
    * torch.set_num_threads(--threads), one inter-op thread; bench.py also
      sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS for this process.
    * forward ("fwd"): the evaluator is traced with torch.jit.trace for the
      exact batch shape and frozen with torch.jit.freeze (which folds the
      evaluator's BatchNorm scale/shift into the convolutions), run under
      torch.no_grad(). If tracing fails the eager evaluator is used and the
      reply says so ("mode").
    * input gradient ("grad"): CE loss (sum over the batch) of the logits,
      torch.autograd.grad w.r.t. the input, through the traced (not frozen)
      graph -- the same op sequence as eager, without the Python loop over
      ONNX nodes. Falls back to eager the same way.

Commands (field "op"):
    load     {key, path, mean, std}           -> {ok, load_s}
    prepare  {key, kind, batch, x, y, out[, mode]} -> {ok, mode, prepare_s}
             mode "eager" runs the evaluator as is (no tracing), else traced
             runs once, writes logits (fwd) or [loss..., grad] (grad) to out
             (grad: out.loss.npy and out.grad.npy)
    run      {key, kind, batch, inner, prime, settle} -> {ok, s}  seconds per call,
             averaged over `inner` back-to-back calls made after `prime` (and untimed calls
             until `settle` seconds have passed)
             untimed ones
    unload   {key}
    quit
Errors are replied as {ok: false, error: "..."}; the worker keeps going.
"""
import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

# The protocol owns the real stdout; anything else printed goes to stderr.
_PROTO = sys.stdout
sys.stdout = sys.stderr

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from onnx_torch import OnnxTorchModel  # noqa: E402

warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
# torch >= 2.x deprecates jit.trace/freeze with a FutureWarning per call; the replies are unaffected.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")


def reply(obj):
    _PROTO.write(json.dumps(obj) + "\n")
    _PROTO.flush()


class _Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def blas_core():
    """OpenBLAS core name used by this process's libblas (None if not OpenBLAS)."""
    import ctypes
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            lib = ctypes.CDLL(name)
            f = lib.openblas_get_corename
            f.restype = ctypes.c_char_p
            return "%s (%s)" % (f().decode(), name)
        except (OSError, AttributeError):
            continue
    return None


class Worker:
    def __init__(self):
        self.models = {}     # key -> OnnxTorchModel
        self.prepared = {}   # (key, kind, batch) -> callable running one call

    def load(self, c):
        t0 = time.perf_counter()
        self.models[c["key"]] = OnnxTorchModel(c["path"], mean=c.get("mean"), std=c.get("std"),
                                               dtype=torch.float32)
        return {"load_s": time.perf_counter() - t0}

    def unload(self, c):
        key = c["key"]
        self.models.pop(key, None)
        for k in [k for k in self.prepared if k[0] == key]:
            del self.prepared[k]
        return {}

    def prepare(self, c):
        t0 = time.perf_counter()
        m = self.models[c["key"]]
        kind, batch = c["kind"], int(c["batch"])
        x = torch.from_numpy(np.load(c["x"]))
        assert x.shape[0] == batch, (x.shape, batch)
        eager = c.get("mode") == "eager"
        if kind == "fwd":
            mod, mode = m, "eager, no_grad"
            if not eager:
                try:
                    with torch.no_grad():
                        traced = torch.jit.trace(_Wrap(m).eval(), x, check_trace=False)
                        mod = torch.jit.freeze(traced)
                        mod(x)
                        mode = "jit.trace+freeze, no_grad"
                except Exception as e:  # pragma: no cover - depends on the graph
                    print("torch worker: jit failed (%s), using eager" % e, file=sys.stderr)
                    mod, mode = m, "eager, no_grad"

            def run():
                with torch.no_grad():
                    return mod(x)
            out = run()
            np.save(c["out"], out.numpy().astype(np.float32))
        elif kind == "grad":
            y = torch.from_numpy(np.load(c["y"]).astype(np.int64))
            mod, mode = m, "eager, autograd"
            if not eager:
                try:
                    mod = torch.jit.trace(_Wrap(m).eval(), x, check_trace=False)
                    mode = "jit.trace, autograd"
                except Exception as e:  # pragma: no cover
                    print("torch worker: jit failed (%s), using eager" % e, file=sys.stderr)
                    mod, mode = m, "eager, autograd"

            def run():
                xx = x.detach().clone().requires_grad_(True)
                z = mod(xx)
                losses = F.cross_entropy(z, y, reduction="none")
                g, = torch.autograd.grad(losses.sum(), xx)
                return losses.detach(), g
            losses, g = run()
            np.save(c["out"] + ".loss.npy", losses.numpy().astype(np.float32))
            np.save(c["out"] + ".grad.npy", g.numpy().astype(np.float32))
        else:
            raise ValueError("unknown kind %r" % kind)
        self.prepared[(c["key"], kind, batch)] = run
        return {"mode": mode, "prepare_s": time.perf_counter() - t0}

    def run(self, c):
        f = self.prepared[(c["key"], c["kind"], int(c["batch"]))]
        inner = max(1, int(c.get("inner", 1)))
        t0 = time.perf_counter()
        for _ in range(max(0, int(c.get("prime", 0)))):
            f()
        # untimed calls until `settle` seconds have passed (the other engines' spinning threads stop)
        while int(c.get("prime", 0)) > 0 and time.perf_counter() - t0 < float(c.get("settle", 0)):
            f()
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        return {"s": (time.perf_counter() - t0) / inner}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_grad_enabled(True)
    w = Worker()
    reply({"ok": True, "ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "mkldnn": bool(torch.backends.mkldnn.is_available()), "blas": blas_core(),
           "python": sys.version.split()[0]})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
            op = c["op"]
            if op == "quit":
                reply({"ok": True})
                break
            res = getattr(w, op)(c)
            res["ok"] = True
            reply(res)
        except Exception as e:
            traceback.print_exc()
            reply({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
