"""Large AdmissionReviews are decided off the event loop (issue 11, item 5).

A 2.4 MiB review of 45,000 containers takes over a second to decode and decide; on the
event loop that second stalls every other admission (measured: a normal request sent
just after waited 1.3 s, against the chart's 3 s timeout). Reviews whose body is at least
`large_review_bytes` (default 256 KiB: a normal pod's review is 2-20 KiB) are decoded,
decided and encoded on a small, bounded thread pool instead, at most `large_review_workers`
at a time (default 1: the GIL makes more threads no faster, and the cap bounds the memory
and CPU that large reviews take). The loop gets the GIL every switch interval (1 ms, set
by `serve`: serve/run.py), so normal reviews are answered while a large one is being
decided. The CPU a review can take is bounded too: a pod of more than --max-containers
(1000) containers is not decided at all (core.injection.Policy.max_containers), it is
admitted unchanged with a warning.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from webhook.cluster.heap import MemoryReleaser

T = TypeVar("T")


class Offload:
    """A bounded pool for large reviews; release() of freed memory after each."""

    def __init__(self, threshold_bytes: int, workers: int) -> None:
        self.threshold_bytes = threshold_bytes
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None  # started on first use
        self._slots: asyncio.Semaphore | None = None
        self._memory = MemoryReleaser()

    def is_large(self, body: bytes) -> bool:
        return len(body) >= self.threshold_bytes

    async def run(self, fn: Callable[[], T]) -> T:
        """fn() on the pool (waiting for a free worker), then freed memory given back."""
        if self._executor is None or self._slots is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="psi-large")
            self._slots = asyncio.Semaphore(self._workers)
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(self._call, fn))

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            self._memory.release()

    def release_memory(self) -> None:
        """After a large request answered on the loop: give its freed memory back."""
        self._memory.release()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
