"""Instruction-set paths: the override, determinism, and the agreement suites re-run on every path.

adamant picks AVX-512, AVX2+FMA or portable (scalar) kernels from CPUID and XCR0; ADAMANT_ISA (or
adamant.set_isa) caps the choice. Each path this machine supports is exercised here: the parent
process runs under the path adamant picks, and for every supported path a child pytest re-runs the
forward (ONNX Runtime), gradient (PyTorch autograd fixtures), PGD (PyTorch reference) and
determinism tests with ADAMANT_ISA set, which also caps the OpenBLAS kernel loaded in the child.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import adamant
from conftest import BINDINGS, HERE, example_or_shared_mbn8

ALL = ["scalar", "avx2", "avx512"]


def test_supported_isas_and_override():
    sup = adamant.supported_isas()
    assert sup[0] == "scalar" and sup == ALL[:len(sup)]
    before = adamant.isa()
    try:
        for name in ALL:
            if name in sup:
                adamant.set_isa(name)
                assert adamant.isa() == name
                assert adamant.backend_info().startswith("isa=%s " % name)
            else:
                with pytest.raises(adamant.InvalidArgument, match=sup[-1]):
                    adamant.set_isa(name)
        with pytest.raises(adamant.InvalidArgument, match="not an instruction set"):
            adamant.set_isa("avx1024")
        adamant.set_isa(None)
        assert adamant.isa() == sup[-1]
    finally:
        adamant.set_isa(before)


def test_deterministic_across_threads_batches_and_batch_mates():
    """Bit-identical logits and gradients for threads 1, 2, 3, 8, alone or among other samples."""
    m = adamant.load({"clean": example_or_shared_mbn8("clean"), "adv": example_or_shared_mbn8("adv")})
    rng = np.random.RandomState(7)
    x = rng.rand(9, 3, 32, 32).astype(np.float32)
    y = rng.randint(0, 10, 9)
    try:
        adamant.set_num_threads(1)
        ref = {d: (m.predict(x, domain=d), m.gradient(x, y, domain=d)[1]) for d in ("clean", "adv")}
        for t in (2, 3, 8):
            adamant.set_num_threads(t)
            for d in ("clean", "adv"):
                assert np.array_equal(m.predict(x, domain=d), ref[d][0]), (d, t)
                assert np.array_equal(m.gradient(x, y, domain=d)[1], ref[d][1]), (d, t)
                # sample 3 alone and among reordered batch-mates
                assert np.array_equal(m.predict(x[3:4], domain=d)[0], ref[d][0][3])
                order = [8, 3, 0, 5]
                g = m.gradient(x[order], y[order], domain=d)[1]
                assert np.array_equal(g[1], ref[d][1][3])
    finally:
        adamant.set_num_threads(0)


@pytest.mark.parametrize("isa", ALL)
def test_suites_on_every_isa_path(isa):
    """Re-runs the agreement and determinism suites with ADAMANT_ISA=<isa> in a child process; a
    path this CPU lacks must instead be refused with a clear error."""
    env = dict(os.environ, ADAMANT_ISA=isa, ADAMANT_LIBRARY=os.path.abspath(adamant.LIBRARY_PATH),
               PYTHONPATH=os.pathsep.join([BINDINGS] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    if isa not in adamant.supported_isas():
        r = subprocess.run([sys.executable, "-c", "import adamant, sys; adamant.load(sys.argv[1])",
                            example_or_shared_mbn8("clean")], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "ADAMANT_ISA=%s" % isa in r.stderr and "support at most" in r.stderr
        return
    files = ["test_forward.py", "test_gradients.py", "test_agreement.py", "test_isa.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + files
                       + ["-k", "not test_supported_isas_and_override and not test_suites_on_every_isa_path"],
                       cwd=HERE, env=env, capture_output=True, text=True, timeout=1200)
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
    assert r.returncode == 0, "suites failed under ADAMANT_ISA=%s:\n%s" % (isa, tail)
    assert " passed" in tail and "failed" not in tail, tail
    info = subprocess.run([sys.executable, "-c", "import adamant; print(adamant.backend_info())"], env=env,
                          cwd=HERE, capture_output=True, text=True, timeout=120).stdout
    assert info.startswith("isa=%s " % isa), info
