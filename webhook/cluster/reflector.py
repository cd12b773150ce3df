"""Live cluster state: list-then-watch registry Secrets and Namespaces into the Store.

Three daemon threads, one per stream: Secrets of type ``kubernetes.io/dockerconfigjson``,
Secrets of type ``kubernetes.io/dockercfg`` (a field selector takes one value, so one
list+watch per type) and Namespaces (their labels). Each stream runs the informer loop of
client-go's reflector:

1. a paginated list (``limit``/``continue``) of the whole collection, parsed from the raw
   JSON (orjson) page by page, replacing the store's view of that stream in one step;
2. a watch from the list's ``resourceVersion`` with ``allowWatchBookmarks``; every event
   or bookmark moves the resourceVersion on and proves the picture fresh (``Store.touch``);
3. when the watch ends: at the server's ``timeoutSeconds`` re-watch at once; on 410 Gone
   (an ERROR event with a ``Status`` of code 410, or an expired continue token) list
   again; on any other error or an early close retry with capped exponential backoff and
   jitter. A client-side read timeout slightly above ``timeoutSeconds`` turns a half-open
   connection into an error instead of a frozen picture.

The store never receives a credential: each Secret is reduced (``store.registry_secret``
and ``dockerconfig.parse_docker_config``) to namespace, name, type, labels, our annotations
and the registry keys; the raw object (data, kubectl's last-applied-configuration annotation) is
dropped as soon as it is parsed, and no log line carries any of it.

``live_read`` serves the admission path: one bounded read of a namespace the store has
never seen (created a moment ago, its events not here yet).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webhook.cluster.store import Store, freeze_heap
from webhook.core.model import RegistrySecret, registry_secret, secret_from_object, string_map
from webhook.kubelet.dockerconfig import (
    REGISTRY_SECRET_TYPES,
    ParsedDockerConfig,
    parse_docker_config,
)
from webhook.metrics import Metrics

log = logging.getLogger(__name__)

SECRETS = "secrets"
NAMESPACES = "namespaces"

_GONE = 410
# Connecting to the API server takes milliseconds; ten seconds covers a busy control plane.
_CONNECT_TIMEOUT = 10.0
# Read timeout of one list page (a read, not the whole response): a page of 500 secrets is
# under a megabyte, so a minute without a byte means the connection is dead.
_LIST_READ_TIMEOUT = 60.0
# A watch that ends sooner than this without a single event counts as a failure (backoff),
# so a server that accepts and closes at once cannot make the loop spin.
_MIN_HEALTHY_WATCH_SECONDS = 1.0
# How long stop() waits for the threads before it gives up on them (they are daemons).
_STOP_JOIN_SECONDS = 5.0
_BACKOFF_BASE_SECONDS = 0.5
_LIVE_READ_WORKERS = 4


def load_api_client(kubeconfig: Path | None, context: str | None) -> k8s_client.ApiClient:
    """An API client from a kubeconfig or the pod's service account.

    Order: ``kubeconfig`` when given; else ``KUBECONFIG`` (read now, may list several files
    separated by ``:``); else ``~/.kube/config`` when it exists; else the in-cluster config
    (service account token, refreshed as the kubelet rotates it). ``context`` picks a
    kubeconfig context; it is an error without a kubeconfig. Raises ConfigException.
    """
    configuration = k8s_client.Configuration()
    config_file: str | None = None
    if kubeconfig is not None:
        config_file = str(kubeconfig)
    elif os.environ.get("KUBECONFIG"):
        config_file = os.environ["KUBECONFIG"]
    elif (default := Path("~/.kube/config").expanduser()).is_file():
        config_file = str(default)
    if config_file is not None:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file,
            context=context,
            client_configuration=configuration,
            persist_config=False,  # never write refreshed tokens back into a user's file
        )
        log.info("cluster access from kubeconfig", extra={"kubeconfig": config_file})
    else:
        if context:
            raise ConfigException(
                f"--context {context!r} needs a kubeconfig: none given, KUBECONFIG unset "
                "and ~/.kube/config missing"
            )
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        log.info("cluster access from the in-cluster service account")
    # TCP keepalive as client-go asks for it: a peer that vanished (node, NAT or load
    # balancer gone) is detected in about a minute, not at the watch's read timeout.
    configuration.keep_alive = True
    return k8s_client.ApiClient(configuration)


class _ExpiredError(Exception):
    """410 Gone: the resourceVersion or continue token is too old; list again."""


class _StoppedError(Exception):
    """stop() was called while a request was being made."""


class _RawWatch(k8s_watch.Watch):
    """The client's Watch, yielding events as plain dicts.

    Without a return type Watch skips the model deserialisation of each event (the store
    needs a few fields, and the models are slow); ``event["raw_object"]`` is the object as
    the server sent it. ERROR events still raise ApiException with the Status code.
    """

    def get_return_type(self, func: Any) -> None:
        return None


@dataclass(eq=False)
class _Stream:
    """One list+watch: a secret type, or the namespaces."""

    resource: str  # SECRETS or NAMESPACES: the Store's resource name
    secret_type: str | None = None
    thread: threading.Thread | None = None
    response: Any = None  # the in-flight urllib3 response, shut down by stop()
    synced: bool = False  # a full list has been applied at least once
    healthy: bool = False  # the last request succeeded (cleared by an error or a 410)
    connected: bool = False  # the current watch got its response (the server is back)

    @property
    def key(self) -> str:
        return self.resource if self.secret_type is None else f"{SECRETS}/{self.secret_type}"

    @property
    def field_selector(self) -> str | None:
        return None if self.secret_type is None else f"type={self.secret_type}"


@dataclass(eq=False)
class _LiveRead:
    """A live read in flight; watch events during it win over its (possibly older) answer."""

    namespace: str
    future: Future[None] | None = None
    touched: set[str] = field(default_factory=set)  # secret names a watch event changed
    invalidated: bool = False  # a full re-list replaced the view meanwhile


def _resource_version(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


def _names(obj: Any) -> tuple[str, str]:
    """(namespace, name) of an object; empty strings when missing."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return "", ""
    ns, name = meta.get("namespace"), meta.get("name")
    return (ns if isinstance(ns, str) else ""), (name if isinstance(name, str) else "")


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata")
    return string_map(meta.get("labels") if isinstance(meta, dict) else None)


