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
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from webhook.credentials import (
    REGISTRY_SECRET_TYPES,
    ParsedDockerConfig,
    RegistryKey,
    parse_docker_config,
)

log = logging.getLogger(__name__)

OUR_ANNOTATION_PREFIX = "pullsecret-injector.io/"

_EMPTY: Mapping[str, RegistrySecret] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RegistrySecret:
    """What the webhook knows of one registry secret: never its credentials."""

    namespace: str
    name: str
    type: str
    keys: tuple[RegistryKey, ...]
    error: str | None = None  # the kubelet could not parse it: never inject
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)  # ours only

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.keys)


def registry_secret(
    namespace: str,
    name: str,
    secret_type: str,
    parsed: ParsedDockerConfig,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> RegistrySecret:
    """Build a RegistrySecret keeping only the metadata the webhook needs."""
    ours = {k: v for k, v in (annotations or {}).items() if k.startswith(OUR_ANNOTATION_PREFIX)}
    return RegistrySecret(
        namespace=namespace,
        name=name,
        type=secret_type,
        keys=_shared_keys(parsed.keys),
        error=parsed.error,
        labels=_shared_map(frozenset((labels or {}).items())),
        annotations=_shared_map(frozenset(ours.items())),
    )


# A large cluster holds many secrets with equal keys and labels (a registry copied into
# every namespace of a project): equal values share one immutable object, which keeps
# the store of 50,000 secrets several times smaller. Bounded; immutable values only.
@lru_cache(maxsize=16384)
def _shared_keys(keys: tuple[RegistryKey, ...]) -> tuple[RegistryKey, ...]:
    return keys


@lru_cache(maxsize=16384)
def _shared_map(items: frozenset[tuple[str, str]]) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def is_registry_type(secret_type: Any) -> bool:
    return secret_type in REGISTRY_SECRET_TYPES


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
        frozen = {ns: MappingProxyType(items) for ns, items in grouped.items()}
        with self._lock:
            self._secrets = dict(frozen)
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
        frozen = {n: MappingProxyType(dict(lbl)) for n, lbl in namespaces.items()}
        with self._lock:
            self._namespaces = dict(frozen)
        self._notify(ChangeKind.NAMESPACES_RELISTED)


def string_map(value: Any) -> dict[str, str]:
    """The str-valued entries of a mapping (labels, annotations); {} for anything else."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


ParseConfig = Callable[
    [str, Mapping[str, str] | None, Mapping[str, str] | None], ParsedDockerConfig
]


def secret_from_object(
    obj: Mapping[str, Any], parse: ParseConfig = parse_docker_config
) -> RegistrySecret | None:
    """A Secret object (API JSON or manifest) -> RegistrySecret; None if not a registry type.

    Only the metadata the webhook needs survives: the data is parsed (by `parse`, which a
    caller may memoise) for its registry keys and dropped (kubectl's
    last-applied-configuration annotation, which repeats the whole secret, is never kept).
    """
    secret_type = obj.get("type")
    if not is_registry_type(secret_type):
        return None
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    data = obj.get("data")
    string_data = obj.get("stringData")
    parsed = parse(
        str(secret_type),
        data if isinstance(data, Mapping) else None,
        string_data if isinstance(string_data, Mapping) else None,
    )
    return registry_secret(
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        str(secret_type),
        parsed,
        labels=string_map(meta.get("labels")),
        annotations=string_map(meta.get("annotations")),
    )
