"""Exceptions raised by adamant: one class per ``adm_status`` of the C ABI."""

from typing import Optional

__all__ = ["AdamantError", "InvalidArgument", "AdamantIOError", "ParseError", "UnsupportedError",
           "ShapeError", "DomainError", "InternalError", "ResourceError", "CancelledError", "error_for_status"]


class AdamantError(Exception):
    """A failure reported by the adamant library.

    Attributes:
        status: the ``adm_status`` code (``ADM_ERR_*``, an int).
        message: the library's message (``adm_last_error()``), for a person.
        function: the C function that failed (e.g. ``"adm_predict"``), or None
            when the error was raised by the Python layer itself.
    """

    #: The ``adm_status`` this class stands for (None for the base class).
    STATUS: Optional[int] = None

    def __init__(self, message: str, status: Optional[int] = None, function: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.STATUS
        self.function = function

    def __str__(self) -> str:
        prefix = "%s: " % self.function if self.function else ""
        return "%s%s" % (prefix, self.message)


class InvalidArgument(AdamantError, ValueError):
    """ADM_ERR_INVALID_ARGUMENT: NULL pointer, bad value, bad struct_size."""
    STATUS = 1


class AdamantIOError(AdamantError):
    """ADM_ERR_IO: a file could not be read or written."""
    STATUS = 2


class ParseError(AdamantError):
    """ADM_ERR_PARSE: a malformed or invalid ONNX model."""
    STATUS = 3


class UnsupportedError(AdamantError):
    """ADM_ERR_UNSUPPORTED: an op or attribute adamant does not run."""
    STATUS = 4


class ShapeError(AdamantError, ValueError):
    """ADM_ERR_SHAPE: wrong batch shape or buffer length."""
    STATUS = 5


class DomainError(AdamantError, LookupError):
    """ADM_ERR_DOMAIN: unknown BN domain, or domain files that disagree."""
    STATUS = 6


class InternalError(AdamantError):
    """ADM_ERR_INTERNAL: a bug in adamant (please report it)."""
    STATUS = 7


class ResourceError(AdamantError):
    """ADM_ERR_RESOURCE: a context limit (see ``Model.set_limits``) would be exceeded, or the
    memory a call needs cannot be allocated. Raised before anything is allocated."""
    STATUS = 8


class CancelledError(AdamantError):
    """ADM_ERR_CANCELLED: the call was cancelled from another thread (``Model.cancel``)."""
    STATUS = 9


_BY_STATUS = {c.STATUS: c for c in (InvalidArgument, AdamantIOError, ParseError, UnsupportedError,
                                     ShapeError, DomainError, InternalError, ResourceError, CancelledError)}


def error_for_status(status, message, function=None):
    """Returns the exception instance for a non-zero ``adm_status``."""
    cls = _BY_STATUS.get(int(status), AdamantError)
    if cls is AdamantError:
        message = "unknown status %d: %s" % (status, message)
    return cls(message, status=int(status), function=function)
