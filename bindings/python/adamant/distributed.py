"""Distributed robustness evaluation on Ray.

:func:`evaluate` runs :meth:`adamant.Model.evaluate` over a set split into
contiguous shards, on Ray actors (one per worker, each loading the model once),
and returns the same table. Each shard is attacked with its global start index
as ``sample_offset``, so every sample draws the random stream keyed by
(seed, its index in the whole set): the result equals the single-process
``Model.evaluate`` exactly for the same seed, whatever the number of workers
or shards.

Ray is optional (``pip install adamant[ray]``) and imported only when
:func:`evaluate` runs. Example::

    import adamant.distributed as ad
    res = ad.evaluate({"clean": "mbn_resnet8.clean.onnx", "adv": "mbn_resnet8.adv.onnx"}, x, y,
                      attack="pgd", steps=10, num_workers=2)
    # {"clean": {"n": ..., "clean_acc": ..., "robust_acc": ..., "attack_success_rate": ...}, "adv": {...}}

``python -m adamant.distributed`` evaluates images saved as ``.npy`` files
(it is what ``adamant eval --ray`` runs); ``--help`` lists its options.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._errors import InvalidArgument
from ._model import Domain, Labels, Source, _bar, _labels, _summarize

__all__ = ["evaluate", "shards", "RAY_MISSING"]

#: The message of the ImportError raised when Ray is not installed.
RAY_MISSING = ("adamant.distributed needs Ray, which is not installed: pip install 'adamant[ray]' "
               "(or pip install ray)")


def _import_ray():
    """Imports Ray, or raises ImportError with an install hint."""
    try:
        import ray  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as e:
        raise ImportError(RAY_MISSING) from e
    return ray


def shards(n: int, num_shards: int) -> List[Tuple[int, int]]:
    """``[(start, stop)]``: range(n) in ``num_shards`` contiguous pieces whose sizes differ by at
    most one (fewer pieces when n < num_shards; one empty piece when n == 0)."""
    k = max(1, min(int(num_shards), n))
    base, extra = divmod(n, k)
    out, s = [], 0
    for i in range(k):
        e = s + base + (1 if i < extra else 0)
        out.append((s, e))
        s = e
    return out


def _absolute(source):
    """The model source with local file paths made absolute (workers may run in another directory)."""
    def fix(p):
        if isinstance(p, (str, os.PathLike)) and os.path.exists(p):
            return os.path.abspath(os.fspath(p))
        return p
    if isinstance(source, Mapping):
        return {str(k): fix(v) for k, v in source.items()}
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (list, tuple)) and len(p) == 2
                                                            for p in source):
        return [(str(k), fix(v)) for k, v in source]
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    return fix(source)


class _Worker:
    """One evaluation worker (a Ray actor): loads the model once, then evaluates shards."""

    def __init__(self, source, load_options, threads, isa):
        # A failure is kept and raised by describe(): an exception in an actor's constructor reaches
        # the driver only as a message (ActorDiedError), not as adamant's exception.
        self.error = None
        try:
            import adamant
            if isa is not None:
                adamant.set_isa(isa)
            if threads is not None:
                adamant.set_num_threads(threads)
            self.model = adamant.load(source, **load_options)
        except Exception as e:
            self.error = e

    def describe(self):
        """(domain names, number of classes); raises the constructor's error."""
        if self.error is not None:
            raise self.error
        return list(self.model.domains), int(self.model.num_classes)

    def run(self, start, x, y, attack, domains, batch_size, attack_domain, scale, attack_kwargs):
        """Model._evaluate_samples on one shard (x[0] = sample `start` of the whole set)."""
        m = self.model
        a, _ = m._images(x, scale)
        return start, m._evaluate_samples(a, _labels(y), attack, domains, batch_size, False, attack_domain,
                                          start, attack_kwargs)


