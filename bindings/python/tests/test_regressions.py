"""Model files that once killed the process (found by fuzzing, kept in ../shared/regressions/models):
each must now give a clear error, through the Python binding and through the CLI."""
import glob
import os
import subprocess

import pytest

import adamant
from conftest import REPO, SHARED

MODELS = sorted(glob.glob(os.path.join(SHARED, "regressions", "models", "*.onnx")))


@pytest.mark.parametrize("path", MODELS or [None], ids=[os.path.basename(p) for p in MODELS] or ["<shared missing>"])
def test_regression_model_gives_an_error(path):
    if path is None:
        pytest.skip("shared/regressions/models is missing")
    import numpy as np
    try:
        m = adamant.load(path)
    except adamant.AdamantError as e:
        assert str(e)
    else:
        with pytest.raises(adamant.AdamantError):
            m.predict(np.zeros((1,) + tuple(m.input_shape), np.float32))
    cli = os.environ.get("ADAMANT_CLI") or os.path.join(REPO, "dist", "bin", "adamant")
    r = subprocess.run([cli, "info", path], capture_output=True, text=True, timeout=60)
    # 65 (EX_DATAERR): a model file that exists but is malformed (`adamant --help`, exit status)
    assert r.returncode == 65 and "Error:" in r.stderr, (r.returncode, r.stderr[-300:])
