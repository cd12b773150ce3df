"""Live cluster state: registry Secrets and Namespaces, listed and watched into the Store.

Three streams (``cluster/reflector.py``), a daemon thread each: Secrets of type
``kubernetes.io/dockerconfigjson``, Secrets of type ``kubernetes.io/dockercfg`` (a field
selector takes one value, so one list+watch per type) and Namespaces (their labels). This
module holds what is specific to them: the merge of the two Secret types into one picture
(:class:`SecretViews`), the namespace labels, when a resource counts as synced and fresh,
and the live read of a namespace never seen (:meth:`ClusterWatcher.live_read`).

The store never receives a credential: each Secret is reduced (``core.model`` and
``kubelet.dockerconfig``) to namespace, name, type, labels, our annotations and the
registry keys; the raw object (data, kubectl's last-applied-configuration annotation) is
dropped as soon as it is parsed, and no log line carries any of it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client as k8s_client

from webhook.cluster.heap import HeapKeeper
from webhook.cluster.pacing import ListPacer
from webhook.cluster.reflector import Handler, Reflector, WatchOptions
from webhook.cluster.secret_views import LiveReader, SecretViews, names
from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.core.model import string_map
from webhook.kubelet.dockerconfig import REGISTRY_SECRET_TYPES
from webhook.metrics import Metrics

log = logging.getLogger(__name__)

# How long stop() waits for the threads before it gives up on them (they are daemons).
_STOP_JOIN_SECONDS = 5.0


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    """A namespace's labels, their values interned: each namespace carries its own name as
    `kubernetes.io/metadata.name`, and its secrets name it too (core/model.py)."""
    meta = obj.get("metadata")
    labels = string_map(meta.get("labels") if isinstance(meta, dict) else None)
    return {key: sys.intern(value) for key, value in labels.items()}


class _SecretTypeHandler:
    """The Reflector handler of one Secret type: its part of the merged views."""

    def __init__(self, views: SecretViews, secret_type: str) -> None:
        self._views = views
        self._type = secret_type

    def replace(self, items: Iterable[Mapping[str, Any]]) -> int:
        return self._views.replace_type(self._type, items)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        self._views.apply(self._type, event, obj)


class _NamespaceHandler:
    """The Reflector handler of Namespaces: their labels in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def replace(self, items: Iterable[Mapping[str, Any]]) -> int:
        namespaces: dict[str, dict[str, str]] = {}
        for obj in items:
            _, name = names(obj)
            if name:
                namespaces[sys.intern(name)] = _labels(obj)
        self._store.replace_namespaces(namespaces)
        return len(namespaces)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        _, name = names(obj)
        if not name:
            return
        if event == "DELETED":
            self._store.delete_namespace(name)
        else:
            self._store.upsert_namespace(sys.intern(name), _labels(obj))
        log.debug("namespace event", extra={"namespace": name, "event": event})


class ClusterWatcher:
    """Keeps the Store an exact, live picture of the cluster's registry secrets and namespaces.

    ``start()`` returns at once; ``store.is_synced(SECRETS, NAMESPACES)`` turns true after
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
        options: WatchOptions | None = None,
        *,
        live_read_workers: int = 4,
        heap: HeapKeeper | None = None,
        pacer: ListPacer | None = None,
    ) -> None:
        self._store = store
        self._heap = heap or HeapKeeper()
        self._pacer = pacer  # None: each Reflector's default
        self._metrics = metrics
        self._options = options or WatchOptions()
        core = k8s_client.CoreV1Api(api_client)
        self._views = SecretViews(store)
        self._live = LiveReader(core, self._views, metrics, workers=live_read_workers)
        self._secret_streams = [
            self._reflector(
                f"{SECRETS}/{t}",
                SECRETS,
                core.list_secret_for_all_namespaces,
                _SecretTypeHandler(self._views, t),
                f"type={t}",
            )
            for t in REGISTRY_SECRET_TYPES
        ]
        self._namespace_stream = self._reflector(
            NAMESPACES, NAMESPACES, core.list_namespace, _NamespaceHandler(store), None
        )
        self._streams = [*self._secret_streams, self._namespace_stream]
        self._started = False

    def _reflector(
        self,
        key: str,
        resource: str,
        list_fn: Callable[..., Any],
        handler: Handler,
        field_selector: str | None,
    ) -> Reflector:
        restarts = self._metrics.watch_restarts
        return Reflector(
            key,
            list_fn,
            handler,
            field_selector=field_selector,
            options=self._options,
            on_listed=lambda first: self._listed(resource, first),
            on_alive=lambda: self._touch(resource),
            on_restart=lambda reason: restarts.labels(resource, reason).inc(),
            staleness=lambda: self._store.staleness(resource),
            on_page=self._heap.page_done,
            pacer=self._pacer,
        )

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the list+watch threads (daemons) and return at once."""
        if self._started:
            raise RuntimeError("ClusterWatcher.start() called twice")
        self._started = True
        for stream in self._streams:
            stream.start()
        log.info(
            "watching the cluster",
            extra={
                "streams": [s.key for s in self._streams],
                "watch_timeout_seconds": self._options.watch_timeout_seconds,
                "page_size": self._options.page_size,
            },
        )

    def stop(self) -> None:
        """Stop every thread: in-flight requests are cut, backoff sleeps end at once."""
        for stream in self._streams:
            stream.request_stop()
        self._live.stop()
        deadline = time.monotonic() + _STOP_JOIN_SECONDS
        alive = [s.key for s in self._streams if not s.join(max(0.0, deadline - time.monotonic()))]
        if alive:
            log.warning("watch threads still finishing a request", extra={"streams": alive})
        log.info("stopped watching the cluster")

    # ---- freshness --------------------------------------------------------------------
    def _members(self, resource: str) -> list[Reflector]:
        return self._secret_streams if resource == SECRETS else [self._namespace_stream]

    def _listed(self, resource: str, first: bool) -> None:
        members = self._members(resource)
        if first and all(s.synced for s in members):
            self._store.mark_synced(resource)
            if self._store.is_synced(SECRETS, NAMESPACES):
                self._heap.first_picture()  # keep it out of the collector's walks
        else:
            self._touch(resource)
            self._heap.listed()  # a re-list: freeze the new picture, give the old one back

    def _touch(self, resource: str) -> None:
        """A stream proved alive: the resource is fresh if all its streams are healthy."""
        members = self._members(resource)
        if all(s.synced for s in members) and all(s.healthy for s in members):
            self._store.touch(resource)

    # ---- the admission path's fallback ------------------------------------------------------
    def live_read(self, namespace: str, timeout: float) -> bool:
        """Read the registry secrets of one namespace the store has never seen.

        Bounded by `timeout` seconds; concurrent calls for one namespace share one read.
        The answer is cached in the store (an empty namespace becomes known too). Returns
        False on error or timeout (the read may still land in the store later).
        """
        return self._live.read(namespace, timeout)
