"""The Pythonic layer: :func:`load`, :class:`Model` and :class:`Calibrator`.

Arrays cross into C without a copy whenever they already are C-contiguous
float32 (images) or int64 (labels): ``np.ascontiguousarray`` only copies when
the dtype or the layout has to change. Every length is handed to the C layer,
which validates shapes, labels, domains and attack settings; the Python layer
only converts types (and rejects image layouts whose element count matches
but whose trailing dimensions do not, e.g. NHWC, which C could not detect).

Image arguments: float arrays (any float dtype, any layout) are converted to
C-contiguous float32, a copy only when needed; they are taken as pixels in the
model's pixel range (usually [0, 1]). Integer and boolean arrays (a uint8 image
holds 0..255) are rejected with :class:`InvalidArgument` unless the call says
how to scale them: ``scale=1/255`` multiplies the input by 1/255 (in float32)
before use; ``scale`` applies to float input too.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import threading
import weakref
from ctypes import byref, c_char_p, c_float, c_int32, c_size_t
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import _lib as L
from ._errors import InvalidArgument, ShapeError
from ._lib import LIB

__all__ = ["load", "Model", "Calibrator", "backend_info", "set_num_threads", "set_isa", "isa", "supported_isas",
           "version", "abi_version"]

_FP = ctypes.POINTER(ctypes.c_float)
_I64P = ctypes.POINTER(ctypes.c_int64)
_I32P = ctypes.POINTER(ctypes.c_int32)
_U8P = ctypes.POINTER(ctypes.c_uint8)

_NORMS = {"linf": L.ADM_NORM_LINF, "inf": L.ADM_NORM_LINF, "l2": L.ADM_NORM_L2}
_LOSSES = {"ce": L.ADM_LOSS_CE, "cw": L.ADM_LOSS_CW, "dlr": L.ADM_LOSS_DLR}
_INT32_MAX = 2 ** 31 - 1

#: A BN domain: its name, its index, or None for the model's default domain.
Domain = Optional[Union[str, int]]
#: Labels or targets: a sequence or array of class indices, or one index.
Labels = npt.ArrayLike
#: Per-sample outcomes of an attack (see :meth:`Model.pgd`).
Details = Dict[str, np.ndarray]
#: A model source for :func:`load`.
Source = Union[str, "os.PathLike[str]", Mapping[str, Union[str, "os.PathLike[str]"]],
               Sequence[Tuple[str, Union[str, "os.PathLike[str]"]]], bytes, bytearray, memoryview]


# ---------------------------------------------------------------------------
# Library-level functions
# ---------------------------------------------------------------------------

def version() -> str:
    """The library's version string (``adm_version()``), e.g. ``"0.1.0"``."""
    return LIB.adm_version().decode()


def abi_version() -> int:
    """The ABI version compiled into the loaded library (``adm_abi_version()``)."""
    return int(LIB.adm_abi_version())


def backend_info() -> str:
    """A description of the compute backend: BLAS, GEMM kernel, threads, CPU features."""
    return LIB.adm_backend_info().decode("utf-8", "replace")


def set_num_threads(n: int) -> None:
    """Sets the number of compute threads for the whole process (0 = one per online CPU).

    Raises :class:`InvalidArgument` for values the library rejects.
    """
    LIB.adm_set_num_threads(_int32(n, "threads"))


ISAS = ("scalar", "avx2", "avx512")


def set_isa(name: Optional[str] = None) -> None:
    """Caps adamant's kernels at an instruction set: ``"avx512"``, ``"avx2"``, ``"scalar"``, or
    ``None``/``"auto"`` for the best this CPU and OS support (process-wide).

    adamant's own kernels switch at once; the OpenBLAS kernel follows the cap in force when it is
    first used, so set the ``ADAMANT_ISA`` environment variable before import to cap both.
    Raises :class:`InvalidArgument` for a level the machine lacks or an unknown name.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError("isa must be a string or None, got %r" % (name,))
    LIB.adm_set_isa(None if name is None else name.encode())


def isa() -> str:
    """The instruction-set level in force: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    return LIB.adm_isa().decode()


def supported_isas() -> List[str]:
    """Every level this machine can run, lowest first (e.g. ``["scalar", "avx2", "avx512"]``)."""
    top = LIB.adm_isa_supported().decode()
    return list(ISAS[:ISAS.index(top) + 1])


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _int32(v, name):
    """Converts v to a Python int that fits an int32, or raises InvalidArgument."""
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise InvalidArgument("%s must be an integer, got %r" % (name, v)) from None
    if i != v or not -_INT32_MAX - 1 <= i <= _INT32_MAX:
        raise InvalidArgument("%s must be an int32, got %r" % (name, v))
    return i


def _ptr(a, ptype):
    """A typed ctypes pointer to the data of numpy array a, or None (for a struct field too)."""
    return None if a is None else a.ctypes.data_as(ptype)


def _arg(a, ptype):
    """The data of numpy array a as a pointer argument of a call (not for a struct field), or None.

    A writable, contiguous, non-empty array goes by reference to its first element (0.24 us;
    ``a.ctypes.data_as`` takes 1.5 us, twice or more per call: most of a small model's per-call
    overhead here); any other through ``_ptr``.
    """
    if a is None:
        return None
    try:
        return byref(ptype._type_.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return _ptr(a, ptype)


def _labels(y, name="labels"):
    """Labels (any int-like array or scalar) as a contiguous 1-D int64 array (no copy if already so)."""
    a = np.asarray(y)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InvalidArgument("%s must be integer class indices" % name)
    elif a.dtype.kind not in "iub":
        raise InvalidArgument("%s must be integer class indices, got dtype %s" % (name, a.dtype))
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


def _offset(v):
    """A sample_offset argument as an int in [0, 2**64)."""
    if isinstance(v, bool):
        raise InvalidArgument("sample_offset must be an integer in [0, 2**64), got %r" % (v,))
    try:
        o = int(v)
    except (TypeError, ValueError):
        raise InvalidArgument("sample_offset must be an integer in [0, 2**64), got %r" % (v,)) from None
    if o != v or not 0 <= o < 2 ** 64:
        raise InvalidArgument("sample_offset must be an integer in [0, 2**64), got %r" % (v,))
    return o


def _chunks(n, batch_size):
    """[(start, stop)] covering range(n) in pieces of at most batch_size (one piece if None)."""
    if batch_size is None or n == 0:
        return [(0, n)]
    bs = int(batch_size)
    if bs < 1:
        raise InvalidArgument("batch_size must be at least 1, got %r" % (batch_size,))
    return [(s, min(n, s + bs)) for s in range(0, n, bs)]


class _NoBar:
    """Stand-in for a tqdm bar when progress is off or tqdm is missing."""

    def update(self, n=1):
        """Does nothing."""

    def close(self):
        """Does nothing."""


def _bar(total, enabled, desc):
    """A tqdm progress bar when enabled and tqdm is installed, otherwise a no-op."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - tqdm is optional
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False)


def _summarize(per_sample, lab):
    """evaluate()'s table from per-sample results (see Model._evaluate_samples) and the labels."""
    results = {}
    for name, r in per_sample.items():
        n = r["clean"].shape[0]
        out = {"n": int(n),
               "clean_acc": float(np.mean(r["clean"] == lab)) if n else float("nan"),
               "robust_acc": None, "attack_success_rate": None}
        if r["robust"] is not None:
            out["robust_acc"] = float(np.mean(r["robust"] == lab)) if n else float("nan")
            out["attack_success_rate"] = float(np.mean(r["success"])) if n else float("nan")
        results[name] = out
    return results


# ---------------------------------------------------------------------------
# Handles
# ---------------------------------------------------------------------------

class _ModelHandle:
    """Owns one adm_model*; freed when the last reference (Model, contexts, calibrators) goes.

    Passed to ctypes functions directly (``_as_parameter_``) so that it stays
    alive for the duration of the call.
    """

    __slots__ = ("ptr", "__weakref__")

    def __init__(self, ptr):
        self.ptr = ptr

    @property
    def _as_parameter_(self):
        return self.ptr

    def __del__(self):
        p, self.ptr = self.ptr, None
        if p:
            try:
                LIB.adm_model_free(p)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


class _Context:
    """Owns one adm_context* of one thread; keeps the model handle alive until freed.

    Passed to ctypes functions directly (``_as_parameter_``), so a caller that
    holds it keeps the context alive for the whole C call even if the model
    is closed from another thread meanwhile.
    """

    __slots__ = ("ptr", "model", "limits_version", "__weakref__")

    @property
    def _as_parameter_(self):
        return self.ptr

    def __init__(self, model_handle):
        self.model = model_handle
        self.ptr = None
        self.limits_version = 0  # the Model's limits last applied to this context
        p = ctypes.c_void_p()
        LIB.adm_context_create(model_handle.ptr, byref(p))
        self.ptr = p.value

    def __del__(self):
        p, self.ptr = self.ptr, None
        if p:
            try:
                LIB.adm_context_free(p)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass
        self.model = None  # the model handle may go only after its contexts


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _floats(v):
    """A sequence of numbers as a contiguous 1-D float32 array (the C layer checks its length)."""
    return np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1))


