"""The registry Secrets of the cluster as the watches and live reads see them.

:class:`SecretViews` holds what each Secret-type stream knows (type -> namespace -> name
-> secret) and writes their union into the store: a re-list of one type replaces only that
type's part, and a name deleted from one type may meanwhile exist with the other (deleted
and recreated with a new type: the two streams deliver in any order). Every write goes
through one lock, held for memory work only (never during I/O).

:class:`LiveReader` serves the admission path: one bounded read of a namespace the store
has never seen, on a small pool of its own; concurrent calls for one namespace share one
read, and watch events during the read win over its (possibly older) answer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.cluster.apiclient import describe
from webhook.cluster.store import Store
from webhook.core.model import (
    RegistrySecret,
    registry_secret,
    resource_version_of,
    secret_from_object,
    string_map,
)
from webhook.kubelet.dockerconfig import (
    REGISTRY_SECRET_TYPES,
    ParsedDockerConfig,
    parse_docker_config,
)
from webhook.metrics import Metrics

log = logging.getLogger(__name__)


def names(obj: Any) -> tuple[str, str]:
    """(namespace, name) of an object; empty strings when missing."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return "", ""
    ns, name = meta.get("namespace"), meta.get("name")
    return (ns if isinstance(ns, str) else ""), (name if isinstance(name, str) else "")


class ParseCache:
    """Parsed docker configs by a digest of the secret's data.

    Large clusters hold many copies of one registry (a project or cluster registry copied
    into each of its namespaces): each distinct config is parsed once. No credential is
    kept: the key is a BLAKE2b MAC of the data under a random per-process key (so it
    cannot be brute-forced offline), the value holds registry keys only. Bounded: cleared
    when full. parse_docker_config is pure, so a hit is exactly what a parse would give.
    """

    def __init__(self, size: int = 4096) -> None:
        self._mac_key = os.urandom(32)
        self._size = size
        self._entries: dict[bytes, ParsedDockerConfig] = {}

    def parse(
        self,
        secret_type: str,
        data: Mapping[str, str] | None,
        string_data: Mapping[str, str] | None = None,
    ) -> ParsedDockerConfig:
        if string_data or not data or not all(isinstance(v, str) for v in data.values()):
            return parse_docker_config(secret_type, data, string_data)
        mac = hashlib.blake2b(key=self._mac_key, digest_size=16)
        mac.update(secret_type.encode())
        for name in sorted(data):
            mac.update(b"\0" + str(name).encode() + b"\0" + data[name].encode())
        digest = mac.digest()
        parsed = self._entries.get(digest)
        if parsed is None:
            parsed = parse_docker_config(secret_type, data, None)
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[digest] = parsed
        return parsed


def reduce_secret(obj: Mapping[str, Any], cache: ParseCache) -> RegistrySecret | None:
    """core.model.secret_from_object with the parse memoised; None when not a registry.

    The watchers' reduction, and the CLI's (cluster/livestate.py): namespace, name, type,
    labels, our annotations and the registry keys; never a credential. Namespace, name and
    type are interned: one string for each value however many secrets carry it."""
    try:
        return secret_from_object(obj, parse=cache.parse, share=sys.intern)
    except Exception as exc:  # a parser bug must not stop the watch, nor leak the data
        namespace, name = names(obj)
        log.error(
            "registry secret could not be parsed",
            extra={"namespace": namespace, "secret": name, "error_type": type(exc).__name__},
        )
        parsed = ParsedDockerConfig(keys=(), error=f"internal error ({type(exc).__name__})")
        meta = obj.get("metadata")
        labels = string_map(meta.get("labels") if isinstance(meta, Mapping) else None)
        return registry_secret(
            namespace, name, str(obj.get("type")), parsed, labels=labels, share=sys.intern
        )


