"""A re-list shares the GIL with the event loop in stretches (issue 11, item 6).

CPython hands the GIL to a waiting thread only when the holder blocks or its switch
interval runs out. The event loop gives the GIL up at every socket wait, several times per
admission, and a watch thread that hands over a re-list of 50,000 secrets (orjson pages,
then a Python loop over every item) takes it at each of those moments and keeps it up to
the switch interval: each admission then waits out the interval several times over. In a
replay (``bench/cluster_scale.py``'s work in one process, re-lists every 2 s, probe at
100 req/s) that was an admission p99 of 0.6 to 2 s.

:class:`ListPacer` bounds it the way a cooperative scheduler would: after every
``every`` items of a re-list, the list thread sleeps as long as it worked since its last
pause (its own CPU time, ``time.thread_time``: waiting for a page or for the GIL is not
work; at most ``max_pause``), a 50 % duty cycle. In each pause the event loop has the GIL
to itself and catches up. A re-list's CPU is some 0.3 s at 50,000 secrets and its pages
arrive from the network anyway, so it ends at most that much later; the same replay gave
a p99 of 20 to 50 ms. The first list of a stream is not paced: no admission is served
before ``/readyz`` (every stream synced), and the first sync should be quick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# 100 items of a page of 500 are a few hundred microseconds of work: an admission that
# arrives meanwhile waits that long at most before the pause lets it through.
PACE_EVERY_ITEMS = 100
# A pause never exceeds this, whatever the machine did to the work before it.
PACE_MAX_PAUSE_SECONDS = 0.005


class ListPacer:
    """``paced(items)``: the same items, with a pause after every ``every`` of them."""

    def __init__(
        self,
        every: int = PACE_EVERY_ITEMS,
        max_pause: float = PACE_MAX_PAUSE_SECONDS,
        clock: Callable[[], float] = time.thread_time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._every = every
        self._max_pause = max_pause
        self._clock = clock
        self._sleep = sleep

    def paced(self, items: Iterable[T]) -> Iterator[T]:
        since = self._clock()
        count = 0
        for item in items:
            yield item
            count += 1
            if count == self._every:
                count = 0
                self._sleep(min(self._clock() - since, self._max_pause))
                since = self._clock()
