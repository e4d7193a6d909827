"""Low-level ctypes declarations of the adamant C ABI (``include/adamant.h``).

This module finds and loads ``libadamant.so``, declares the argument and
result types of every ``adm_*`` function, mirrors the public structs and
checks the ABI version. Every function that returns an ``adm_status`` gets an
``errcheck`` hook that turns a non-zero status into the matching
:class:`adamant.AdamantError` subclass carrying the C message, so a caller of
``LIB.adm_*`` never has to look at a status code.

Library lookup order:

1. the environment variable ``ADAMANT_LIBRARY`` (path of the shared library);
2. a copy bundled inside the package: ``adamant/lib/libadamant.so``;
3. ``ctypes.util.find_library("adamant")`` (system / ``LD_LIBRARY_PATH``);
4. ``dist/lib/libadamant.so`` of the source tree this package sits in
   (``bindings/python/adamant`` -> ``../../../dist``), for in-tree use.
"""
import ctypes
import ctypes.util
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_float, c_int32, c_int64,
                    c_size_t, c_uint8, c_uint64, c_void_p)

from ._errors import error_for_status

#: The ABI version these bindings were written against (ADAMANT_ABI_VERSION).
ABI_VERSION = 1

# Status codes (adm_status).
ADM_OK = 0
ADM_ERR_INVALID_ARGUMENT = 1
ADM_ERR_IO = 2
ADM_ERR_PARSE = 3
ADM_ERR_UNSUPPORTED = 4
ADM_ERR_SHAPE = 5
ADM_ERR_DOMAIN = 6
ADM_ERR_INTERNAL = 7
ADM_ERR_RESOURCE = 8
ADM_ERR_CANCELLED = 9

# adm_loss
ADM_LOSS_CE = 0
ADM_LOSS_CW = 1
ADM_LOSS_DLR = 2
ADM_LOSS_DLR_TARGETED = 3
# adm_norm
ADM_NORM_LINF = 0
ADM_NORM_L2 = 1
# adm_target_mode
ADM_UNTARGETED = 0
ADM_TARGETED = 1
ADM_TARGETED_RANDOM = 2
ADM_TARGETED_TOP_K = 3

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIBNAME = "libadamant.so"


class adm_load_options(Structure):
    """Mirror of ``struct adm_load_options``."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("mean", POINTER(c_float)),
        ("mean_len", c_size_t),
        ("std", POINTER(c_float)),
        ("std_len", c_size_t),
        ("set_pixel_range", c_int32),
        ("pixel_min", c_float),
        ("pixel_max", c_float),
        ("default_domain", c_char_p),
        ("memory_limit", c_size_t),
    ]


class adm_attack_config(Structure):
    """Mirror of ``struct adm_attack_config``."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("norm", c_int32),
        ("eps", c_float),
        ("alpha", c_float),
        ("steps", c_int32),
        ("random_start", c_int32),
        ("restarts", c_int32),
        ("loss", c_int32),
        ("target_mode", c_int32),
        ("targets", POINTER(c_int64)),
        ("targets_len", c_size_t),
        ("early_stop", c_int32),
        ("attack_domain", c_size_t),
        ("eval_domain", c_size_t),
        ("seed", c_uint64),
        ("sample_offset", c_uint64),
    ]


class adm_apgd_config(Structure):
    """Mirror of ``struct adm_apgd_config``."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("norm", c_int32),
        ("eps", c_float),
        ("steps", c_int32),
        ("restarts", c_int32),
        ("loss", c_int32),
        ("target_mode", c_int32),
        ("targets", POINTER(c_int64)),
        ("targets_len", c_size_t),
        ("n_target_classes", c_int32),
        ("rho", c_float),
        ("random_start", c_int32),
        ("early_stop", c_int32),
        ("attack_domain", c_size_t),
        ("eval_domain", c_size_t),
        ("seed", c_uint64),
        ("sample_offset", c_uint64),
    ]


class adm_autoattack_report(Structure):
    """Mirror of ``struct adm_autoattack_report``."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("images", c_size_t),
        ("clean_correct", c_size_t),
        ("robust_after_apgd_ce", c_size_t),
        ("robust_after_apgd_t", c_size_t),
    ]


class adm_context_limits(Structure):
    """Mirror of ``struct adm_context_limits`` (0 in a field = no limit)."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("max_batch", c_size_t),
        ("max_pixels_per_image", c_size_t),
        ("max_attack_steps_total", c_size_t),
        ("max_input_bytes", c_size_t),
    ]


class adm_attack_outputs(Structure):
    """Mirror of ``struct adm_attack_outputs``."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("len", c_size_t),
        ("success", POINTER(c_uint8)),
        ("loss", POINTER(c_float)),
        ("steps_used", POINTER(c_int32)),
        ("targets", POINTER(c_int64)),
        ("predictions", POINTER(c_int64)),
    ]