def _unchanged(
    known: Mapping[str, Mapping[str, RegistrySecret]], obj: Mapping[str, Any]
) -> RegistrySecret | None:
    """The secret already held for this exact version of `obj`, if any.

    A re-list (after a 410, an API server restart) returns mostly objects the view already
    holds: same namespace, name and resourceVersion means the same object version (a
    resourceVersion is never reused, and a deleted and recreated secret gets a new one), so
    the value reduced from it before is reused instead of parsed again. The new picture
    then shares its secrets with the old one: a re-list costs neither the CPU of reducing
    50,000 secrets again nor the memory of a second copy of them (issue 11, item 6)."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    rv = resource_version_of(meta)
    namespace, name = names(obj)
    held = known.get(namespace)
    secret = held.get(name) if held is not None else None
    if secret is None or not rv or secret.resource_version != rv or secret.type != obj.get("type"):
        return None
    return secret


def _dispose(view: dict[str, dict[str, RegistrySecret]]) -> None:
    """Free a replaced view one namespace at a time (it is private to this thread now).

    Dropped at once, the old picture of 50,000 secrets is one cascade of deallocations
    with the GIL held: a pause of tens of milliseconds for every other thread (issue 11,
    item 6). Popped in a Python loop, the interpreter can switch threads between pops."""
    while view:
        view.popitem()


@dataclass(eq=False)
class _LiveRead:
    """A live read in flight; watch events during it win over its (possibly older) answer."""

    namespace: str
    future: Future[None] | None = None
    touched: set[str] = field(default_factory=set)  # secret names a watch event changed
    invalidated: bool = False  # a full re-list replaced the view meanwhile


class SecretViews:
    """What each Secret-type stream knows; their union is the store's picture."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()  # serialises secret writes: views, store, live reads
        self._views: dict[str, dict[str, dict[str, RegistrySecret]]] = {
            t: {} for t in REGISTRY_SECRET_TYPES
        }
        self._live: dict[str, _LiveRead] = {}
        self._parse_cache = ParseCache()

    def to_secret(self, obj: Mapping[str, Any]) -> RegistrySecret | None:
        """:func:`reduce_secret` with this view's parse cache."""
        return reduce_secret(obj, self._parse_cache)

    # ---- a stream's full list -----------------------------------------------------------
    def replace_type(self, secret_type: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Replace what the `secret_type` stream knows with a full list; how many."""
        view: dict[str, dict[str, RegistrySecret]] = {}
        count = 0
        known = self._views[secret_type]  # written by this stream's thread (or under the lock)
        for obj in items:
            secret = _unchanged(known, obj) or self.to_secret(obj)
            if secret is not None and secret.type == secret_type:
                view.setdefault(secret.namespace, {})[secret.name] = secret
                count += 1
        with self._lock:
            previous = self._views[secret_type]
            self._views[secret_type] = view
            for pending in self._live.values():
                pending.invalidated = True
            merged = {
                (s.namespace, s.name): s
                for v in self._views.values()
                for by_name in v.values()
                for s in by_name.values()
            }
            self._store.replace_secrets(merged.values())
            del merged
        _dispose(previous)
        return count

    # ---- a stream's event --------------------------------------------------------------
    def apply(self, secret_type: str, event: str, obj: Mapping[str, Any]) -> None:
        namespace, name = names(obj)
        if not namespace or not name:
            log.warning("secret event without namespace or name", extra={"type": secret_type})
            return
        secret = None if event == "DELETED" else self.to_secret(obj)
        if secret is not None and secret.type != secret_type:
            secret = None  # cannot happen with the field selector; treat as gone from it
        with self._lock:
            by_ns = self._views[secret_type]
            if secret is not None:
                by_ns.setdefault(namespace, {})[name] = secret
                self._store.upsert_secret(secret)
            else:
                known = by_ns.get(namespace)
                if known is not None:
                    known.pop(name, None)
                    if not known:
                        del by_ns[namespace]
                other = next(
                    (
                        v[namespace][name]
                        for t, v in self._views.items()
                        if t != secret_type and name in v.get(namespace, ())
                    ),
                    None,
                )
                if other is not None:
                    self._store.upsert_secret(other)
                else:
                    self._store.delete_secret(namespace, name)
            pending = self._live.get(namespace)
            if pending is not None:
                pending.touched.add(name)
        if secret is None:
            log.debug(
                "registry secret removed",
                extra={"namespace": namespace, "secret": name, "event": event},
            )
        else:
            log.debug(
                "registry secret stored",
                extra={
                    "namespace": namespace,
                    "secret": name,
                    "event": event,
                    "registries": [k.key for k in secret.keys],
                    "parse_error": secret.error,
                },
            )

    # ---- live reads ----------------------------------------------------------------------
    def begin_live_read(
        self, namespace: str, submit: Callable[[_LiveRead], Future[None]]
    ) -> tuple[_LiveRead, Future[None]] | None:
        """The read in flight for `namespace`, started with `submit(pending)` if none is.

        None when `submit` fails (the pool is shut down).
        """
        with self._lock:
            pending = self._live.get(namespace)
            if pending is None:
                pending = _LiveRead(namespace)
                self._live[namespace] = pending
                try:
                    pending.future = submit(pending)
                except RuntimeError:  # stop() shut the pool down meanwhile
                    del self._live[namespace]
                    return None
            assert pending.future is not None
            return pending, pending.future

    def end_live_read(self, pending: _LiveRead) -> None:
        with self._lock:
            if self._live.get(pending.namespace) is pending:
                del self._live[pending.namespace]

    def merge_live_read(
        self, pending: _LiveRead, fresh: Mapping[str, Mapping[str, RegistrySecret]]
    ) -> None:
        """Write a live read into the views and the store.

        A name a watch event touched during the read keeps the watch's version (which of
        the two is newer is unknown, and the watch converges anyway); after a re-list the
        views are left as listed. The namespace is stored even when it holds nothing.
        """
        namespace = pending.namespace
        with self._lock:
            if not pending.invalidated:
                for secret_type, found in fresh.items():
                    current = dict(self._views[secret_type].get(namespace, {}))
                    for name in set(current) | set(found):
                        if name in pending.touched:
                            continue
                        if name in found:
                            current[name] = found[name]
                        else:
                            del current[name]
                    if current:
                        self._views[secret_type][namespace] = current
                    else:
                        self._views[secret_type].pop(namespace, None)
            merged: dict[str, RegistrySecret] = {}
            for view in self._views.values():
                merged.update(view.get(namespace, {}))
            self._store.replace_namespace_secrets(namespace, merged.values())


class LiveReader:
    """One bounded read of a namespace never seen, on a pool of `workers` threads."""

    def __init__(self, core: Any, views: SecretViews, metrics: Metrics, *, workers: int) -> None:
        self._core = core
        self._views = views
        self._metrics = metrics
        self._workers = workers
        self._lock = threading.Lock()  # guards the pool against stop()
        self._pool: ThreadPoolExecutor | None = None
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def read(self, namespace: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopped:
                self._metrics.live_reads.labels("error").inc()
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._workers, thread_name_prefix="live-read"
                )
            pool = self._pool
        started = self._views.begin_live_read(
            namespace, lambda pending: pool.submit(self._read, pending, timeout)
        )
        if started is None:
            self._metrics.live_reads.labels("error").inc()
            return False
        _, future = started
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            self._metrics.live_reads.labels("timeout").inc()
            log.warning(
                "live read timed out", extra={"namespace": namespace, "timeout_seconds": timeout}
            )
            return False
        except Exception as exc:
            self._metrics.live_reads.labels("error").inc()
            log.warning("live read failed", extra={"namespace": namespace, "error": describe(exc)})
            return False
        self._metrics.live_reads.labels("ok").inc()
        return True

    def _read(self, pending: _LiveRead, timeout: float) -> None:
        namespace = pending.namespace
        try:
            fresh: dict[str, dict[str, RegistrySecret]] = {}
            for secret_type in REGISTRY_SECRET_TYPES:
                response: Any = self._core.list_namespaced_secret(
                    namespace,
                    field_selector=f"type={secret_type}",
                    _preload_content=False,
                    _request_timeout=(timeout, timeout),
                )
                try:
                    body = orjson.loads(response.data)
                finally:
                    response.release_conn()
                found: dict[str, RegistrySecret] = {}
                for obj in body.get("items") or []:
                    secret = self._views.to_secret(obj)
                    if secret is not None and secret.type == secret_type:
                        found[secret.name] = secret
                fresh[secret_type] = found
            self._views.merge_live_read(pending, fresh)
            log.info(
                "live read of a namespace never seen",
                extra={"namespace": namespace, "secret_count": sum(len(f) for f in fresh.values())},
            )
        finally:
            self._views.end_live_read(pending)