#: The architectures ``import_tensorpack`` builds.
TENSORPACK_ARCHS = ("resnet50", "resnet101", "resnet152", "resnet152-denoise", "resnext101-denoiseall")


def import_tensorpack(checkpoint: str, output: str, arch: str, blocks: Optional[Sequence[int]] = None,
                      input_size: int = 224) -> None:
    """Converts a tensorpack ``.npz`` checkpoint of facebookresearch/ImageNet-Adversarial-Training
    into an ONNX model at ``output`` (``adm_import_tensorpack``; the CLI's ``adamant import tensorpack``).

    Args:
        checkpoint: the ``.npz`` file (variables ``conv0/W``, ``group0/block0/conv1/bn/gamma``, ...).
        output: the ONNX file to write; ``adamant.load(output)`` reads it.
        arch: one of :data:`TENSORPACK_ARCHS`.
        blocks: 4 block counts per group overriding the architecture's (a depth-reduced variant).
        input_size: input height and width (the explicit 'SAME' pads depend on it).

    The model takes BGR images with pixels in [0, 255] (``channel_order == "bgr"``,
    ``pixel_range == (0, 255)``); the normalization ``(x - 127.5) / 127.5`` is stored in the file.
    A missing, misshaped or unused variable raises :class:`ShapeError` naming it.
    """
    if not isinstance(arch, str):
        raise InvalidArgument("arch must be a string, one of %s" % ", ".join(TENSORPACK_ARCHS))
    arr = None
    n = 0
    if blocks is not None:
        vals = [_int32(b, "blocks") for b in blocks]
        arr = (c_int32 * max(1, len(vals)))(*vals)
        n = len(vals)
    LIB.adm_import_tensorpack(os.fsencode(checkpoint), arch.encode(), arr, n, _int32(input_size, "input_size"),
                              os.fsencode(output))


def load(source: Source, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
         pixel_range: Optional[Tuple[float, float]] = None, default_domain: Optional[str] = None,
         memory_limit: Optional[int] = None) -> "Model":
    """Loads a model.

    Args:
        source: one of
            * a path (str or os.PathLike) of a plain ONNX file (one BN domain
              named ``"default"``) or of adamant's single-file multi-domain format;
            * a dict ``{domain_name: path}`` of per-domain exports of one
              network (dict order = domain order; the first is the default
              domain unless ``default_domain`` says otherwise), or a list of
              ``(name, path)`` pairs;
            * ``bytes``/``bytearray``/``memoryview`` holding a serialized model.
        mean, std: per-channel normalization in pixel units (length = input
            channels), overriding what the file stores; None keeps the stored
            one (files without one get no normalization).
        pixel_range: ``(lo, hi)`` valid pixel range attacks clip to, or None to
            keep the stored one (default ``(0, 1)``).
        default_domain: name of the domain used when none is given.
        memory_limit: bytes (int > 0) capping the model's weights plus the
            activations of any one call (estimated from the plan for its batch,
            checked before allocating); None = no cap. Loading fails with
            :class:`ResourceError` when the weights alone exceed it, and so does
            a predict / gradient / attack whose batch would push past it (split
            the batch). ``model.info()["memory"]`` gives the weights' bytes and
            a one-image call's estimate.

    Returns:
        :class:`Model`

    Raises:
        AdamantIOError, ParseError, UnsupportedError, DomainError, InvalidArgument, ResourceError.
    """
    opts = L.adm_load_options()
    LIB.adm_load_options_default(byref(opts))
    keep = []
    if mean is not None:
        m = _floats(mean)
        keep.append(m)
        opts.mean, opts.mean_len = _ptr(m, _FP), m.size
    if std is not None:
        s = _floats(std)
        keep.append(s)
        opts.std, opts.std_len = _ptr(s, _FP), s.size
    if pixel_range is not None:
        try:
            lo, hi = pixel_range
        except (TypeError, ValueError):
            raise InvalidArgument("pixel_range must be (lo, hi), got %r" % (pixel_range,)) from None
        opts.set_pixel_range, opts.pixel_min, opts.pixel_max = 1, float(lo), float(hi)
    if default_domain is not None:
        if not isinstance(default_domain, str):
            raise InvalidArgument("default_domain must be a domain name (str), got %r" % (default_domain,))
        opts.default_domain = default_domain.encode()
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, np.integer)) or memory_limit <= 0:
            raise InvalidArgument("memory_limit must be a positive number of bytes (int), got %r" % (memory_limit,))
        if memory_limit >= 2 ** 63:
            raise InvalidArgument("memory_limit must be below 2**63 bytes, got %d" % memory_limit)
        opts.memory_limit = int(memory_limit)

    out = ctypes.c_void_p()
    if isinstance(source, dict) or (isinstance(source, (list, tuple)) and source
                                     and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in source)):
        pairs = list(source.items()) if isinstance(source, dict) else [tuple(p) for p in source]
        names = [str(n).encode() for n, _ in pairs]
        paths = [os.fsencode(os.fspath(p)) for _, p in pairs]
        n = len(pairs)
        c_names = (c_char_p * max(n, 1))(*names)
        c_paths = (c_char_p * max(n, 1))(*paths)
        LIB.adm_model_load_domains(c_names, c_paths, n, byref(opts), byref(out))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(source, dtype=np.uint8)
        LIB.adm_model_load_memory(buf.ctypes.data if buf.size else None, buf.size, byref(opts), byref(out))
    else:
        LIB.adm_model_load(os.fsencode(os.fspath(source)), byref(opts), byref(out))  # type: ignore[arg-type]
    del keep
    return Model._from_handle(out.value)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

_C = TypeVar("_C", bound="_Closeable")