# Opaque handles are passed as void pointers.
adm_model_p = c_void_p
adm_context_p = c_void_p
adm_calibrator_p = c_void_p
adm_status = c_int32


class _Status:
    """Marker: the function returns an adm_status (an int32) that errcheck turns into exceptions."""


STATUS = _Status

_F = POINTER(c_float)
_I64 = POINTER(c_int64)

# name: (restype, argtypes). restype STATUS (adm_status) gets the errcheck hook unless listed in _NO_CHECK.
_PROTOTYPES = {
    "adm_version": (c_char_p, []),
    "adm_abi_version": (c_int32, []),
    "adm_last_error": (c_char_p, []),
    "adm_backend_info": (c_char_p, []),
    "adm_set_num_threads": (STATUS, [c_int32]),
    "adm_set_isa": (STATUS, [c_char_p]),
    "adm_isa": (c_char_p, []),
    "adm_isa_supported": (c_char_p, []),
    "adm_load_options_default": (None, [POINTER(adm_load_options)]),
    "adm_model_load": (STATUS, [c_char_p, POINTER(adm_load_options), POINTER(adm_model_p)]),
    "adm_model_load_memory": (STATUS, [c_void_p, c_size_t, POINTER(adm_load_options),
                                           POINTER(adm_model_p)]),
    "adm_model_load_domains": (STATUS, [POINTER(c_char_p), POINTER(c_char_p), c_size_t,
                                            POINTER(adm_load_options), POINTER(adm_model_p)]),
    "adm_model_free": (None, [adm_model_p]),
    "adm_model_save": (STATUS, [adm_model_p, c_char_p]),
    "adm_model_domain_count": (STATUS, [adm_model_p, POINTER(c_size_t)]),
    "adm_model_domain_name": (STATUS, [adm_model_p, c_size_t, POINTER(c_char_p)]),
    "adm_model_domain_index": (STATUS, [adm_model_p, c_char_p, POINTER(c_size_t)]),
    "adm_model_default_domain": (STATUS, [adm_model_p, POINTER(c_size_t)]),
    "adm_model_input_shape": (STATUS, [adm_model_p, POINTER(c_size_t), POINTER(c_size_t),
                                           POINTER(c_size_t)]),
    "adm_model_num_classes": (STATUS, [adm_model_p, POINTER(c_size_t)]),
    "adm_model_pixel_range": (STATUS, [adm_model_p, POINTER(c_float), POINTER(c_float)]),
    "adm_model_channel_order": (STATUS, [adm_model_p, POINTER(c_char_p)]),
    "adm_import_tensorpack": (STATUS, [c_char_p, c_char_p, POINTER(c_int32), c_size_t, c_int32, c_char_p]),
    "adm_model_info_json": (STATUS, [adm_model_p, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "adm_context_create": (STATUS, [adm_model_p, POINTER(adm_context_p)]),
    "adm_context_free": (None, [adm_context_p]),
    "adm_context_limits_default": (None, [POINTER(adm_context_limits)]),
    "adm_context_set_limits": (STATUS, [adm_context_p, POINTER(adm_context_limits)]),
    "adm_context_get_limits": (STATUS, [adm_context_p, POINTER(adm_context_limits)]),
    "adm_context_cancel": (STATUS, [adm_context_p]),
    "adm_predict": (STATUS, [adm_context_p, c_size_t, _F, c_size_t, c_size_t, _F, c_size_t]),
    "adm_gradient": (STATUS, [adm_context_p, c_size_t, c_int32, _F, c_size_t, c_size_t,
                                  _I64, c_size_t, _F, c_size_t, _F, c_size_t]),
    "adm_vjp": (STATUS, [adm_context_p, c_size_t, _F, c_size_t, c_size_t, _F, c_size_t, _F, c_size_t,
                         _F, c_size_t]),
    "adm_attack_config_default": (None, [POINTER(adm_attack_config)]),
    "adm_attack_pgd": (STATUS, [adm_context_p, POINTER(adm_attack_config), _F, c_size_t,
                                    c_size_t, _I64, c_size_t, _F, c_size_t,
                                    POINTER(adm_attack_outputs)]),
    "adm_gradient_targeted": (STATUS, [adm_context_p, c_size_t, c_int32, _F, c_size_t, c_size_t,
                                           _I64, c_size_t, _I64, c_size_t, _F, c_size_t, _F, c_size_t]),
    "adm_apgd_config_default": (None, [POINTER(adm_apgd_config)]),
    "adm_attack_apgd": (STATUS, [adm_context_p, POINTER(adm_apgd_config), _F, c_size_t,
                                     c_size_t, _I64, c_size_t, _F, c_size_t,
                                     POINTER(adm_attack_outputs)]),
    "adm_autoattack_lite": (STATUS, [adm_context_p, POINTER(adm_apgd_config), _F, c_size_t,
                                         c_size_t, _I64, c_size_t, _F, c_size_t,
                                         POINTER(adm_attack_outputs), POINTER(adm_autoattack_report)]),
    "adm_calibrator_create": (STATUS, [adm_model_p, c_size_t, POINTER(adm_calibrator_p)]),
    "adm_calibrator_add": (STATUS, [adm_calibrator_p, _F, c_size_t, c_size_t]),
    "adm_calibrator_finish": (STATUS, [adm_calibrator_p, c_char_p, POINTER(adm_model_p)]),
    "adm_calibrator_free": (None, [adm_calibrator_p]),
}

# Functions whose failure status the caller handles itself.
_NO_CHECK = {"adm_model_info_json"}


def _candidates():
    """Yield (description, path-or-name) in lookup order."""
    env = os.environ.get("ADAMANT_LIBRARY")
    if env:
        yield "ADAMANT_LIBRARY", env
        return  # an explicit choice is never silently replaced by another copy
    yield "bundled", os.path.join(_HERE, "lib", _LIBNAME)
    found = ctypes.util.find_library("adamant")
    if found:
        yield "find_library", found
    yield "source tree", os.path.normpath(os.path.join(_HERE, "..", "..", "..", "dist", "lib", _LIBNAME))


def _load():
    """Loads the first library candidate that exists; returns (CDLL, path) or raises ImportError."""
    tried = []
    for how, path in _candidates():
        if how in ("bundled", "source tree") and not os.path.exists(path):
            tried.append("%s: %s (absent)" % (how, path))
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            if how == "ADAMANT_LIBRARY":
                raise ImportError("adamant: ADAMANT_LIBRARY=%r could not be loaded: %s" % (path, e)) from e
            tried.append("%s: %s (%s)" % (how, path, e))
    raise ImportError(
        "adamant: libadamant.so not found. Build it with `make` (or `make dist`) at the root of the "
        "adamant repository and either set ADAMANT_LIBRARY=/path/to/dist/lib/libadamant.so or "
        "reinstall this package (`pip install ./bindings/python`) so it bundles the library. Tried: "
        + "; ".join(tried))


def _errcheck(result, func, args):
    """ctypes errcheck hook: a non-zero adm_status becomes the matching AdamantError subclass."""
    if result != ADM_OK:
        raw = _lib.adm_last_error()
        msg = raw.decode("utf-8", "replace") if raw else ""
        raise error_for_status(result, msg, func.__name__)
    return result


def _declare(lib):
    """Sets restype/argtypes (and errcheck for status-returning functions) of every adm_* function."""
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            f = getattr(lib, name)
        except AttributeError as e:
            raise ImportError("adamant: %s lacks the symbol %s (library too old?)" % (LIBRARY_PATH, name)) from e
        f.restype = adm_status if restype is STATUS else restype
        f.argtypes = argtypes
        if restype is STATUS and name not in _NO_CHECK:
            f.errcheck = _errcheck


_lib, LIBRARY_PATH = _load()
_declare(_lib)

_abi = _lib.adm_abi_version()
if _abi != ABI_VERSION:
    raise ImportError("adamant: %s has ABI version %d, these bindings need %d; rebuild the library "
                      "(`make`) or reinstall matching bindings" % (LIBRARY_PATH, _abi, ABI_VERSION))


def _check_struct_sizes():
    """Raises ImportError when the library's struct sizes differ from these ctypes mirrors."""
    o = adm_load_options()
    _lib.adm_load_options_default(ctypes.byref(o))
    c = adm_attack_config()
    _lib.adm_attack_config_default(ctypes.byref(c))
    lim = adm_context_limits()
    _lib.adm_context_limits_default(ctypes.byref(lim))
    ap = adm_apgd_config()
    _lib.adm_apgd_config_default(ctypes.byref(ap))
    for name, got, want in (("adm_load_options", o.struct_size, ctypes.sizeof(o)),
                            ("adm_attack_config", c.struct_size, ctypes.sizeof(c)),
                            ("adm_apgd_config", ap.struct_size, ctypes.sizeof(ap)),
                            ("adm_context_limits", lim.struct_size, ctypes.sizeof(lim))):
        if got != want:
            raise ImportError("adamant: %s is %d bytes in %s but %d in these bindings (ABI mismatch)"
                              % (name, got, LIBRARY_PATH, want))


_check_struct_sizes()

#: The loaded library, every prototype declared.
LIB = _lib
