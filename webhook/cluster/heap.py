"""The process heap: freed memory handed back to the kernel, long-lived pictures kept out
of the garbage collector's walks.

**Giving memory back** (issue 11, item 1; :class:`MemoryReleaser`).
A 2.7 MiB AdmissionReview listing 110,000 imagePullSecrets entries decodes into some
220,000 small Python objects, all freed once it is answered. With CPython's own small-object
allocator (pymalloc) the 1 MiB arenas they filled stay mapped as long as any one object in
them survives, so RSS kept about 20-30 MiB per burst of such requests (measured: 61 MiB
after 16 normal requests, 81-97 MiB after 16 more hostile ones), and nothing returned it.
With glibc's malloc for every object (PYTHONMALLOC=malloc, as the image sets) and
malloc_trim(0) after a large request, the free pages inside the heap go back to the kernel:
RSS stays flat (tests/http/test_memory.py). Elsewhere (musl, macOS) this does nothing.

**Keeping a re-list of a large cluster off the admission path's back** (issue 11, item 6).

A re-list of 50,000 Secrets parses some 750,000 JSON containers (pages of 500) and builds a
new picture of 150,000 long-lived objects while the old one is still served. Measured on
that load (bench/cluster_scale.py; an in-process replay of the same pages): the cyclic
garbage collector, not a lock, stalled the other threads. The new picture's objects climb
the generations and every second-generation collection walks all of them again (38 of
them in three re-lists, up to 160 ms each, with the GIL held), and the old picture, freed
by reference counting in one cascade, is another pause of tens of milliseconds.

:class:`HeapKeeper` is what the watches call around a list, once the first full picture
has been frozen (``store.freeze_heap``):

- after each page is parsed, and again after it is handed over: ``gc.freeze()`` moves the
  parsed page (some 7,500 dicts and lists for 500 secrets), then what the page left alive
  (the new picture's part), out of the collector's generations before they are walked and
  promoted: while a page was handed over, every young collection, triggered by any
  thread, walked it again. O(1). The parsed page is acyclic and freed by reference
  counting, frozen or not;
- after a whole list: freeze once more and hand the heap's free pages back to the kernel
  (``malloc_trim``, with ``PYTHONMALLOC=malloc`` as the image sets): the old picture and
  the parsed pages are freed, and without it the RSS stayed ~100 MiB higher.

What this costs: cyclic garbage alive at one of those instants is frozen with the rest and
never collected. The admission path makes almost none (its objects are freed by reference
counting), so this is a few objects per page at worst. A re-list that finds an object
version already held reuses it (``cluster/secret_views.py``): only what changed is new.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
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


class HeapKeeper:
    """page_done() after each list page, listed() after each full list (every stream)."""

    def __init__(self, releaser: MemoryReleaser | None = None) -> None:
        self._releaser = releaser or MemoryReleaser()
        self._frozen = threading.Event()  # the first full picture is frozen

    def first_picture(self) -> None:
        """The first full picture is complete: collect once, freeze it all, trim."""
        gc.collect()
        gc.freeze()
        self._frozen.set()
        self._releaser.release()

    def page_done(self) -> None:
        if self._frozen.is_set():
            gc.freeze()

    def listed(self) -> None:
        if self._frozen.is_set():
            gc.freeze()
            self._releaser.release()
