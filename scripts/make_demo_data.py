#!/usr/bin/env python3
"""make_demo_data.py -- the demo data shipped inside the repo (no ../shared needed).

What it makes
    examples/models/mbn_resnet8.clean.onnx, examples/models/mbn_resnet8.adv.onnx
        byte copies of shared/models/mbn/ (the two BN domains of the MBN ResNet-8)
    examples/data/cifar10-demo.tar.gz
        300 CIFAR-10 test JPEGs, the first 30 of each class by sorted path, laid out
        as test/<class>/NNNN.jpg like shared/data/cifar10/test.tar.gz; the JPEG
        bytes are identical to the ones in the shared tarball.  The archive is
        reproducible (sorted members, original member mtimes, uid/gid 0, gzip
        header mtime 0).
    The script verifies the copies (sha256) and the tarball (300 members, 30 per
    class, bytes equal to the source) and prints the sizes.

Interpreter
    either python3 (standard library only).

How to run
    python3 scripts/make_demo_data.py [--per-class 30] [--shared ../shared]
"""
import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcommon import CLASSES, REPO_ROOT, shared_dir  # noqa: E402

MODELS = ["mbn_resnet8.clean.onnx", "mbn_resnet8.adv.onnx"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description="write examples/models and examples/data")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--shared", help="path of shared/ (default ../shared from the repo root)")
    ap.add_argument("--examples", default=os.path.join(REPO_ROOT, "examples"))
    args = ap.parse_args()
    shared = shared_dir(args.shared)

    mdir = os.path.join(args.examples, "models")
    os.makedirs(mdir, exist_ok=True)
    for m in MODELS:
        src = os.path.join(shared, "models", "mbn", m)
        dst = os.path.join(mdir, m)
        shutil.copyfile(src, dst)
        assert sha256(src) == sha256(dst)
        print("%-45s %8d bytes" % (os.path.relpath(dst, REPO_ROOT), os.path.getsize(dst)))

    src_tar = os.path.join(shared, "data", "cifar10", "test.tar.gz")
    members = {}
    with tarfile.open(src_tar, "r:gz") as tf:
        for ti in tf:
            if ti.isfile() and ti.name.endswith(".jpg"):
                members[ti.name] = (ti, tf.extractfile(ti).read())
    chosen = []
    for c in CLASSES:
        names = sorted(n for n in members if n.split("/")[-2] == c)
        chosen += names[:args.per_class]

    ddir = os.path.join(args.examples, "data")
    os.makedirs(ddir, exist_ok=True)
    out = os.path.join(ddir, "cifar10-demo.tar.gz")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tw:
        dirs = ["test"] + ["test/" + c for c in CLASSES]
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = 0
            tw.addfile(ti)
        for name in chosen:
            src_ti, data = members[name]
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = src_ti.mtime
            tw.addfile(ti, io.BytesIO(data))
    with open(out, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue())

    # verify
    with tarfile.open(out, "r:gz") as tf:
        got = {ti.name: tf.extractfile(ti).read() for ti in tf if ti.isfile()}
    assert sorted(got) == sorted(chosen), "member list mismatch"
    assert all(got[n] == members[n][1] for n in chosen), "JPEG bytes differ"
    for c in CLASSES:
        assert sum(1 for n in got if n.split("/")[-2] == c) == args.per_class
    print("%-45s %8d bytes  (%d JPEGs, %d per class, bytes identical to %s)"
          % (os.path.relpath(out, REPO_ROOT), os.path.getsize(out), len(got), args.per_class,
             os.path.relpath(src_tar, os.path.dirname(REPO_ROOT))))
    total = sum(os.path.getsize(os.path.join(mdir, m)) for m in MODELS) + os.path.getsize(out)
    print("total %.2f MB" % (total / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
