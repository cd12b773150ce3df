"""What the controller knows before the store does: its own writes, and blocked copies.

- :class:`Expectations` (client-go's ControllerExpectations, per secret): a write is
  registered before its request, so that the planner counts it as done until the watch
  reports the secret (which clears it, even when the event arrives before the response);
  a failed write clears it at once; after ``ttl`` seconds the store's view is trusted
  again. Indexed by namespace: overlaying one namespace costs only its own writes.
- :class:`Clashes`: copies not created because a secret of the same name that we did
  not create is there (forgotten at each full reconcile, which finds them again).

Both are shared by the controller loop, its writers and the admission path; each holds
its lock for dictionary work only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from webhook.core.model import RegistrySecret

# A write is assumed to reach the store through the watch within this time; until then the
# planner counts it as done (no duplicate create), after it the store's view is trusted.
EXPECTATION_SECONDS = 30.0
# Past this many expectations a write first drops the expired ones (bounds memory).
_EXPIRE_ABOVE = 50_000


class Expectations:
    """Writes made but not seen through the watch yet: namespace -> name -> (due, secret)."""

    def __init__(
        self, ttl: float = EXPECTATION_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._by_namespace: dict[str, dict[str, tuple[float, RegistrySecret | None]]] = {}
        self._count = 0

    def expect(self, namespace: str, name: str, secret: RegistrySecret | None) -> None:
        """Before a write: plan as if `secret` (None: deleted) were stored, until observed."""
        with self._lock:
            now = self._clock()
            if self._count > _EXPIRE_ABOVE:
                self._expire(now)
            names = self._by_namespace.setdefault(namespace, {})
            self._count += int(name not in names)
            names[name] = (now + self._ttl, secret)

    def observed(self, namespace: str, name: str) -> None:
        """The watch reported the secret, or the write failed: trust the store again."""
        with self._lock:
            names = self._by_namespace.get(namespace)
            if names is not None and names.pop(name, None) is not None:
                self._count -= 1
                if not names:
                    del self._by_namespace[namespace]

    def overlay(
        self, namespace: str, current: Mapping[str, RegistrySecret]
    ) -> Mapping[str, RegistrySecret]:
        """`current` (the store's view of a namespace) with our writes it has not seen."""
        with self._lock:
            names = self._by_namespace.get(namespace)
            if not names:
                return current
            now = self._clock()
            pending = [(name, secret) for name, (at, secret) in names.items() if at > now]
        if not pending:
            return current
        merged = dict(current)
        for name, secret in pending:
            if secret is None:
                merged.pop(name, None)
            else:
                merged[name] = secret
        return merged

    def expire(self) -> None:
        with self._lock:
            self._expire(self._clock())

    def _expire(self, now: float) -> None:
        for namespace in list(self._by_namespace):
            names = self._by_namespace[namespace]
            for name in [n for n, (at, _) in names.items() if at <= now]:
                del names[name]
                self._count -= 1
            if not names:
                del self._by_namespace[namespace]

    def clear(self) -> None:
        with self._lock:
            self._by_namespace.clear()
            self._count = 0

    def __len__(self) -> int:
        with self._lock:
            return self._count


class Clashes:
    """Copies blocked by a secret of the same name that pullsecret-injector did not create."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_namespace: dict[str, set[str]] = {}

    def add(self, namespace: str, name: str) -> None:
        with self._lock:
            self._by_namespace.setdefault(namespace, set()).add(name)

    def names_in(self, namespace: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._by_namespace.get(namespace, ()))

    def blocked(self, namespace: str, name: str) -> bool:
        with self._lock:
            return name in self._by_namespace.get(namespace, ())

    def clear(self) -> None:
        with self._lock:
            self._by_namespace.clear()
