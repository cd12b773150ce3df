"""In-memory index of the cluster state the decision needs: namespace -> registry secrets.

The store keeps only namespace, name, type, the labels and our own annotations, and the
registry keys of each secret: never a password, token or ``auth`` value.

Writers (the manifest loader, the Kubernetes watches) replace whole immutable values under
a lock; readers on the admission path take no lock: each namespace's mapping is replaced,
never mutated, so a reader always sees one consistent snapshot of a namespace.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from webhook.core.model import RegistrySecret

log = logging.getLogger(__name__)

# The store's resource names (also the API's): what is synced and how fresh, per resource.
SECRETS = "secrets"
NAMESPACES = "namespaces"

_EMPTY: Mapping[str, RegistrySecret] = MappingProxyType({})


def freeze_heap() -> None:
    """After the first full load: move what is alive now out of the collector's reach.

    The store of a large cluster is hundreds of thousands of long-lived objects; without
    this every full collection walks them all, which costs the admission path (measured in
    bench/: 433 -> 357 µs CPU per request at 50,000 secrets). Objects replaced later are
    still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


class ChangeKind(StrEnum):
    SECRET = "secret"  # noqa: S105 - one secret added, changed or deleted (namespace, name)
    NAMESPACE = "namespace"  # one namespace added, relabelled or deleted (name)
    NAMESPACE_SECRETS = "namespace_secrets"  # every secret of one namespace replaced
    SECRETS_RELISTED = "secrets_relisted"  # every secret replaced (a full list)
    NAMESPACES_RELISTED = "namespaces_relisted"


@dataclass(frozen=True, slots=True)
class Change:
    """What one store write changed, as told to listeners."""

    kind: ChangeKind
    namespace: str = ""
    name: str = ""


Listener = Callable[[Change], None]


class Store:
    """namespace -> {secret name -> RegistrySecret}, plus namespace labels.

    Listeners (the replication controller) hear of every write: in the writer's thread
    (a watch thread), after the write, outside the lock. They must be quick; one that
    raises is logged and stops neither the others nor the writer.
    """

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self._secrets: dict[str, Mapping[str, RegistrySecret]] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._synced: set[str] = set()
        self._last_event: dict[str, float] = {}

    # ---- change notification -------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = tuple(x for x in self._listeners if x != listener)

    def _notify(self, kind: ChangeKind, namespace: str = "", name: str = "") -> None:
        if not self._listeners:
            return
        change = Change(kind, namespace, name)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("store listener failed", extra={"change": kind.value})

    # ---- reads (lock-free) -------------------------------------------------
    def secrets_in(self, namespace: str) -> Mapping[str, RegistrySecret]:
        """The registry secrets stored in a namespace (empty mapping when none)."""
        return self._secrets.get(namespace, _EMPTY)

    def has_namespace(self, namespace: str) -> bool:
        """Whether the namespace is known (from a Namespace object or a secret in it)."""
        return namespace in self._namespaces or namespace in self._secrets

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._namespaces.get(namespace)

    def namespaces(self) -> dict[str, Mapping[str, str]]:
        return dict(self._namespaces)

    def all_secrets(self) -> list[RegistrySecret]:
        return [s for ns in list(self._secrets.values()) for s in ns.values()]

    def secret_count(self) -> int:
        return sum(len(ns) for ns in list(self._secrets.values()))

    # ---- sync state ----------------------------------------------------------
    def mark_synced(self, resource: str) -> None:
        with self._lock:
            self._synced.add(resource)
            self._last_event[resource] = time.monotonic()

    def touch(self, resource: str) -> None:
        """Record that a watch of `resource` just proved alive (event or bookmark)."""
        self._last_event[resource] = time.monotonic()

    def is_synced(self, *resources: str) -> bool:
        return all(r in self._synced for r in resources)

    def ages(self) -> dict[str, float]:
        """Seconds since the last event or bookmark, of every resource that had one."""
        now = time.monotonic()
        return {resource: now - last for resource, last in list(self._last_event.items())}

    def staleness(self, resource: str) -> float | None:
        """Seconds since the last event or bookmark of `resource`, None before the first."""
        last = self._last_event.get(resource)
        return None if last is None else time.monotonic() - last

    # ---- writes --------------------------------------------------------------
    def upsert_secret(self, secret: RegistrySecret) -> None:
        with self._lock:
            current = dict(self._secrets.get(secret.namespace, {}))
            current[secret.name] = secret
            self._secrets[secret.namespace] = MappingProxyType(current)
        self._notify(ChangeKind.SECRET, secret.namespace, secret.name)

    def delete_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            current = self._secrets.get(namespace)
            if current is None or name not in current:
                return
            remaining = {k: v for k, v in current.items() if k != name}
            if remaining:
                self._secrets[namespace] = MappingProxyType(remaining)
            else:
                del self._secrets[namespace]
        self._notify(ChangeKind.SECRET, namespace, name)

    def replace_secrets(self, secrets: Iterable[RegistrySecret]) -> None:
        """Replace every secret at once (after a full list)."""
        grouped: dict[str, dict[str, RegistrySecret]] = {}
        for s in secrets:
            grouped.setdefault(s.namespace, {})[s.name] = s
        with self._lock:
            current = self._secrets
            self._secrets = {
                ns: _same_or_new(current.get(ns), items) for ns, items in grouped.items()
            }
        self._notify(ChangeKind.SECRETS_RELISTED)

    def replace_namespace_secrets(self, namespace: str, secrets: Iterable[RegistrySecret]) -> None:
        """Replace the secrets of one namespace (a live read of a namespace never seen)."""
        items = {s.name: s for s in secrets}
        with self._lock:
            self._secrets[namespace] = MappingProxyType(items)
        self._notify(ChangeKind.NAMESPACE_SECRETS, namespace)

    def upsert_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        with self._lock:
            self._namespaces[name] = MappingProxyType(dict(labels or {}))
        self._notify(ChangeKind.NAMESPACE, name)

    def delete_namespace(self, name: str) -> None:
        with self._lock:
            self._namespaces.pop(name, None)
        self._notify(ChangeKind.NAMESPACE, name)

    def replace_namespaces(self, namespaces: Mapping[str, Mapping[str, str]]) -> None:
        with self._lock:
            current = self._namespaces
            self._namespaces = {
                n: old
                if (old := current.get(n)) is not None and old == lbl
                else MappingProxyType(dict(lbl))
                for n, lbl in namespaces.items()
            }
        self._notify(ChangeKind.NAMESPACES_RELISTED)


def _same_or_new(
    held: Mapping[str, RegistrySecret] | None, items: dict[str, RegistrySecret]
) -> Mapping[str, RegistrySecret]:
    """The mapping already held when it holds exactly these secrets (the same objects).

    A re-list that changed nothing in a namespace then leaves its mapping as it was: the
    Decider's memo, keyed on that mapping, stays warm across re-lists, and no second copy
    of 10,000 mappings is built while the old ones are still served."""
    if (
        held is not None
        and len(held) == len(items)
        and all(held.get(name) is secret for name, secret in items.items())
    ):
        return held
    return MappingProxyType(items)
