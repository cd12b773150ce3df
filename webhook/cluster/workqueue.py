"""Backoff, rate limiting and a work queue, modelled on client-go's ``util/workqueue``.

One implementation serves every retry loop of the webhook: the list/watch streams
(``cluster/reflector.py``), the Lease elector (``cluster/leader.py``), the replication
controller (``replication/controller.py``) and stuck-pod recovery
(``replication/recovery.py``). The names and semantics are client-go's:

- :class:`ItemExponentialBackoff` is ``ItemExponentialFailureRateLimiter``: ``when(item)``
  records a failure and returns ``base * 2**(failures-1)``, capped; ``forget(item)``
  clears the item's failures; ``num_requeues(item)`` counts them. With ``jitter`` the
  delay is scaled by a random factor in ``[1 - jitter, 1]`` (so replicas that failed
  together do not retry in lockstep), as client-go's ``wait.Backoff`` does.
- :func:`jittered` is ``wait.Jitter``: ``duration`` plus up to ``max_factor`` of it.
- :class:`TokenBucket` is ``flowcontrol``'s token bucket (``BucketRateLimiter`` in the
  workqueue): ``qps`` tokens a second, at most ``burst`` saved; ``acquire`` waits for a
  token, ``try_acquire`` (``TryAccept``) says how long one is away instead.
- :class:`WorkQueue` is the ``RateLimitingQueue``: ``add`` (deduplicated: an item is
  queued at most once), ``add_after`` (the earliest due time wins), ``add_rate_limited``
  (``add_after`` with the backoff's delay), ``forget``, ``shut_down``. One difference:
  ``get_batch`` hands the consumer every ready item at once, because the replication
  controller plans a batch of namespaces in one pass (plans are cheaper together).

Thread-safe; nothing here does I/O. Times come from an injectable monotonic clock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)
Clock = Callable[[], float]
Random = Callable[[], float]


def jittered(duration: float, max_factor: float, rand: Random = random.random) -> float:
    """client-go wait.Jitter: a duration between `duration` and `duration * (1 + max_factor)`."""
    return duration + rand() * max_factor * duration


class ItemExponentialBackoff(Generic[T]):
    """Per-item exponential backoff: client-go's ItemExponentialFailureRateLimiter."""

    def __init__(
        self, base: float, cap: float, *, jitter: float = 0.0, rand: Random = random.random
    ) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        self.base = min(base, cap)
        self.cap = cap
        self._jitter = jitter
        self._rand = rand
        self._lock = threading.Lock()
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        """Record a failure of `item`; the delay before it is tried again."""
        with self._lock:
            failures = self._failures.get(item, 0) + 1
            self._failures[item] = failures
        delay = min(self.cap, self.base * 2.0 ** min(failures - 1, 62))
        if self._jitter:
            delay *= 1.0 - self._jitter * self._rand()
        return delay

    def forget(self, item: T) -> None:
        """`item` succeeded (or is given up): its next failure starts from `base` again."""
        with self._lock:
            self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        with self._lock:
            return self._failures.get(item, 0)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def retain(self, keep: Callable[[T], bool]) -> None:
        """Forget the failures of every item `keep` rejects (items gone for good)."""
        with self._lock:
            self._failures = {i: n for i, n in self._failures.items() if keep(i)}


class TokenBucket:
    """client-go's flowcontrol token bucket: `qps` tokens a second, at most `burst` saved."""

    def __init__(self, qps: float, burst: int, clock: Clock = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be positive and burst at least 1")
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Take a token, waiting as needed; False when `stop` is set first."""
        while True:
            delay = self.try_acquire()
            if delay == 0.0:
                return True
            if stop.wait(delay):
                return False

    def try_acquire(self) -> float:
        """Take a token without waiting: 0.0 when one was taken, else the seconds until
        one is due (nothing taken; the caller comes back then)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            if self._tokens >= 1.0 - 1e-9:  # (float rounding must not leave us waiting)
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._qps


class WorkQueue(Generic[T]):
    """client-go's RateLimitingQueue for one consumer thread that takes batches."""

    def __init__(self, backoff: ItemExponentialBackoff[T], clock: Clock = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._ready: dict[T, None] = {}  # an ordered set: insertion order is served first
        self._waiting: dict[T, float] = {}  # item -> due (monotonic)
        self._shut_down = False

    # ---- producers -----------------------------------------------------------------------
    def add(self, item: T) -> None:
        with self._cond:
            if self._shut_down:
                return
            self._ready[item] = None
            self._cond.notify_all()

    def add_all(self, items: Iterable[T]) -> None:
        with self._cond:
            if self._shut_down:
                return
            self._ready.update(dict.fromkeys(items))
            self._cond.notify_all()

    def add_after(self, item: T, delay: float) -> None:
        """Queue `item` after `delay` seconds (at once when not positive)."""
        if delay <= 0:
            self.add(item)
            return
        with self._cond:
            if self._shut_down:
                return
            due = self._clock() + delay
            current = self._waiting.get(item)
            if current is None or due < current:
                self._waiting[item] = due
                self._cond.notify_all()

    def add_rate_limited(self, item: T) -> float:
        """Queue `item` after its backoff; returns the delay."""
        delay = self._backoff.when(item)
        self.add_after(item, delay)
        return delay

    def forget(self, item: T) -> None:
        self._backoff.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._backoff.num_requeues(item)

    # ---- the consumer --------------------------------------------------------------------
    def get_batch(self) -> list[T] | None:
        """Wait for ready items and take them all; None once the queue is shut down."""
        with self._cond:
            while True:
                if self._shut_down:
                    return None
                now = self._clock()
                for item in [i for i, due in self._waiting.items() if due <= now]:
                    del self._waiting[item]
                    self._ready[item] = None
                if self._ready:
                    batch = list(self._ready)
                    self._ready.clear()
                    return batch
                wait = min(self._waiting.values(), default=None)
                self._cond.wait(None if wait is None else max(0.0, wait - now))

    def clear(self) -> None:
        """Drop every queued and waiting item, and every item's failures."""
        with self._cond:
            self._ready.clear()
            self._waiting.clear()
        self._backoff.clear()

    def shut_down(self) -> None:
        """Wake the consumer; nothing is queued any more."""
        with self._cond:
            self._shut_down = True
            self._ready.clear()
            self._waiting.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._waiting)
