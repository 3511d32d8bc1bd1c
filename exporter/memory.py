"""Hand freed heap memory back to the operating system (glibc only; elsewhere a no-op)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): its allocator returns memory its own way
    return function


_TRIM = _load_trim()


def trim() -> None:
    """Release free heap pages.

    Each poll replaces a connection's rendered bytes; the freed chunks, of many sizes,
    fragment glibc's heap, which then keeps tens of MiB it no longer uses. malloc_trim
    returns them.
    """
    if _TRIM is not None:
        _TRIM(0)