class _Closeable:
    """Context-manager and garbage-collection plumbing for objects owning a C handle."""

    def close(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Model(_Closeable):
    """A loaded network with one or more named BatchNorm domains.

    Immutable and shareable between threads: each thread lazily gets its own
    C execution context. Create with :func:`load` (or from a
    :class:`Calibrator`). Images are float32 NCHW in pixel space.

    Attributes:
        domains: list of domain names, in order (index = position).
        default_domain: name of the default domain.
        default_domain_index: its index.
        input_shape: ``(C, H, W)`` of one sample.
        num_classes: number of logits per sample.
        pixel_range: ``(lo, hi)`` valid pixel range attacks clip to.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("use adamant.load(...) to create a Model")

    @classmethod
    def _from_handle(cls, ptr):
        """Wraps a fresh adm_model* (owned from now on) and caches its static properties."""
        self = object.__new__(cls)
        self._handle = _ModelHandle(ptr)
        self._tls = threading.local()
        self._contexts = weakref.WeakSet()  # every thread's context, for cancel()
        self._contexts_lock = threading.Lock()
        self._limits = None  # None = the library's defaults; else an adm_context_limits
        self._limits_version = 0
        h = ptr
        n = c_size_t()
        LIB.adm_model_domain_count(h, byref(n))
        names = []
        for i in range(n.value):
            s = c_char_p()
            LIB.adm_model_domain_name(h, i, byref(s))
            names.append(s.value.decode())
        self.domains = names
        d = c_size_t()
        LIB.adm_model_default_domain(h, byref(d))
        self.default_domain_index = d.value
        self.default_domain = names[d.value]
        c, hh, w = c_size_t(), c_size_t(), c_size_t()
        LIB.adm_model_input_shape(h, byref(c), byref(hh), byref(w))
        self.input_shape = (c.value, hh.value, w.value)
        k = c_size_t()
        LIB.adm_model_num_classes(h, byref(k))
        self.num_classes = k.value
        lo, hi = c_float(), c_float()
        LIB.adm_model_pixel_range(h, byref(lo), byref(hi))
        self.pixel_range = (lo.value, hi.value)
        order = c_char_p()
        LIB.adm_model_channel_order(h, byref(order))
        self.channel_order = (order.value or b"rgb").decode()
        return self

    # -- lifetime ---------------------------------------------------------

    domains: List[str]
    default_domain: str
    default_domain_index: int
    input_shape: Tuple[int, int, int]
    num_classes: int
    pixel_range: Tuple[float, float]
    #: "rgb" or "bgr": the channel order the model's input expects (pixel space).
    channel_order: str
    _handle: Optional[_ModelHandle]
    _tls: Optional[threading.local]
    _contexts: "weakref.WeakSet[_Context]"
    _contexts_lock: threading.Lock
    _limits: Optional[L.adm_context_limits]
    _limits_version: int

    def close(self) -> None:
        """Drops this object's references to the C model and this thread's context.

        The C model is freed once no context or calibrator uses it any more
        (contexts of other threads go when those threads end). Using the model
        afterwards raises :class:`InvalidArgument`.
        """
        self._tls = None
        self._handle = None


    def _h(self):
        """The live model handle, or InvalidArgument if the model was closed."""
        h = getattr(self, "_handle", None)
        if h is None or not h.ptr:
            raise InvalidArgument("the model is closed")
        return h

    def _ctx(self):
        """This thread's context (a ``_Context``, created on first use; ``.ptr`` is the adm_context*)."""
        h = self._h()
        tls = self._tls
        if tls is None:  # closed by another thread meanwhile
            raise InvalidArgument("the model is closed")
        ctx = getattr(tls, "ctx", None)
        if ctx is None:
            ctx = _Context(h)
            tls.ctx = ctx
            with self._contexts_lock:
                self._contexts.add(ctx)
        if ctx.limits_version != self._limits_version:
            # Applied by the thread that owns the context, before its next call.
            lim = self._limits
            LIB.adm_context_set_limits(ctx, None if lim is None else byref(lim))
            ctx.limits_version = self._limits_version
        return ctx

    # -- limits and cancellation -------------------------------------------

    _LIMIT_FIELDS = ("max_batch", "max_pixels_per_image", "max_attack_steps_total", "max_input_bytes")

    def set_limits(self, **limits: int) -> None:
        """Sets what one call may ask for, for every thread using this model.

        Keywords (ints >= 0, 0 = no limit; the ones not given keep their value):
            max_batch: images per call (default 65536);
            max_pixels_per_image: H x W of the model's input (default 4096 x 4096);
            max_attack_steps_total: PGD steps x restarts per call (default 100000);
            max_input_bytes: bytes of one call's image batch (default 4 GiB).

        A call that would exceed a limit raises :class:`ResourceError` before it allocates
        anything. ``set_limits()`` with no keyword keeps everything; ``reset_limits()``
        restores the defaults.
        """
        unknown = set(limits) - set(self._LIMIT_FIELDS)
        if unknown:
            raise InvalidArgument("unknown limit(s) %s; known: %s" % (sorted(unknown), ", ".join(self._LIMIT_FIELDS)))
        cur = self.limits()
        for k, v in limits.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < 2 ** 63:
                raise InvalidArgument("%s must be an integer >= 0 (0 = no limit), got %r" % (k, v))
            cur[k] = int(v)
        lim = L.adm_context_limits()
        LIB.adm_context_limits_default(byref(lim))
        for k in self._LIMIT_FIELDS:
            setattr(lim, k, cur[k])
        self._limits = lim
        self._limits_version += 1

    def reset_limits(self) -> None:
        """Restores the library's default limits (see :meth:`set_limits`)."""
        self._limits = None
        self._limits_version += 1

    def limits(self) -> Dict[str, int]:
        """The limits in force, as a dict (see :meth:`set_limits`)."""
        lim = L.adm_context_limits()
        LIB.adm_context_limits_default(byref(lim))
        if self._limits is not None:
            lim = self._limits
        return {k: int(getattr(lim, k)) for k in self._LIMIT_FIELDS}

    def cancel(self) -> None:
        """Stops the attacks running on this model in any thread (call it from another thread).

        Each running call (:meth:`predict`, :meth:`gradient`, :meth:`pgd`, :meth:`apgd`, ...)
        stops between two ops of its forward or backward pass (attacks: within one step) and
        raises :class:`CancelledError`. A cancel that arrives while no call runs has no effect
        on later calls.
        """
        self._h()
        with self._contexts_lock:
            contexts = list(self._contexts)
        for ctx in contexts:
            if ctx.ptr:
                LIB.adm_context_cancel(ctx)

    def __repr__(self) -> str:
        if getattr(self, "_handle", None) is None:
            return "<adamant.Model (closed)>"
        return "<adamant.Model input=%s classes=%d domains=%s default=%r>" % (
            self.input_shape, self.num_classes, self.domains, self.default_domain)

    # -- introspection ----------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """The library's JSON description of the model, as a dict.

        Keys include ``input``, ``classes``, ``domains``, ``default_domain``,
        ``opset``, ``ops``, ``parameters``, ``flops_per_sample``,
        ``batchnorm_nodes`` and ``preprocessing``.
        """
        h = self._h()
        needed = c_size_t(0)
        st = LIB.adm_model_info_json(h, None, 0, byref(needed))
        if st != L.ADM_OK and needed.value == 0:
            L._errcheck(st, LIB.adm_model_info_json, ())
        buf = ctypes.create_string_buffer(needed.value)
        st = LIB.adm_model_info_json(h, buf, needed.value, byref(needed))
        if st != L.ADM_OK:
            L._errcheck(st, LIB.adm_model_info_json, ())
        return json.loads(buf.value.decode("utf-8"))

    def domain_index(self, domain: Domain = None) -> int:
        """Index of ``domain`` (a name or an index; None = the default domain).

        Names are resolved by the library (unknown name -> :class:`DomainError`);
        indices are passed through and validated where they are used.
        """
        if domain is None:
            return self.default_domain_index
        if isinstance(domain, str):
            out = c_size_t()
            LIB.adm_model_domain_index(self._h(), domain.encode(), byref(out))
            return out.value
        if isinstance(domain, (bool, np.bool_)) or not isinstance(domain, (int, np.integer)):
            raise InvalidArgument("domain must be a name (str) or an index (int), got %r" % (domain,))
        i = int(domain)
        return i if i >= 0 else i & 0xFFFFFFFFFFFFFFFF  # C reports it as out of range

    def _images(self, x, scale=None):
        """x as a C-contiguous float32 array with a batch axis (view if possible), and whether it was 3-D.

        Integer/boolean input needs ``scale`` (see the module docstring); ``scale`` multiplies any input.
        """
        raw = x if isinstance(x, np.ndarray) else np.asarray(x)
        if raw.dtype.kind in "iub" and scale is None:
            raise InvalidArgument(
                "images have integer dtype %s; adamant takes float pixels in the model's range %s. Pass "
                "scale= to say how to convert them (e.g. scale=1/255 for 0..255 images), or convert them "
                "yourself" % (raw.dtype, tuple(round(v, 6) for v in self.pixel_range)))
        if raw.dtype.kind not in "iubf":
            raise InvalidArgument("images must be a numeric array (float pixels), got dtype %s" % (raw.dtype,))
        if scale is None:
            a = np.ascontiguousarray(raw, dtype=np.float32)
        else:
            try:
                sc = float(scale)
            except (TypeError, ValueError):
                raise InvalidArgument("scale must be a finite positive number, got %r" % (scale,)) from None
            if not (np.isfinite(sc) and sc > 0):
                raise InvalidArgument("scale must be a finite positive number, got %r" % (scale,))
            a = np.ascontiguousarray(raw.astype(np.float32) * np.float32(sc), dtype=np.float32)
        single = a.ndim == 3
        if single:
            a = a.reshape((1,) + a.shape)
        if a.ndim != 4:
            raise ShapeError("images must be (N, C, H, W) or (C, H, W) float32 arrays, got shape %s; "
                             "the model takes (N,) + %s" % (a.shape, self.input_shape))
        # (the element count only when the shapes differ: np.prod costs 2 us, most of a small
        # model's per-call overhead here)
        if tuple(a.shape[1:]) != tuple(self.input_shape) and a[0:1].size == math.prod(self.input_shape):
            # Same element count but another layout (NHWC?): C cannot see this.
            raise ShapeError("images have shape %s but the model takes (N,) + %s (NCHW)"
                             % (a.shape, self.input_shape))
        return a, single

    # -- inference --------------------------------------------------------

    def _predict_into(self, a, d, out, batch_size, bar):
        """Writes the logits of images a (contiguous float32 NCHW) through domain index d into out."""
        ctx = self._ctx()
        k = self.num_classes
        for s, e in _chunks(a.shape[0], batch_size):
            xs, ys = a[s:e], out[s:e]
            LIB.adm_predict(ctx, d, _arg(xs, _FP), xs.size, e - s, _arg(ys, _FP), (e - s) * k)
            bar.update(1)

    def predict(self, x: npt.ArrayLike, domain: Domain = None, batch_size: Optional[int] = None,
                progress: bool = False, scale: Optional[float] = None) -> np.ndarray:
        """Logits for pixel-space images.

        Args:
            x: float ``(N, C, H, W)`` images (or one ``(C, H, W)`` image,
                treated as a batch of 1), pixel space; float64 and
                non-contiguous arrays are converted to contiguous float32 (a
                copy). Integer arrays need ``scale``.
            domain: BN domain name or index; None = the default domain.
            batch_size: run in chunks of at most this many images (None = all at once).
            progress: show a tqdm progress bar over chunks.
            scale: multiply the input by this first (required for integer
                arrays, e.g. ``1/255`` for uint8 images in 0..255).

        Returns:
            float32 array ``(N, num_classes)``.
        """
        a, _ = self._images(x, scale)
        d = self.domain_index(domain)
        out = np.empty((a.shape[0], self.num_classes), dtype=np.float32)
        bar = _bar(len(_chunks(a.shape[0], batch_size)), progress, "predict")
        try:
            self._predict_into(a, d, out, batch_size, bar)
        finally:
            bar.close()
        return out

    def gradient(self, x: npt.ArrayLike, y: Labels, domain: Domain = None, loss: str = "ce",
                 batch_size: Optional[int] = None, target: Optional[Labels] = None,
                 scale: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sample loss and its gradient with respect to the pixel-space input.

        Args:
            x: float32 ``(N, C, H, W)`` (or ``(C, H, W)``) images.
            y: int labels, ``N`` of them, each in ``[0, num_classes)``.
            domain: BN domain (name or index, None = default), inference mode.
            loss: ``"ce"`` (cross-entropy), ``"cw"`` (Carlini-Wagner margin
                ``max_{j != y} z_j - z_y``), ``"dlr"`` (difference of logits
                ratio, >= 3 classes) or ``"dlr-targeted"`` (needs ``target``,
                >= 4 classes).
            batch_size: optional chunking (results do not depend on it).
            target: N target labels, for ``"dlr-targeted"`` only.
            scale: as in :meth:`predict` (the gradient is still with respect
                to the scaled, pixel-space input).

        Returns:
            ``(loss, grad)``: float32 ``(N,)`` and float32 of x's shape.
        """
        if loss == "dlr-targeted" or target is not None:
            return self._gradient_targeted(x, y, domain, loss, batch_size, target, scale)
        lid = _LOSSES.get(loss)
        if lid is None:
            raise InvalidArgument("loss must be 'ce', 'cw', 'dlr' or 'dlr-targeted', got %r" % (loss,))
        a, single = self._images(x, scale)
        lab = _labels(y)
        d = self.domain_index(domain)
        n = a.shape[0]
        losses = np.empty(n, dtype=np.float32)
        grad = np.empty(a.shape, dtype=np.float32)
        ctx = self._ctx()
        chunks = _chunks(n, batch_size) if lab.size == n else [(0, n)]  # let C report the mismatch
        for s, e in chunks:
            xs, gs, ls = a[s:e], grad[s:e], losses[s:e]
            lb = lab[s:e] if len(chunks) > 1 else lab
            LIB.adm_gradient(ctx, d, lid, _arg(xs, _FP), xs.size, e - s, _arg(lb, _I64P), lb.size,
                             _arg(ls, _FP), ls.size, _arg(gs, _FP), gs.size)
        return losses, (grad[0] if single else grad)

    def _gradient_targeted(self, x, y, domain, loss, batch_size, target, scale=None):
        """gradient() through adm_gradient_targeted (targeted DLR)."""
        lid = dict(_LOSSES, **{"dlr-targeted": L.ADM_LOSS_DLR_TARGETED}).get(loss)
        if lid is None:
            raise InvalidArgument("loss must be 'ce', 'cw', 'dlr' or 'dlr-targeted', got %r" % (loss,))
        a, single = self._images(x, scale)
        lab = _labels(y)
        tgt = None if target is None else _labels(target, "target")
        d = self.domain_index(domain)
        n = a.shape[0]
        losses = np.empty(n, dtype=np.float32)
        grad = np.empty(a.shape, dtype=np.float32)
        ctx = self._ctx()
        ok = lab.size == n and (tgt is None or tgt.size == n)
        chunks = _chunks(n, batch_size) if ok else [(0, n)]
        for s, e in chunks:
            whole = len(chunks) == 1
            xs, gs, ls = a[s:e], grad[s:e], losses[s:e]
            lb = lab if whole else lab[s:e]
            tb = None if tgt is None else (tgt if whole else tgt[s:e])
            LIB.adm_gradient_targeted(ctx, d, lid, _arg(xs, _FP), xs.size, e - s, _arg(lb, _I64P), lb.size,
                                      None if tb is None else _arg(tb, _I64P), 0 if tb is None else tb.size,
                                      _arg(ls, _FP), ls.size, _arg(gs, _FP), gs.size)
        return losses, (grad[0] if single else grad)

    def vjp(self, x: npt.ArrayLike, grad_logits: npt.ArrayLike, domain: Domain = None,
            batch_size: Optional[int] = None, return_logits: bool = False,
            scale: Optional[float] = None) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Vector-Jacobian product of the logits (``adm_vjp``): what a framework's backward needs.

        For each sample ``i``, the gradient of ``sum_j grad_logits[i, j] * logits[i, j]`` with
        respect to its pixel-space input, through ``domain`` (inference mode).

        Args:
            x: images, as in :meth:`predict`.
            grad_logits: ``(N, num_classes)`` upstream gradient of the logits
                (converted to float32; must be finite).
            domain, batch_size, scale: as in :meth:`predict`.
            return_logits: also return the logits of the same forward pass.

        Returns:
            float32 of x's shape, or ``(grad, logits)``.
        """
        a, single = self._images(x, scale)
        gz = np.asarray(grad_logits)
        if gz.dtype.kind not in "iubf":
            raise InvalidArgument("grad_logits must be a numeric array, got dtype %s" % (gz.dtype,))
        gz = np.ascontiguousarray(gz, dtype=np.float32)
        d = self.domain_index(domain)
        n, k = a.shape[0], self.num_classes
        grad = np.empty(a.shape, dtype=np.float32)
        logits = np.empty((n, k), dtype=np.float32)
        ctx = self._ctx()
        chunks = _chunks(n, batch_size) if gz.size == n * k else [(0, n)]  # let C report the mismatch
        gzf = gz.reshape(-1)
        for s, e in chunks:
            whole = len(chunks) == 1
            xs, gs, zs = a[s:e], grad[s:e], logits[s:e]
            gb = gzf if whole else gzf[s * k:e * k]
            LIB.adm_vjp(ctx, d, _arg(xs, _FP), xs.size, e - s, _arg(gb, _FP), gb.size,
                        _arg(zs, _FP), zs.size, _arg(gs, _FP), gs.size)
        g = grad[0] if single else grad
        return (g, logits) if return_logits else g

    # -- attacks ----------------------------------------------------------

    def _attack_config(self, eps, alpha, steps, random_start, norm, restarts, loss, early_stop,
                       attack_domain, eval_domain, seed):
        """An adm_attack_config from Python arguments (types converted; values checked by C)."""
        cfg = L.adm_attack_config()
        LIB.adm_attack_config_default(byref(cfg))
        nid = _NORMS.get(str(norm).lower())
        if nid is None:
            raise InvalidArgument("norm must be 'linf' or 'l2', got %r" % (norm,))
        lid = _LOSSES.get(loss)
        if lid is None:
            raise InvalidArgument("loss must be 'ce', 'cw' or 'dlr', got %r" % (loss,))
        cfg.norm, cfg.loss = nid, lid
        cfg.eps, cfg.alpha = float(eps), float(alpha)
        cfg.steps = _int32(steps, "steps")
        cfg.restarts = _int32(restarts, "restarts")
        cfg.random_start = 1 if random_start else 0
        cfg.early_stop = 1 if early_stop else 0
        cfg.attack_domain = self.domain_index(attack_domain)
        cfg.eval_domain = self.domain_index(eval_domain)
        try:
            s = int(seed)
        except (TypeError, ValueError):
            raise InvalidArgument("seed must be an integer in [0, 2**64), got %r" % (seed,)) from None
        if not 0 <= s < 2 ** 64:
            raise InvalidArgument("seed must be an integer in [0, 2**64), got %r" % (seed,))
        cfg.seed = s
        return cfg

    def attack_preset(self, name: str, steps: int = 10) -> Dict[str, Any]:
        """Keyword arguments of :meth:`pgd` for a reference threat model, in this model's pixel units.

        ``"xie2020"``: the evaluation of Xie et al. (Feature Denoising, CVPR 2019; Intriguing
        Properties of Adversarial Training at Scale, ICLR 2020; ``adv_model.py`` of
        ImageNet-Adversarial-Training): targeted L-inf PGD towards a class drawn uniformly among the
        wrong ones, cross-entropy, random start, ``eps`` = 16/255 of the pixel range (16 for a
        tensorpack import, whose pixels are in [0, 255]; 16/255 for a [0, 1] model) and step
        ``max(range/255, eps/steps)``. Use as ``m.pgd(x, y, **m.attack_preset("xie2020", steps=100))``
        (the CLI's ``--preset xie2020``).
        """
        if name != "xie2020":
            raise InvalidArgument("unknown attack preset %r; the presets are: xie2020" % (name,))
        steps = _int32(steps, "steps")
        if steps < 1:
            raise InvalidArgument("steps must be at least 1, got %d" % steps)
        lo, hi = self.pixel_range
        span = float(np.float32(hi) - np.float32(lo))
        eps = 16.0 / 255.0 * span
        return {"eps": eps, "alpha": max(span / 255.0, eps / steps), "steps": steps, "targeted": True,
                "random_start": True, "norm": "linf", "loss": "ce"}

    def pgd(self, x: npt.ArrayLike, y: Labels, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
            random_start: bool = True, norm: str = "linf", targeted: Optional[bool] = None,
            target: Optional[Labels] = None, restarts: int = 1, loss: str = "ce", early_stop: bool = False,
            domain: Domain = None, attack_domain: Domain = None, eval_domain: Domain = None, seed: int = 0,
            return_details: bool = False, batch_size: Optional[int] = None, progress: bool = False,
            scale: Optional[float] = None, sample_offset: int = 0) -> Union[np.ndarray, Tuple[np.ndarray, Details]]:
        """Projected gradient descent (torchattacks semantics and defaults).

        Args:
            x: float32 ``(N, C, H, W)`` (or ``(C, H, W)``) images in the pixel range.
            y: true labels (N ints).
            eps, alpha: ball radius and step size, pixel units (> 0).
            steps: iterations (>= 1).
            random_start: start uniformly inside the ball.
            norm: ``"linf"`` (sign steps) or ``"l2"`` (normalized steps).
            targeted: True with ``target=None``: targets drawn uniformly among
                the wrong classes (``ADM_TARGETED_RANDOM``). None (default):
                targeted exactly when ``target`` is given.
            target: explicit target labels (N ints, each != its label);
                implies a targeted attack (``ADM_TARGETED``). Giving targets
                with ``targeted=False`` is an error (:class:`InvalidArgument`),
                never silently ignored.
            restarts: independent runs; per sample the strongest is kept (>= 1).
            loss: ``"ce"`` or ``"cw"``.
            early_stop: stop a sample once it succeeds.
            domain: shorthand for both ``attack_domain`` and ``eval_domain``.
            attack_domain: BN domain whose gradients drive the attack (default:
                ``domain``, else the default domain).
            eval_domain: BN domain that judges success (default: ``domain``,
                else the default domain).
            seed: RNG seed (random start, random targets), 0 <= seed < 2**64.
                Same seed => bit-identical output, whatever the batch size,
                batch-mates or thread count (each sample has its own stream).
            return_details: also return a dict of per-sample outcomes.
            batch_size: attack in chunks (None = one call); the result is the
                same for any batch_size.
            progress: show a tqdm progress bar over chunks.
            scale: as in :meth:`predict`; ``x_adv`` is in the model's pixel
                space (not rescaled back).
            sample_offset: index of ``x[0]`` in the caller's whole set (default
                0): sample i uses the random stream of (seed, sample_offset + i),
                so a set split into shards (e.g. across machines, see
                :mod:`adamant.distributed`) gives the same result as one call
                when each shard passes its start index.

        Returns:
            ``x_adv`` (float32, x's shape), or ``(x_adv, details)`` with
            details = ``{"success": bool (N,), "loss": float32 (N,),
            "steps_used": int32 (N,), "targets": int64 (N,) (-1 untargeted),
            "predictions": int64 (N,)}`` (success and predictions judged in
            ``eval_domain``).
        """
        a, single = self._images(x, scale)
        lab = _labels(y)
        cfg = self._attack_config(eps, alpha, steps, random_start, norm, restarts, loss, early_stop,
                                  domain if attack_domain is None else attack_domain,
                                  domain if eval_domain is None else eval_domain, seed)
        tgt = None
        if target is not None:
            tgt = _labels(target, "target")
            # targeted=False with targets: passed on as ADM_UNTARGETED + targets, which C rejects.
            cfg.target_mode = L.ADM_UNTARGETED if targeted is False else L.ADM_TARGETED
        elif targeted:
            cfg.target_mode = L.ADM_TARGETED_RANDOM
        off = _offset(sample_offset)
        bar = _bar(len(_chunks(a.shape[0], batch_size)), progress, "pgd")
        try:
            adv, details = self._pgd_into(a, lab, tgt, cfg, batch_size, bar, off)
        finally:
            bar.close()
        if single:
            adv = adv[0]
        return (adv, details) if return_details else adv

    def _pgd_into(self, a, lab, tgt, cfg, batch_size, bar, offset=0):
        """Runs adm_attack_pgd over chunks of a (a[0] being sample `offset` of the whole set);
        returns (x_adv, details dict)."""
        n = a.shape[0]
        adv = np.empty(a.shape, dtype=np.float32)
        det = {
            "success": np.zeros(n, dtype=np.uint8),
            "loss": np.zeros(n, dtype=np.float32),
            "steps_used": np.zeros(n, dtype=np.int32),
            "targets": np.full(n, -1, dtype=np.int64),
            "predictions": np.zeros(n, dtype=np.int64),
        }
        ctx = self._ctx()
        consistent = lab.size == n and (tgt is None or tgt.size == n)
        chunks = _chunks(n, batch_size) if consistent else [(0, n)]  # let C report mismatches
        for k, (s, e) in enumerate(chunks):
            whole = len(chunks) == 1
            xs, xa = a[s:e], adv[s:e]
            lb = lab if whole else lab[s:e]
            if tgt is not None:
                t = tgt if whole else tgt[s:e]
                cfg.targets, cfg.targets_len = _ptr(t, _I64P), t.size
            cfg.sample_offset = offset + s  # per-sample random streams: chunking changes nothing
            out = L.adm_attack_outputs()
            out.struct_size = ctypes.sizeof(out)
            out.len = e - s
            out.success = _ptr(det["success"][s:e], _U8P)
            out.loss = _ptr(det["loss"][s:e], _FP)
            out.steps_used = _ptr(det["steps_used"][s:e], _I32P)
            out.targets = _ptr(det["targets"][s:e], _I64P)
            out.predictions = _ptr(det["predictions"][s:e], _I64P)
            LIB.adm_attack_pgd(ctx, byref(cfg), _arg(xs, _FP), xs.size, e - s, _arg(lb, _I64P), lb.size,
                               _arg(xa, _FP), xa.size, byref(out))
            bar.update(1)
        cfg.sample_offset = 0
        det["success"] = det["success"].astype(bool)
        return adv, det

    def _apgd_config(self, eps, steps, norm, restarts, loss, n_target_classes, rho, random_start, early_stop,
                     attack_domain, eval_domain, seed):
        """An adm_apgd_config from Python arguments (types converted; values checked by C)."""
        cfg = L.adm_apgd_config()
        LIB.adm_apgd_config_default(byref(cfg))
        nid = _NORMS.get(str(norm).lower())
        if nid is None:
            raise InvalidArgument("norm must be 'linf' or 'l2', got %r" % (norm,))
        lid = _LOSSES.get(loss)
        if lid is None:
            raise InvalidArgument("loss must be 'ce', 'cw' or 'dlr', got %r" % (loss,))
        cfg.norm, cfg.loss = nid, lid
        cfg.eps = float(eps)
        cfg.steps = _int32(steps, "steps")
        cfg.restarts = _int32(restarts, "restarts")
        cfg.n_target_classes = _int32(n_target_classes, "n_target_classes")
        cfg.rho = float(rho)
        cfg.random_start = 1 if random_start else 0
        cfg.early_stop = 1 if early_stop else 0
        cfg.attack_domain = self.domain_index(attack_domain)
        cfg.eval_domain = self.domain_index(eval_domain)
        try:
            sd = int(seed)
        except (TypeError, ValueError):
            raise InvalidArgument("seed must be an integer in [0, 2**64), got %r" % (seed,)) from None
        if not 0 <= sd < 2 ** 64:
            raise InvalidArgument("seed must be an integer in [0, 2**64), got %r" % (seed,))
        cfg.seed = sd
        return cfg

    def apgd(self, x: npt.ArrayLike, y: Labels, eps: float = 8 / 255, steps: int = 100, norm: str = "linf",
             loss: str = "ce", restarts: int = 1, targeted: Optional[Union[bool, str]] = None,
             target: Optional[Labels] = None, n_target_classes: int = 9, rho: float = 0.75,
             random_start: bool = True, early_stop: bool = True, domain: Domain = None,
             attack_domain: Domain = None, eval_domain: Domain = None, seed: int = 0,
             return_details: bool = False, batch_size: Optional[int] = None, progress: bool = False,
             scale: Optional[float] = None, sample_offset: int = 0) -> Union[np.ndarray, Tuple[np.ndarray, Details]]:
        """Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR, APGD-T.

        Momentum 0.75, first step 2*eps, the step halved at checkpoints where
        the loss stalls (restarting from the best point). Per sample and
        deterministic per seed like :meth:`pgd`.

        Args:
            x, y: pixel-space images and true labels.
            eps: ball radius (pixel units). steps: iterations per run.
            norm: ``"linf"`` or ``"l2"``.
            loss: ``"ce"`` (default), ``"cw"`` or ``"dlr"`` (targeted runs use
                targeted DLR).
            restarts: runs (random starts) per target; a sample that succeeded
                is not attacked again.
            targeted: ``"top-k"``: APGD-T, each of the ``n_target_classes``
                wrong classes with the largest clean logits in turn (success =
                misclassified; use with ``loss="dlr"``); True: random targets;
                None/False: untargeted unless ``target`` is given.
            target: explicit targets (N ints, each != its label).
            n_target_classes: APGD-T's targets per sample (capped at classes - 1).
            rho: checkpoint threshold (0.75).
            random_start, early_stop, domain, attack_domain, eval_domain, seed,
            batch_size, progress: as in :meth:`pgd` (early_stop defaults to
                True: a sample's result is its first adversarial point).
            return_details: also return the per-sample dict of :meth:`pgd`
                (``loss`` is the objective ascended).
            scale, sample_offset: as in :meth:`pgd`.

        Returns:
            ``x_adv`` or ``(x_adv, details)``.
        """
        a, single = self._images(x, scale)
        lab = _labels(y)
        cfg = self._apgd_config(eps, steps, norm, restarts, loss, n_target_classes, rho, random_start, early_stop,
                                domain if attack_domain is None else attack_domain,
                                domain if eval_domain is None else eval_domain, seed)
        tgt = None
        if isinstance(targeted, str):
            if targeted.lower() not in ("top-k", "topk", "top"):
                raise InvalidArgument("targeted must be 'top-k', True, False or None, got %r" % (targeted,))
            cfg.target_mode = L.ADM_TARGETED_TOP_K
            if target is not None:  # passed on with ADM_TARGETED_TOP_K, which C rejects
                tgt = _labels(target, "target")
        elif target is not None:
            tgt = _labels(target, "target")
            cfg.target_mode = L.ADM_UNTARGETED if targeted is False else L.ADM_TARGETED
        elif targeted:
            cfg.target_mode = L.ADM_TARGETED_RANDOM
        off = _offset(sample_offset)
        bar = _bar(len(_chunks(a.shape[0], batch_size)), progress, "apgd")
        try:
            adv, details = self._attack_into(a, lab, tgt, cfg, batch_size, bar, LIB.adm_attack_apgd, off)
        finally:
            bar.close()
        if single:
            adv = adv[0]
        return (adv, details) if return_details else adv

    def autoattack_lite(self, x: npt.ArrayLike, y: Labels, eps: float = 8 / 255, steps: int = 100,
                        norm: str = "linf", restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75,
                        domain: Domain = None, attack_domain: Domain = None, eval_domain: Domain = None,
                        seed: int = 0, return_adversarial: bool = False, batch_size: Optional[int] = None,
                        progress: bool = False, log: bool = False, scale: Optional[float] = None,
                        sample_offset: int = 0) -> Union[Dict[str, Any], Tuple[Dict[str, Any], np.ndarray, Details]]:
        """AutoAttack's APGD-CE then APGD-T (targeted DLR) on the images still robust.

        Returns a dict like AutoAttack's log: ``{"n", "clean_acc",
        "robust_acc_apgd_ce", "robust_acc_apgd_t" (the final robust accuracy),
        "robust_acc"}``; with ``return_adversarial``, ``(report, x_adv,
        details)``. ``log=True`` prints the AutoAttack-style lines. ``scale``, ``sample_offset``: as
        in :meth:`pgd`.
        """
        a, single = self._images(x, scale)
        lab = _labels(y)
        cfg = self._apgd_config(eps, steps, norm, restarts, "ce", n_target_classes, rho, True, True,
                                domain if attack_domain is None else attack_domain,
                                domain if eval_domain is None else eval_domain, seed)
        counts = {"clean_correct": 0, "robust_after_apgd_ce": 0, "robust_after_apgd_t": 0}

        def call(ctx, cfgp, xp, xl, b, lp, ll, ap, al, outp):
            rep = L.adm_autoattack_report()
            rep.struct_size = ctypes.sizeof(rep)
            LIB.adm_autoattack_lite(ctx, cfgp, xp, xl, b, lp, ll, ap, al, outp, byref(rep))
            for k in counts:
                counts[k] += getattr(rep, k)

        off = _offset(sample_offset)
        bar = _bar(len(_chunks(a.shape[0], batch_size)), progress, "autoattack-lite")
        try:
            adv, details = self._attack_into(a, lab, None, cfg, batch_size, bar, call, off)
        finally:
            bar.close()
        n = a.shape[0]
        frac = (lambda c: c / n) if n else (lambda c: float("nan"))
        report = {"n": int(n), "clean_acc": frac(counts["clean_correct"]),
                  "robust_acc_apgd_ce": frac(counts["robust_after_apgd_ce"]),
                  "robust_acc_apgd_t": frac(counts["robust_after_apgd_t"]),
                  "robust_acc": frac(counts["robust_after_apgd_t"])}
        if log:
            print("initial accuracy: %.2f%%" % (100 * report["clean_acc"]))
            print("robust accuracy after APGD-CE: %.2f%%" % (100 * report["robust_acc_apgd_ce"]))
            print("robust accuracy after APGD-T: %.2f%%" % (100 * report["robust_acc_apgd_t"]))
        if return_adversarial:
            return report, (adv[0] if single else adv), details
        return report

    def _attack_into(self, a, lab, tgt, cfg, batch_size, bar, fn, offset=0):
        """Runs an attack call fn(ctx, cfg, x, x_len, batch, labels, labels_len, x_adv, x_adv_len, outputs)
        over chunks of a; returns (x_adv, details dict)."""
        n = a.shape[0]
        adv = np.empty(a.shape, dtype=np.float32)
        det = {
            "success": np.zeros(n, dtype=np.uint8),
            "loss": np.zeros(n, dtype=np.float32),
            "steps_used": np.zeros(n, dtype=np.int32),
            "targets": np.full(n, -1, dtype=np.int64),
            "predictions": np.zeros(n, dtype=np.int64),
        }
        ctx = self._ctx()
        consistent = lab.size == n and (tgt is None or tgt.size == n)
        chunks = _chunks(n, batch_size) if consistent else [(0, n)]  # let C report mismatches
        for s, e in chunks:
            whole = len(chunks) == 1
            xs, xa = a[s:e], adv[s:e]
            lb = lab if whole else lab[s:e]
            if tgt is not None:
                t = tgt if whole else tgt[s:e]
                cfg.targets, cfg.targets_len = _ptr(t, _I64P), t.size
            cfg.sample_offset = offset + s
            out = L.adm_attack_outputs()
            out.struct_size = ctypes.sizeof(out)
            out.len = e - s
            out.success = _ptr(det["success"][s:e], _U8P)
            out.loss = _ptr(det["loss"][s:e], _FP)
            out.steps_used = _ptr(det["steps_used"][s:e], _I32P)
            out.targets = _ptr(det["targets"][s:e], _I64P)
            out.predictions = _ptr(det["predictions"][s:e], _I64P)
            fn(ctx, byref(cfg), _arg(xs, _FP), xs.size, e - s, _arg(lb, _I64P), lb.size,
               _arg(xa, _FP), xa.size, byref(out))
            bar.update(1)
        cfg.sample_offset = 0
        det["success"] = det["success"].astype(bool)
        return adv, det

    def fgsm(self, x: npt.ArrayLike, y: Labels, eps: float = 8 / 255, loss: str = "ce",
             targeted: Optional[bool] = None, target: Optional[Labels] = None, domain: Domain = None,
             attack_domain: Domain = None, eval_domain: Domain = None, seed: int = 0,
             return_details: bool = False, batch_size: Optional[int] = None, progress: bool = False,
             scale: Optional[float] = None, sample_offset: int = 0) -> Union[np.ndarray, Tuple[np.ndarray, Details]]:
        """Fast gradient sign method: ``pgd(steps=1, alpha=eps, random_start=False)``.

        Arguments and return value as in :meth:`pgd` (L-infinity only).
        """
        return self.pgd(x, y, eps=eps, alpha=eps, steps=1, random_start=False, norm="linf",
                        targeted=targeted, target=target, restarts=1, loss=loss, early_stop=False,
                        domain=domain, attack_domain=attack_domain, eval_domain=eval_domain, seed=seed,
                        return_details=return_details, batch_size=batch_size, progress=progress, scale=scale,
                        sample_offset=sample_offset)

    def evaluate(self, x: npt.ArrayLike, y: Labels, attack: Optional[str] = None,
                 domains: Optional[Union[str, int, Sequence[Union[str, int]]]] = None, batch_size: int = 256,
                 progress: bool = True, attack_domain: Domain = None, scale: Optional[float] = None,
                 sample_offset: int = 0, **attack_kwargs: Any) -> Dict[str, Dict[str, Any]]:
        """Clean (and robust) accuracy per BN domain.

        Args:
            x, y: pixel-space images and their labels.
            attack: None, ``"pgd"`` or ``"fgsm"``.
            domains: names/indices to evaluate (None = every domain).
            batch_size: chunk size for inference and attacks.
            progress: show a tqdm progress bar.
            attack_domain: domain that drives the attack; None = attack each
                domain through itself (the evaluated domain judges success).
            **attack_kwargs: passed to :meth:`pgd` / :meth:`fgsm` (eps, steps,
                targeted, seed, ...).
            scale: as in :meth:`predict`.
            sample_offset: as in :meth:`pgd` (index of ``x[0]`` in the whole
                set; :func:`adamant.distributed.evaluate` shards a set this way).

        Returns:
            ``{domain_name: {"n", "clean_acc", "robust_acc",
            "attack_success_rate"}}``; without an attack the last two are None.
            attack_success_rate is the fraction with prediction != label
            (untargeted) or prediction == target (targeted).
        """
        a, _ = self._images(x, scale)
        lab = _labels(y)
        per_sample = self._evaluate_samples(a, lab, attack, domains, batch_size, progress, attack_domain,
                                            _offset(sample_offset), attack_kwargs)
        return _summarize(per_sample, lab)

    def _evaluate_samples(self, a, lab, attack, domains, batch_size, progress, attack_domain, offset,
                          attack_kwargs):
        """evaluate()'s per-sample work on images a (contiguous float32) and labels lab, a[0] being
        sample `offset` of the whole set: ``{domain_name: {"clean": predicted classes int64 (n,),
        "robust": predictions under attack int64 (n,) or None, "success": bool (n,) or None}}``."""
        if attack not in (None, "pgd", "fgsm"):
            raise InvalidArgument("attack must be None, 'pgd' or 'fgsm', got %r" % (attack,))
        for k in ("return_details", "batch_size", "progress", "domain", "eval_domain", "sample_offset"):
            if k in attack_kwargs:
                raise InvalidArgument("evaluate() sets %r itself" % k)
        doms = list(range(len(self.domains))) if domains is None else \
            [domains] if isinstance(domains, (str, int, np.integer)) else list(domains)
        idx = [self.domain_index(d) for d in doms]  # unknown indices: C raises DomainError below
        n = a.shape[0]
        per = len(_chunks(n, batch_size))
        bar = _bar(per * len(idx) * (2 if attack else 1), progress, "evaluate")
        results = {}
        try:
            for i in idx:
                name = self.domains[i] if 0 <= i < len(self.domains) else str(i)
                logits = np.empty((n, self.num_classes), dtype=np.float32)
                self._predict_into(a, i, logits, batch_size, bar)
                r: Dict[str, Any] = {"clean": logits.argmax(1).astype(np.int64), "robust": None, "success": None}
                if attack is not None:
                    kw = dict(attack_kwargs)
                    fn = self.pgd if attack == "pgd" else self.fgsm
                    _, det = fn(a, lab, attack_domain=i if attack_domain is None else attack_domain,
                                eval_domain=i, return_details=True, batch_size=batch_size, progress=False,
                                sample_offset=offset, **kw)
                    bar.update(per)
                    r["robust"], r["success"] = det["predictions"], det["success"]
                results[name] = r
        finally:
            bar.close()
        return results

    # -- saving and calibration ------------------------------------------

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the model with all its domains and preprocessing as one ONNX file.

        ONNX Runtime runs the file unchanged with the default domain;
        :func:`load` restores every domain.
        """
        LIB.adm_model_save(self._h(), os.fsencode(os.fspath(path)))

    def calibrator(self, base_domain: Domain = None) -> "Calibrator":
        """A :class:`Calibrator` that builds a new BN domain from ``base_domain``'s affine parameters.

        Raises :class:`UnsupportedError` for models without BatchNormalization nodes.
        """
        return Calibrator(self, self.domain_index(base_domain))

    def calibrate(self, x: npt.ArrayLike, name: str, base_domain: Domain = None, batch_size: int = 128,
                  source: str = "clean", y: Optional[Labels] = None, progress: bool = False,
                  scale: Optional[float] = None, **pgd_kwargs: Any) -> "Model":
        """Builds a new model with an extra BN domain ``name`` estimated on ``x``.

        Args:
            x: float32 pixel-space images.
            name: the new domain's name (must not exist).
            base_domain: domain whose affine parameters are copied (None = default).
            batch_size: images per calibration batch (BN statistics are batch
                statistics, averaged over batches with equal weight per image;
                a trailing batch of one image is merged into the previous one).
            source: ``"clean"`` calibrates on x itself; ``"pgd"`` on PGD
                examples of x (needs ``y``), attacked through ``base_domain``
                unless ``pgd_kwargs`` say otherwise.
            y: labels, for ``source="pgd"``.
            progress: show a tqdm progress bar.
            scale: as in :meth:`predict`.
            **pgd_kwargs: passed to :meth:`pgd`.

        Returns:
            a new :class:`Model`; this one is unchanged.
        """
        if source not in ("clean", "pgd"):
            raise InvalidArgument("source must be 'clean' or 'pgd', got %r" % (source,))
        base = self.domain_index(base_domain)
        cal = self.calibrator(base)
        a, _ = self._images(x, scale)
        if source == "pgd":
            if y is None:
                raise InvalidArgument("source='pgd' needs labels y")
            pgd_kwargs.setdefault("attack_domain", base)
            pgd_kwargs.setdefault("eval_domain", base)
            a = self.pgd(a, y, batch_size=batch_size, progress=progress, **pgd_kwargs)
        chunks = _chunks(a.shape[0], batch_size)
        if len(chunks) > 1 and chunks[-1][1] - chunks[-1][0] == 1:
            chunks[-2:] = [(chunks[-2][0], chunks[-1][1])]
        bar = _bar(len(chunks), progress, "calibrate")
        try:
            for s, e in chunks:
                cal.add(a[s:e])
                bar.update(1)
        finally:
            bar.close()
        return cal.finish(name)


class Calibrator(_Closeable):
    """Accumulates BN statistics to build a new domain (see :meth:`Model.calibrator`).

    ``add`` batches of at least two images, then ``finish(name)`` returns a new
    :class:`Model` with the domain appended; the calibrator stays usable.
    """

    def __init__(self, model: Model, base_domain: int) -> None:
        """Use :meth:`Model.calibrator` instead."""
        self._model = model
        self._handle = model._h()  # keeps the C model alive
        self._ptr = None
        self.base_domain = model.domains[base_domain] if 0 <= base_domain < len(model.domains) else base_domain
        #: Images added so far.
        self.images = 0
        p = ctypes.c_void_p()
        LIB.adm_calibrator_create(self._handle.ptr, base_domain, byref(p))
        self._ptr = p.value

    def _p(self):
        """The live calibrator pointer, or InvalidArgument if closed."""
        if not self._ptr:
            raise InvalidArgument("the calibrator is closed")
        return self._ptr

    def add(self, x: npt.ArrayLike, scale: Optional[float] = None) -> None:
        """Adds a batch (>= 2) of pixel-space ``(N, C, H, W)`` images to the statistics (``scale``: as in
        :meth:`Model.predict`)."""
        a, _ = self._model._images(x, scale)
        LIB.adm_calibrator_add(self._p(), _arg(a, _FP), a.size, a.shape[0])
        self.images += a.shape[0]

    def finish(self, name: str) -> Model:
        """A new :class:`Model`: the base model's domains plus ``name`` with the estimated statistics."""
        out = ctypes.c_void_p()
        LIB.adm_calibrator_finish(self._p(), str(name).encode(), byref(out))
        return Model._from_handle(out.value)

    def close(self) -> None:
        """Frees the C calibrator (also done on garbage collection)."""
        p, self._ptr = self._ptr, None
        if p:
            LIB.adm_calibrator_free(p)
        self._handle = None

