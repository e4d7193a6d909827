"""adamant: robust ResNets with BatchNorm domains, from Python.

A thin ctypes layer over the C ABI of ``libadamant.so`` (``include/adamant.h``):
load ResNets from ONNX, keep named BatchNorm domains (e.g. ``clean``/``adv``),
run inference, input gradients and PGD attacks, calibrate new BN domains.

Example::

    import adamant, numpy as np
    m = adamant.load({"clean": "mbn_resnet8.clean.onnx", "adv": "mbn_resnet8.adv.onnx"})
    logits = m.predict(x, domain="adv")             # x: float32 (N, 3, 32, 32) in [0, 1]
    x_adv = m.pgd(x, y, eps=8 / 255, domain="adv")
    print(m.evaluate(x, y, attack="pgd"))

``adamant.torch.Module(m, domain="adv")`` wraps a model as a ``torch.nn.Module``
(forward and input gradients by adamant) for PyTorch attack libraries; torch is
imported only on first use of ``adamant.torch``.

``adamant.distributed.evaluate(model_path, x, y, attack="pgd", num_workers=2)`` runs
:meth:`Model.evaluate` over Ray workers with identical results (``pip install adamant[ray]``;
Ray is imported only when it runs).

The shared library is found through ``ADAMANT_LIBRARY``, then a copy bundled
in this package, then ``ctypes.util.find_library("adamant")``.
"""
from ._errors import (AdamantError, AdamantIOError, CancelledError, DomainError, InternalError,
                      InvalidArgument, ParseError, ResourceError, ShapeError, UnsupportedError)
from ._lib import ABI_VERSION, LIBRARY_PATH
from ._model import (TENSORPACK_ARCHS, Calibrator, Model, abi_version, backend_info, import_tensorpack, isa, load,
                     set_isa, set_num_threads, supported_isas, version)

#: Version of the loaded libadamant (``adm_version()``).
__version__: str = version()


def __getattr__(name: str):  # PEP 562: `adamant.torch` imports torch only when first used
    if name in ("torch", "distributed", "export"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError("module 'adamant' has no attribute %r" % (name,))

__all__ = [
    "__version__", "ABI_VERSION", "LIBRARY_PATH", "load", "import_tensorpack", "TENSORPACK_ARCHS", "Model", "Calibrator", "backend_info",
    "set_num_threads", "set_isa", "isa", "supported_isas", "version", "abi_version", "AdamantError", "InvalidArgument", "AdamantIOError",
    "ParseError", "UnsupportedError", "ShapeError", "DomainError", "InternalError", "ResourceError",
    "CancelledError",
]