def _get(ray, refs):
    """ray.get, re-raising a worker's adamant error (or other exception) as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


class Cluster:
    """Ray actors holding one model each, reusable across :meth:`evaluate` calls.

    ``with Cluster(model, num_workers=2) as c: c.evaluate(x, y, attack="pgd")``.
    Arguments as in :func:`evaluate`. Connects to Ray (starting a local
    cluster on the loopback interface when ``address`` is None and Ray is not
    initialized; that cluster is shut down by :meth:`close`).
    """

    def __init__(self, model: Source, num_workers: Optional[int] = None, address: Optional[str] = None,
                 threads: Optional[int] = None, isa: Optional[str] = None,
                 load_options: Optional[Mapping[str, Any]] = None) -> None:
        ray = _import_ray()
        self._ray = ray
        self._started = False
        if num_workers is not None and (isinstance(num_workers, bool) or int(num_workers) < 1):
            raise InvalidArgument("num_workers must be at least 1, got %r" % (num_workers,))
        if threads is not None and (isinstance(threads, bool) or not 1 <= int(threads) <= 1024):
            raise InvalidArgument("threads must be 1 to 1024, got %r" % (threads,))
        if not ray.is_initialized():
            kw: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "logging_level": "WARNING"}
            if address is None:
                kw["_node_ip_address"] = "127.0.0.1"  # a private local cluster: loopback only
            ray.init(address=address, **kw)
            self._started = True
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
            self.num_workers = int(num_workers) if num_workers is not None else cpus
            #: adamant's compute threads in each worker (and the Ray CPUs each actor reserves).
            self.threads = int(threads) if threads is not None else max(1, cpus // self.num_workers)
            env = {}
            if os.environ.get("ADAMANT_LIBRARY"):
                env["ADAMANT_LIBRARY"] = os.path.abspath(os.environ["ADAMANT_LIBRARY"])
            # Workers import this package: from where the driver imports it, if not installed there.
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
            # Each actor reserves its threads' CPUs, or its share when there are more workers than CPUs
            # (so that every actor can be placed; Ray takes fractional CPUs).
            share = min(float(self.threads), cpus / self.num_workers)
            actor = ray.remote(_Worker).options(num_cpus=share, runtime_env={"env_vars": env})
            src = _absolute(model)
            self._actors = [actor.remote(src, dict(load_options or {}), self.threads, isa)
                            for _ in range(self.num_workers)]
            # Every worker has loaded the model (a bad path or file fails here, with adamant's error).
            described = _get(ray, [a.describe.remote() for a in self._actors])
            self.domains, self.num_classes = described[0]
        except BaseException:
            self.close()
            raise

    def evaluate(self, x: npt.ArrayLike, y: Labels, attack: Optional[str] = None,
                 domains: Optional[Union[str, int, Sequence[Union[str, int]]]] = None, batch_size: int = 256,
                 progress: Union[bool, str] = True, attack_domain: Domain = None, scale: Optional[float] = None,
                 num_shards: Optional[int] = None, **attack_kwargs: Any) -> Dict[str, Dict[str, Any]]:
        """:func:`evaluate` on this cluster's workers (``progress`` may be a str: the bar's label)."""
        per_sample, lab = self._evaluate_samples(x, y, attack, domains, batch_size, progress, attack_domain,
                                                 scale, num_shards, attack_kwargs)
        return _summarize(per_sample, lab)

    def _evaluate_samples(self, x, y, attack, domains, batch_size, progress, attack_domain, scale, num_shards,
                          attack_kwargs):
        """Per-sample results of the whole set (as Model._evaluate_samples) and the labels."""
        ray = self._ray
        if attack not in (None, "pgd", "fgsm"):
            raise InvalidArgument("attack must be None, 'pgd' or 'fgsm', got %r" % (attack,))
        for k in ("return_details", "batch_size", "progress", "domain", "eval_domain", "sample_offset"):
            if k in attack_kwargs:
                raise InvalidArgument("evaluate() sets %r itself" % k)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise InvalidArgument("batch_size must be at least 1, got %r" % (batch_size,))
        xa = np.asarray(x)
        if xa.ndim == 3:
            xa = xa[None]
        lab = _labels(y)
        n = int(xa.shape[0]) if xa.ndim >= 1 else 0
        if lab.size != n:
            raise InvalidArgument("labels: %d given for %d images" % (lab.size, n))
        if num_shards is None:
            # Shards of about batch_size images, at least one per worker (load balance, progress).
            num_shards = max(self.num_workers, math.ceil(n / int(batch_size or max(n, 1))))
        elif isinstance(num_shards, bool) or int(num_shards) < 1:
            raise InvalidArgument("num_shards must be at least 1, got %r" % (num_shards,))
        parts = shards(n, num_shards)
        target = attack_kwargs.get("target")
        split_target = target is not None and np.ndim(target) >= 1 and len(target) == n

        def args(s, e):
            kw = dict(attack_kwargs)
            if split_target:
                kw["target"] = np.asarray(target)[s:e]
            return (s, np.ascontiguousarray(xa[s:e]), lab[s:e], attack, domains, batch_size, attack_domain, scale, kw)

        label = progress if isinstance(progress, str) else "evaluate"
        bar = _bar(len(parts), bool(progress), "%s (%d worker%s)" % (label, self.num_workers,
                                                                    "" if self.num_workers == 1 else "s"))
        done: Dict[int, Any] = {}
        try:
            # Each worker takes the next shard when it finishes one (pull scheduling).
            queue = list(parts)
            running = {}
            free = list(self._actors)
            while queue or running:
                while queue and free:
                    s, e = queue.pop(0)
                    a = free.pop(0)
                    running[a.run.remote(*args(s, e))] = a
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    free.append(running.pop(ref))
                    start, res = _get(ray, ref)
                    done[start] = res
                    bar.update(1)
        finally:
            bar.close()
        starts = sorted(done)
        first = done[starts[0]]
        per_sample = {}
        for name in first:
            r = {}
            for key in ("clean", "robust", "success"):
                pieces = [done[s][name][key] for s in starts]
                r[key] = None if pieces[0] is None else np.concatenate(pieces)
            per_sample[name] = r
        return per_sample, lab

    def close(self) -> None:
        """Ends the workers (and the local Ray cluster this object started)."""
        ray = self._ray
        for a in getattr(self, "_actors", []):
            try:
                ray.kill(a)
            except Exception:  # pragma: no cover - already gone
                pass
        self._actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def evaluate(model: Source, x: npt.ArrayLike, y: Labels, attack: Optional[str] = None,
             domains: Optional[Union[str, int, Sequence[Union[str, int]]]] = None, batch_size: int = 256,
             num_workers: Optional[int] = None, address: Optional[str] = None, seed: int = 0,
             progress: bool = True, attack_domain: Domain = None, scale: Optional[float] = None,
             threads: Optional[int] = None, num_shards: Optional[int] = None, isa: Optional[str] = None,
             load_options: Optional[Mapping[str, Any]] = None,
             **attack_kwargs: Any) -> Dict[str, Dict[str, Any]]:
    """Clean (and robust) accuracy per BN domain, split over Ray workers; the same table as
    :meth:`adamant.Model.evaluate` and, for the same seed, the same numbers exactly.

    Args:
        model: what :func:`adamant.load` takes (a path, ``{domain: path}``,
            ``(name, path)`` pairs or bytes); each worker loads it once. Paths
            must be readable where the workers run (local paths are made
            absolute).
        x, y: pixel-space images ``(N, C, H, W)`` and their N labels.
        attack, domains, batch_size, progress, attack_domain, scale,
        **attack_kwargs: as in :meth:`adamant.Model.evaluate` (eps, alpha,
            steps, targeted, target, restarts, loss, ...). ``progress`` shows a
            tqdm bar over the shards done.
        num_workers: Ray actors (default: one per CPU of the cluster).
        address: Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ...);
            None: the running Ray session if ``ray.init`` was called, else a
            local cluster on the loopback interface, shut down afterwards.
        seed: the attack's seed (as in :meth:`adamant.Model.pgd`).
        threads: adamant's compute threads per worker (each actor reserves that
            many Ray CPUs, or CPUs / num_workers if fewer); default: the cluster's
            CPUs / num_workers, at least 1.
        num_shards: contiguous pieces the set is split into (default: about
            batch_size images each, at least num_workers); does not change the result.
        isa: :func:`adamant.set_isa` in each worker (None: the worker's default).
        load_options: keyword arguments of :func:`adamant.load` (mean, std,
            pixel_range, default_domain, memory_limit).

    Returns:
        ``{domain_name: {"n", "clean_acc", "robust_acc", "attack_success_rate"}}``.

    Raises:
        ImportError: Ray is not installed (``pip install adamant[ray]``).
        adamant's errors (InvalidArgument, DomainError, ...) as ``Model.evaluate``.
    """
    with Cluster(model, num_workers=num_workers, address=address, threads=threads, isa=isa,
                 load_options=load_options) as c:
        return c.evaluate(x, y, attack=attack, domains=domains, batch_size=batch_size, progress=progress,
                          attack_domain=attack_domain, scale=scale, num_shards=num_shards, seed=seed,
                          **attack_kwargs)


# ---------------------------------------------------------------------------
# python -m adamant.distributed (what `adamant eval --ray` runs)
# ---------------------------------------------------------------------------

def _number(s: str) -> float:
    """'8/255', '0.03' or '2e-3'."""
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b)
    return float(s)


def _exit_status(e: BaseException) -> int:
    """adamant eval's exit status for an exception (see `adamant --help`)."""
    from . import _errors as E
    if isinstance(e, E.InvalidArgument):
        return 64
    if isinstance(e, E.AdamantIOError):
        return 66
    if isinstance(e, (E.ParseError, E.UnsupportedError, E.ShapeError, E.DomainError)):
        return 65
    if isinstance(e, E.InternalError):
        return 70
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: evaluate images in .npy files on Ray workers; prints a table, writes --json."""
    import argparse
    import json
    p = argparse.ArgumentParser(
        prog="python -m adamant.distributed",
        description="Clean and PGD/FGSM accuracy per BN domain, split over Ray workers (the same numbers as "
                    "Model.evaluate for the same seed). `adamant eval --ray` runs this.")
    p.add_argument("model", nargs="?", help="ONNX model (plain or adamant's multi-domain file); omit with --domain")
    p.add_argument("--domain", action="append", default=[], metavar="NAME=PATH", dest="domain_files",
                   help="a per-domain export (repeat; the first is the default)")
    p.add_argument("--x", required=True, help=".npy of float32 images (N, C, H, W) in pixel space")
    p.add_argument("--y", required=True, help=".npy of N integer labels")
    p.add_argument("--attack", default="pgd", choices=["pgd", "fgsm", "none"])
    p.add_argument("--eps", default="8/255")
    p.add_argument("--alpha", default=None, help="step size (default: eps/4 for PGD, eps for FGSM)")
    p.add_argument("--steps", default="10", help="PGD iterations, or a list (10,50) for one row per count")
    p.add_argument("--norm", default="linf", choices=["linf", "inf", "l2"])
    p.add_argument("--targeted", default=None, help="'random' or a class index; omit for untargeted")
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--loss", default="ce", choices=["ce", "cw"])
    p.add_argument("--no-random-start", action="store_true")
    p.add_argument("--early-stop", action="store_true")
    p.add_argument("--attack-domain", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domains", default="all", help="comma-separated names or indices, or 'all'")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU of the cluster)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local one on loopback)")
    p.add_argument("--threads", type=int, default=None, help="adamant threads per worker (default: CPUs / workers)")
    p.add_argument("--isa", default=None)
    p.add_argument("--mean", default=None)
    p.add_argument("--std", default=None)
    p.add_argument("--pixel-range", default=None)
    p.add_argument("--default-domain", default=None)
    p.add_argument("--memory-limit", type=int, default=None, help="bytes")
    p.add_argument("--json", default=None, help="write the results as JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no table on stdout (with --json)")
    a = p.parse_args(argv)

    def fail(status, msg):
        sys.stderr.write("Error: %s\n" % msg)
        return status

    try:
        ray_ok = True
        _import_ray()
    except ImportError:
        ray_ok = False
    if not ray_ok:
        return fail(1, RAY_MISSING)
    if a.model is None and not a.domain_files:
        return fail(64, "missing MODEL (or --domain NAME=PATH)")
    if a.model is not None and a.domain_files:
        return fail(64, "give either MODEL or --domain NAME=PATH, not both")
    source: Any = a.model
    if a.domain_files:
        pairs = []
        for spec in a.domain_files:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                return fail(64, "--domain expects NAME=PATH, got '%s'" % spec)
            pairs.append((name, path))
        source = pairs
    try:
        steps = [int(s) for s in a.steps.split(",")]
        eps = _number(a.eps)
        alpha = _number(a.alpha) if a.alpha is not None else (eps if a.attack == "fgsm" else eps / 4)
        opts: Dict[str, Any] = {}
        if a.mean is not None:
            opts["mean"] = [float(v) for v in a.mean.split(",")]
        if a.std is not None:
            opts["std"] = [float(v) for v in a.std.split(",")]
        if a.pixel_range is not None:
            opts["pixel_range"] = tuple(float(v) for v in a.pixel_range.split(","))
    except ValueError as e:
        return fail(64, str(e))
    if a.default_domain is not None:
        opts["default_domain"] = a.default_domain
    if a.memory_limit is not None:
        opts["memory_limit"] = a.memory_limit
    try:
        x = np.load(a.x, mmap_mode="r")
        y = np.load(a.y)
    except (OSError, ValueError) as e:
        return fail(66, "cannot read --x/--y: %s" % e)
    attack = None if a.attack == "none" else a.attack
    kw: Dict[str, Any] = {}
    if attack == "pgd":
        kw.update(eps=eps, alpha=alpha, norm=a.norm, restarts=a.restarts, loss=a.loss,
                  random_start=not a.no_random_start, early_stop=a.early_stop, seed=a.seed)
    elif attack == "fgsm":
        kw.update(eps=eps, loss=a.loss, seed=a.seed)
    if attack is not None and a.targeted is not None:
        if a.targeted == "random":
            kw["targeted"] = True
        else:
            try:
                kw["target"] = np.full(len(y), int(a.targeted), dtype=np.int64)
            except ValueError:
                return fail(64, "--targeted must be 'random' or a class index, got '%s'" % a.targeted)
    rows = []
    t_all = time.monotonic()
    try:
        with Cluster(source, num_workers=a.workers, address=a.address, threads=a.threads, isa=a.isa,
                     load_options=opts) as c:
            doms: List[Any] = list(c.domains) if a.domains == "all" else \
                [int(d) if d.isdigit() else d for d in a.domains.split(",")]
            names = [c.domains[d] if isinstance(d, int) and 0 <= d < len(c.domains) else str(d) for d in doms]
            for d, name in zip(doms, names):
                for s in (steps if attack == "pgd" else [1]):
                    t0 = time.monotonic()
                    k = dict(kw)
                    if attack == "pgd":
                        k["steps"] = s
                    res = c.evaluate(x, y, attack=attack, domains=[d], batch_size=a.batch_size,
                                     progress=False if a.no_progress else
                                     "%s %s" % (name, "clean" if attack is None else "FGSM" if attack == "fgsm" else "PGD-%d" % s),
                                     attack_domain=a.attack_domain, **k)[name]
                    row = {"domain": name, "images": res["n"], "clean_acc": res["clean_acc"],
                           "seconds": time.monotonic() - t0}
                    if attack is not None:
                        row.update(attack="FGSM" if attack == "fgsm" else "PGD-%d" % s, steps=s if attack == "pgd" else 1,
                                   attack_domain=a.attack_domain if a.attack_domain is not None else name,
                                   robust_acc=res["robust_acc"], attack_success_rate=res["attack_success_rate"])
                    rows.append(row)
            workers, threads = c.num_workers, c.threads
    except Exception as e:  # adamant's errors (re-raised from the workers) -> eval's exit statuses
        return fail(_exit_status(e), str(e) or repr(e))
    out = {"workers": workers, "threads_per_worker": threads, "seconds": time.monotonic() - t_all,
           "results": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if not a.quiet:
        print("Ray: %d worker%s x %d thread%s" % (workers, "" if workers == 1 else "s", threads,
                                                  "" if threads == 1 else "s"))
        hdr = ["domain", "images", "clean acc"] + (["attack", "attacked via", "acc under attack", "attack success"]
                                                    if attack else []) + ["time"]
        body = [[r["domain"], str(r["images"]), "%.1f %%" % (100 * r["clean_acc"])] +
                (["%s" % r["attack"], r["attack_domain"], "%.1f %%" % (100 * r["robust_acc"]),
                  "%.1f %%" % (100 * r["attack_success_rate"])] if attack else []) +
                ["%.1f s" % r["seconds"]] for r in rows]
        w = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(hdr)]
        print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr)))
        print("  ".join("-" * v for v in w))
        for b in body:
            print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
