#!/usr/bin/env bash
# install_torch.sh PYTHON — installs a CPU-only PyTorch and torchattacks 3.5.1 into PYTHON's
# environment (the torch bridge's tests, adamant.torch, and the PyTorch reference checks need them).
#
# torch: the first that works of
#   1. a CPU wheel for this interpreter in $TORCH_WHEELS (default /opt/wheels; a machine that keeps
#      one on disk installs it without a 190 MB download),
#   2. the PyTorch CPU index ($TORCH_INDEX, default https://download.pytorch.org/whl/cpu),
#   3. PyPI (where that index is not reachable; PyPI's Linux torch is the larger CUDA build).
# An interpreter that already imports torch keeps it. torchattacks goes in with --no-deps: its
# metadata pins requests/scipy versions it does not need; scipy (imported by some of its attacks)
# comes from requirements-dev.txt.
set -euo pipefail
PY=${1:?usage: install_torch.sh PYTHON}
PIP=("$PY" -m pip install -q --disable-pip-version-check)
if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
    tag=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    wheel=$(ls "${TORCH_WHEELS:-/opt/wheels}"/torch-*+cpu-"$tag"-"$tag"-*linux*_x86_64.whl 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$wheel" ]; then
        echo "installing $wheel"
        "${PIP[@]}" "$wheel"
    elif "${PIP[@]}" --retries 1 --timeout 20 --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
            --extra-index-url https://pypi.org/simple torch; then
        :
    else
        echo "the PyTorch CPU index is not reachable: installing torch from PyPI"
        "${PIP[@]}" torch
    fi
fi
"${PIP[@]}" --no-deps torchattacks==3.5.1
"$PY" -c "import torch, torchattacks; print('torch', torch.__version__, '| torchattacks', torchattacks.__version__)"
