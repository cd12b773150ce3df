"""Giving memory back after a large request (issue 11, item 1).

A 2.7 MiB AdmissionReview listing 110,000 imagePullSecrets entries decodes into some
220,000 small Python objects, all freed once it is answered. With CPython's own small-object
allocator (pymalloc) the 1 MiB arenas they filled stay mapped as long as any one object in
them survives, so RSS kept about 20-30 MiB per burst of such requests (measured: 61 MiB
after 16 normal requests, 81-97 MiB after 16 more hostile ones), and nothing returned it.
With glibc's malloc for every object (PYTHONMALLOC=malloc, as the image sets) and
malloc_trim(0) after a large request, the free pages inside the heap go back to the kernel:
RSS stays flat (tests/http/test_memory.py). Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

# The setting the image runs with (Dockerfile) and the memory test uses.
RECOMMENDED_PYTHONMALLOC = "malloc"


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReleaser:
    """release(): hand the heap's free pages back to the kernel (glibc), else nothing."""

    def __init__(self) -> None:
        self._trim = _glibc_malloc_trim()
        if os.environ.get("PYTHONMALLOC") != RECOMMENDED_PYTHONMALLOC:
            log.debug(
                "PYTHONMALLOC is not 'malloc': memory freed after large requests may stay "
                "mapped (the image sets it)"
            )

    def release(self) -> None:
        if self._trim is not None:
            self._trim(0)
