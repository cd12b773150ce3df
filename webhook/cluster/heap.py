"""Keeping a re-list of a large cluster off the admission path's back (issue 11, item 6).

A re-list of 50,000 Secrets parses some 750,000 JSON containers (pages of 500) and builds a
new picture of 150,000 long-lived objects while the old one is still served. Measured on
that load (bench/cluster_scale.py; an in-process replay of the same pages): the cyclic
garbage collector, not a lock, stalled the other threads. The new picture's objects climb
the generations and every second-generation collection walks all of them again (38 of
them in three re-lists, up to 160 ms each, with the GIL held), and the old picture, freed
by reference counting in one cascade, is another pause of tens of milliseconds.

:class:`HeapKeeper` is what the watches call around a list, once the first full picture
has been frozen (``store.freeze_heap``):

- after each page: ``gc.freeze()`` moves what the page left alive (the new picture's part)
  out of the collector's generations before it is promoted and re-walked. O(1). The parsed
  page itself is acyclic and freed by reference counting;
- after a whole list: freeze once more and hand the heap's free pages back to the kernel
  (``malloc_trim``, with ``PYTHONMALLOC=malloc`` as the image sets): the old picture and
  the parsed pages are freed, and without it the RSS stayed ~100 MiB higher.

What this costs: cyclic garbage alive at one of those instants is frozen with the rest and
never collected. The admission path makes almost none (its objects are freed by reference
counting), so this is a few objects per page at worst.
"""

from __future__ import annotations

import gc
import threading

from webhook.serve.memory import MemoryReleaser


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