class _ParseCache:
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


def _to_secret(obj: Mapping[str, Any], cache: _ParseCache) -> RegistrySecret | None:
    """store.secret_from_object with the parse memoised; None when not a registry secret."""
    try:
        return secret_from_object(obj, parse=cache.parse)
    except Exception as exc:  # a parser bug must not stop the watch, nor leak the data
        namespace, name = _names(obj)
        log.error(
            "registry secret could not be parsed",
            extra={"namespace": namespace, "secret": name, "error_type": type(exc).__name__},
        )
        parsed = ParsedDockerConfig(keys=(), error=f"internal error ({type(exc).__name__})")
        return registry_secret(namespace, name, str(obj.get("type")), parsed, labels=_labels(obj))


def _shutdown(response: Any) -> None:
    """Unblock a thread reading `response` (works for TLS sockets too)."""
    try:
        if callable(getattr(response, "shutdown", None)):
            response.shutdown()  # urllib3 >= 2.3
            return
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, RuntimeError):
        pass


def _describe(exc: BaseException) -> str:
    """An error for a log line: status and reason of an API error, never a response body."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class ClusterWatcher:
    """Keeps the Store an exact, live picture of the cluster's registry secrets and namespaces.

    ``start()`` returns at once; ``store.is_synced("secrets", "namespaces")`` turns true after
    the first complete list of every stream. During reconnects the store keeps serving the
    last known state; ``store.staleness(resource)``, the metric
    ``pullsecret_injector_last_sync_age_seconds`` and the reconnect log lines say how old it
    is. The secrets' freshness is that of the stalest of the two type streams.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        store: Store,
        metrics: Metrics,
        *,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_cap_seconds: float = 30.0,
    ) -> None:
        if watch_timeout_seconds < 1:
            raise ValueError("watch_timeout_seconds must be at least 1")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if backoff_cap_seconds <= 0:
            raise ValueError("backoff_cap_seconds must be positive")
        self._core = k8s_client.CoreV1Api(api_client)
        self._store = store
        self._metrics = metrics
        self._watch_timeout = watch_timeout_seconds
        # The server closes the watch at timeoutSeconds; a connection silent for longer than
        # that (plus slack for a loaded server) is half-open: drop it and reconnect.
        self._watch_read_timeout = watch_timeout_seconds + min(10.0, watch_timeout_seconds / 2)
        self._page_size = page_size
        self._backoff_cap = backoff_cap_seconds
        self._backoff_base = min(_BACKOFF_BASE_SECONDS, backoff_cap_seconds)

        self._stop_event = threading.Event()
        self._io_lock = threading.Lock()  # guards _Stream.response against stop()
        self._write_lock = threading.Lock()  # serialises secret writes: views, store, counts
        self._secret_streams = [_Stream(SECRETS, t) for t in REGISTRY_SECRET_TYPES]
        self._namespace_stream = _Stream(NAMESPACES)
        self._streams = [*self._secret_streams, self._namespace_stream]
        # What each secret-type stream knows: type -> namespace -> name -> secret. The store
        # holds their union; a re-list of one type replaces only that type's part of it.
        self._views: dict[str, dict[str, dict[str, RegistrySecret]]] = {
            t: {} for t in REGISTRY_SECRET_TYPES
        }
        self._secret_count = 0
        self._namespace_names: set[str] = set()
        self._live: dict[str, _LiveRead] = {}
        self._parse_cache = _ParseCache()
        self._executor: ThreadPoolExecutor | None = None
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the list+watch threads (daemons) and return at once."""
        if self._started:
            raise RuntimeError("ClusterWatcher.start() called twice")
        self._started = True
        for stream in self._streams:
            stream.thread = threading.Thread(
                target=self._run, args=(stream,), name=f"watch-{stream.key}", daemon=True
            )
            stream.thread.start()
        log.info(
            "watching the cluster",
            extra={
                "streams": [s.key for s in self._streams],
                "watch_timeout_seconds": self._watch_timeout,
                "page_size": self._page_size,
            },
        )

    def stop(self) -> None:
        """Stop every thread: in-flight requests are cut, backoff sleeps end at once."""
        self._stop_event.set()
        with self._io_lock:
            for stream in self._streams:
                if stream.response is not None:
                    _shutdown(stream.response)
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + _STOP_JOIN_SECONDS
        for stream in self._streams:
            if stream.thread is not None:
                stream.thread.join(max(0.0, deadline - time.monotonic()))
        alive = [s.key for s in self._streams if s.thread is not None and s.thread.is_alive()]
        if alive:
            log.warning("watch threads still finishing a request", extra={"streams": alive})
        log.info("stopped watching the cluster")

    # ---- the loop of one stream -------------------------------------------------------
    def _run(self, stream: _Stream) -> None:
        rv: str | None = None
        failures = 0
        reason = ""
        while not self._stop_event.is_set():
            last_reason = reason
            stream.connected = False
            try:
                if rv is None:
                    rv = self._list_and_replace(stream)
                started = time.monotonic()
                rv, events = self._watch(stream, rv)
                lasted = time.monotonic() - started
                if lasted + 0.5 >= self._watch_timeout:
                    reason = "timeout"  # the server's timeoutSeconds: the normal case
                    failures = 0
                    self._touch(stream)  # a whole watch without a 410: fresh until now
                elif events or lasted >= _MIN_HEALTHY_WATCH_SECONDS:
                    reason = "closed"
                    failures = 0
                else:
                    reason = "closed"
                    failures += 1
                log.debug(
                    "watch ended",
                    extra={"stream": stream.key, "reason": reason, "events": events, "rv": rv},
                )
            except _StoppedError:
                break
            except _ExpiredError:
                # The server answered, so any outage is over: the first re-list after a 410
                # is immediate whatever failed before; only repeated 410s back off. The
                # picture is stale until the re-list lands (the age keeps growing).
                rv = None
                reason = "expired"
                stream.healthy = False
                failures = failures + 1 if last_reason == "expired" else 1
            except Exception as exc:
                if self._stop_event.is_set():
                    break
                stream.healthy = False
                reason = "error"
                failures = 1 if stream.connected else failures + 1  # reset by a live watch
                log.warning(
                    "list/watch failed: retrying with backoff",
                    extra={
                        "stream": stream.key,
                        "error": _describe(exc),
                        "failures": failures,
                        "resource_version": rv,
                        "staleness_seconds": self._age(stream),
                    },
                )
            self._metrics.watch_restarts.labels(stream.resource, reason).inc()
            self._update_age_gauges()
            delay = 0.0 if reason == "expired" and failures == 1 else self._backoff(failures)
            if reason == "expired":
                log.info(
                    "resourceVersion expired (410 Gone): listing again",
                    extra={
                        "stream": stream.key,
                        "staleness_seconds": self._age(stream),
                        "retry_in_seconds": round(delay, 3),
                    },
                )
            if delay and self._stop_event.wait(delay):
                break

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter (0 after a success)."""
        if failures <= 0:
            return 0.0
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(failures - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    # ---- requests ---------------------------------------------------------------------
    def _list_function(self, stream: _Stream) -> Callable[..., Any]:
        if stream.resource == NAMESPACES:
            return self._core.list_namespace
        return self._core.list_secret_for_all_namespaces

    def _adopt(self, stream: _Stream, response: Any) -> None:
        """Remember the in-flight response so stop() can cut it."""
        with self._io_lock:
            if self._stop_event.is_set():
                _shutdown(response)
                response.release_conn()
                raise _StoppedError
            stream.response = response

    def _release(self, stream: _Stream) -> None:
        with self._io_lock:
            stream.response = None

    def _pages(self, stream: _Stream) -> Iterator[tuple[str | None, list[Any]]]:
        """(resourceVersion, items) of each page of a consistent paginated list."""
        list_fn = self._list_function(stream)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self._page_size,
                "_preload_content": False,
                "_request_timeout": (_CONNECT_TIMEOUT, _LIST_READ_TIMEOUT),
            }
            if stream.field_selector:
                kwargs["field_selector"] = stream.field_selector
            if token:
                kwargs["_continue"] = token
            try:
                response = list_fn(**kwargs)
            except ApiException as exc:
                if exc.status == _GONE:
                    # An expired continue token: the snapshot is gone. The token in the
                    # 410 would give an inconsistent list; start over for a consistent one.
                    raise _ExpiredError from exc
                raise
            self._adopt(stream, response)
            try:
                body = orjson.loads(response.data)
            finally:
                self._release(stream)
                response.release_conn()
            meta = body.get("metadata") or {}
            items = body.get("items") or []
            token = meta.get("continue") or None
            yield meta.get("resourceVersion"), items
            if not token:
                return

    def _list_and_replace(self, stream: _Stream) -> str:
        """List the whole collection and replace the store's view of it in one step."""
        started = time.monotonic()
        rv: str | None = None
        count = 0
        if stream.resource == NAMESPACES:
            namespaces: dict[str, dict[str, str]] = {}
            for page_rv, items in self._pages(stream):
                rv = rv or page_rv
                for obj in items:
                    _, name = _names(obj)
                    if name:
                        namespaces[name] = _labels(obj)
            self._store.replace_namespaces(namespaces)
            self._namespace_names = set(namespaces)
            self._metrics.cache_namespaces.set(len(namespaces))
            count = len(namespaces)
        else:
            view: dict[str, dict[str, RegistrySecret]] = {}
            for page_rv, items in self._pages(stream):
                rv = rv or page_rv
                for obj in items:
                    secret = _to_secret(obj, self._parse_cache)
                    if secret is not None and secret.type == stream.secret_type:
                        view.setdefault(secret.namespace, {})[secret.name] = secret
                        count += 1
            with self._write_lock:
                self._views[str(stream.secret_type)] = view
                for pending in self._live.values():
                    pending.invalidated = True
                merged = {
                    (s.namespace, s.name): s
                    for v in self._views.values()
                    for by_name in v.values()
                    for s in by_name.values()
                }
                self._store.replace_secrets(merged.values())
                self._secret_count = len(merged)
                self._metrics.cache_secrets.set(self._secret_count)
        if rv is None:
            raise ValueError("list response without metadata.resourceVersion")
        first = not stream.synced
        stream.synced = True
        stream.healthy = True
        if first and self._all_synced(stream):
            self._store.mark_synced(stream.resource)
            if self._store.is_synced("secrets", "namespaces"):
                freeze_heap()  # the first full picture: keep it out of the collector's walks
        else:
            self._touch(stream)
        log.info(
            "listed" if first else "listed again",
            extra={
                "stream": stream.key,
                "items": count,
                "resource_version": rv,
                "duration_seconds": round(time.monotonic() - started, 3),
                "synced": self._store.is_synced(stream.resource),
            },
        )
        return rv

    def _watch(self, stream: _Stream, rv: str) -> tuple[str, int]:
        """Watch from `rv` until the stream ends; returns the last resourceVersion seen."""
        list_fn = self._list_function(stream)

        def call(**kwargs: Any) -> Any:
            response = list_fn(**kwargs)
            self._adopt(stream, response)
            # Connected: the server is back, and replays everything after rv. Not a proof of
            # freshness yet (a 410 may come as the first event): the age moves on events.
            stream.healthy = True
            stream.connected = True
            return response

        kwargs: dict[str, Any] = {
            "resource_version": rv,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self._watch_timeout,  # also disables Watch's own retries
            "_request_timeout": (_CONNECT_TIMEOUT, self._watch_read_timeout),
        }
        if stream.field_selector:
            kwargs["field_selector"] = stream.field_selector
        events = 0
        watch = _RawWatch()  # type: ignore[no-untyped-call]
        generator = watch.stream(call, **kwargs)  # type: ignore[no-untyped-call]
        try:
            for event in generator:
                if self._stop_event.is_set():
                    raise _StoppedError
                kind = event.get("type") if isinstance(event, Mapping) else None
                obj = event.get("raw_object") if isinstance(event, Mapping) else None
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, Mapping):
                    if stream.resource == NAMESPACES:
                        self._apply_namespace(kind, obj)
                    else:
                        self._apply_secret(stream, kind, obj)
                elif kind != "BOOKMARK":
                    log.warning(
                        "unexpected watch event", extra={"stream": stream.key, "type": kind}
                    )
                    continue
                rv = _resource_version(obj) or rv
                events += 1
                self._touch(stream)
        except ApiException as exc:
            if exc.status == _GONE:
                raise _ExpiredError from exc
            raise
        finally:
            generator.close()  # closes and releases the response
            self._release(stream)
        return rv, events

    # ---- applying changes ---------------------------------------------------------------
    def _names_in(self, namespace: str) -> set[str]:
        return {name for v in self._views.values() for name in v.get(namespace, ())}

    def _present(self, namespace: str, name: str) -> bool:
        return any(name in v.get(namespace, ()) for v in self._views.values())

    def _apply_secret(self, stream: _Stream, kind: str, obj: Mapping[str, Any]) -> None:
        namespace, name = _names(obj)
        if not namespace or not name:
            log.warning("secret event without namespace or name", extra={"stream": stream.key})
            return
        secret = None if kind == "DELETED" else _to_secret(obj, self._parse_cache)
        if secret is not None and secret.type != stream.secret_type:
            secret = None  # cannot happen with the field selector; treat as gone from it
        own = str(stream.secret_type)
        with self._write_lock:
            before = self._present(namespace, name)
            by_ns = self._views[own]
            if secret is not None:
                by_ns.setdefault(namespace, {})[name] = secret
                self._store.upsert_secret(secret)
            else:
                known = by_ns.get(namespace)
                if known is not None:
                    known.pop(name, None)
                    if not known:
                        del by_ns[namespace]
                # The same name may meanwhile exist with the other type (deleted and
                # recreated with a new type: the two streams deliver in any order).
                other = next(
                    (
                        v[namespace][name]
                        for t, v in self._views.items()
                        if t != own and name in v.get(namespace, ())
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
            self._secret_count += int(self._present(namespace, name)) - int(before)
            self._metrics.cache_secrets.set(self._secret_count)
        if secret is None:
            log.debug(
                "registry secret removed",
                extra={"namespace": namespace, "secret": name, "event": kind},
            )
        else:
            log.debug(
                "registry secret stored",
                extra={
                    "namespace": namespace,
                    "secret": name,
                    "event": kind,
                    "registries": [k.key for k in secret.keys],
                    "parse_error": secret.error,
                },
            )

    def _apply_namespace(self, kind: str, obj: Mapping[str, Any]) -> None:
        _, name = _names(obj)
        if not name:
            return
        if kind == "DELETED":
            self._store.delete_namespace(name)
            self._namespace_names.discard(name)
        else:
            self._store.upsert_namespace(name, _labels(obj))
            self._namespace_names.add(name)
        self._metrics.cache_namespaces.set(len(self._namespace_names))
        log.debug("namespace event", extra={"namespace": name, "event": kind})

    # ---- freshness --------------------------------------------------------------------
    def _all_synced(self, stream: _Stream) -> bool:
        if stream.resource == NAMESPACES:
            return stream.synced
        return all(s.synced for s in self._secret_streams)

    def _touch(self, stream: _Stream) -> None:
        """The stream proved alive: the resource is fresh if all its streams are healthy."""
        if not self._all_synced(stream):
            return
        if stream.resource == NAMESPACES:
            self._store.touch(NAMESPACES)
        elif all(s.healthy for s in self._secret_streams):
            self._store.touch(SECRETS)

    def _age(self, stream: _Stream) -> float | None:
        age = self._store.staleness(stream.resource)
        return None if age is None else round(age, 1)

    def _update_age_gauges(self) -> None:
        for resource in (SECRETS, NAMESPACES):
            age = self._store.staleness(resource)
            if age is not None:
                self._metrics.last_sync_age.labels(resource).set(age)

    # ---- the admission path's fallback ------------------------------------------------------
    def live_read(self, namespace: str, timeout: float) -> bool:
        """Read the registry secrets of one namespace the store has never seen.

        Bounded by `timeout` seconds; concurrent calls for one namespace share one read.
        The answer is cached in the store (an empty namespace becomes known too). Returns
        False on error or timeout (the read may still land in the store later).
        """
        deadline = time.monotonic() + timeout
        with self._io_lock:
            if self._stop_event.is_set():
                self._metrics.live_reads.labels("error").inc()
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=_LIVE_READ_WORKERS, thread_name_prefix="live-read"
                )
            executor = self._executor
        with self._write_lock:
            pending = self._live.get(namespace)
            if pending is None:
                pending = _LiveRead(namespace)
                self._live[namespace] = pending
                try:
                    pending.future = executor.submit(self._read_namespace, pending, timeout)
                except RuntimeError:  # stop() shut the executor down meanwhile
                    del self._live[namespace]
                    self._metrics.live_reads.labels("error").inc()
                    return False
            future = pending.future
        assert future is not None
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
            log.warning("live read failed", extra={"namespace": namespace, "error": _describe(exc)})
            return False
        self._metrics.live_reads.labels("ok").inc()
        return True

    def _read_namespace(self, pending: _LiveRead, timeout: float) -> None:
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
                    secret = _to_secret(obj, self._parse_cache)
                    if secret is not None and secret.type == secret_type:
                        found[secret.name] = secret
                fresh[secret_type] = found
            with self._write_lock:
                self._merge_live_read(pending, fresh)
            log.info(
                "live read of a namespace never seen",
                extra={"namespace": namespace, "secrets": sum(len(f) for f in fresh.values())},
            )
        finally:
            with self._write_lock:
                if self._live.get(namespace) is pending:
                    del self._live[namespace]

    def _merge_live_read(
        self, pending: _LiveRead, fresh: Mapping[str, Mapping[str, RegistrySecret]]
    ) -> None:
        """Write a live read into the views and the store (under the write lock).

        A name a watch event touched during the read keeps the watch's version (which of
        the two is newer is unknown, and the watch converges anyway); after a re-list the
        views are left as listed. The namespace is stored even when it holds nothing.
        """
        namespace = pending.namespace
        before = len(self._names_in(namespace))
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
        self._secret_count += len(merged) - before
        self._metrics.cache_secrets.set(self._secret_count)
