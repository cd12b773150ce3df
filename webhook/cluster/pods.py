"""Pending pods, cluster-wide, trimmed: the recovery controller's picture of stuck pods.

One list+watch of ``/api/v1/pods`` (a ``cluster/reflector.py`` stream, as
``cluster/watchers.py`` runs for Secrets and Namespaces) with the server-side field
selector ``status.phase=Pending``. A pod whose image cannot be pulled never starts, so it
stays Pending; a pod that starts running leaves the selector, and the watch cache sends
it as DELETED, so the store holds only pods that have not started yet, not every pod of
the cluster.

Each object is trimmed on arrival (``core.recovery.pod_info``, strings interned: name,
namespace, uid, creation time, controller owner, the opt-out annotation, images,
imagePullSecrets, the containers' waiting reasons and ready flags); the raw object is
dropped, and a full list is consumed one page at a time. README "Stuck pods recover" and
bench/recovery_scale.py give the memory this takes at 10,000 pods.

Only the Lease holder runs it (started and stopped with leadership).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client as k8s_client

from webhook.cluster.reflector import Reflector, WatchOptions
from webhook.core.recovery import PodInfo, pod_info
from webhook.metrics import Metrics

log = logging.getLogger(__name__)

PODS = "pods"
PENDING = "status.phase=Pending"
Key = tuple[str, str]  # (namespace, name)
_STOP_JOIN_SECONDS = 5.0


def trim(obj: Mapping[str, Any]) -> PodInfo | None:
    """A Pod object as the store keeps it (its strings interned)."""
    return pod_info(obj, sys.intern)


class PodStore:
    """namespace -> name -> PodInfo of the watched pods, and how many of them are stuck.

    Written by the watch thread, read by the controller: every method takes the lock and
    hands out immutable values or copies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, PodInfo]] = {}
        self._count = 0
        self._stuck = 0
        self.synced = False

    def replace(self, pods: Iterable[PodInfo]) -> None:
        by_ns: dict[str, dict[str, PodInfo]] = {}
        count = stuck = 0
        for p in pods:
            by_ns.setdefault(p.namespace, {})[p.name] = p
            count += 1
            stuck += bool(p.stuck)
        with self._lock:
            self._pods = by_ns
            self._count = count
            self._stuck = stuck
            self.synced = True

    def upsert(self, pod: PodInfo) -> PodInfo | None:
        """Store `pod`; returns the version it replaced."""
        with self._lock:
            names = self._pods.setdefault(pod.namespace, {})
            old = names.get(pod.name)
            names[pod.name] = pod
            self._count += old is None
            self._stuck += bool(pod.stuck) - bool(old is not None and old.stuck)
            return old

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            names = self._pods.get(namespace)
            old = names.pop(name, None) if names is not None else None
            if old is None:
                return
            if not names:
                del self._pods[namespace]
            self._count -= 1
            self._stuck -= bool(old.stuck)

    def get(self, key: Key) -> PodInfo | None:
        with self._lock:
            return self._pods.get(key[0], {}).get(key[1])

    def in_namespace(self, namespace: str) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.get(namespace, {}).values())

    def all(self) -> list[PodInfo]:
        with self._lock:
            return [p for names in self._pods.values() for p in names.values()]

    def __len__(self) -> int:
        return self._count

    @property
    def stuck(self) -> int:
        return self._stuck


PodListener = Callable[[PodInfo | None], None]  # a stuck pod changed; None: re-listed


class _PodHandler:
    """The Reflector handler of Pending pods: trimmed into the PodStore."""

    def __init__(self, store: PodStore, metrics: Metrics, listener: PodListener) -> None:
        self._store = store
        self._metrics = metrics
        self._listener = listener

    def replace(self, items: Iterable[Mapping[str, Any]]) -> int:
        self._store.replace(p for p in map(trim, items) if p is not None)
        count = len(self._store)
        self._metrics.recovery_cached_pods.set(count)
        log.info("listed pods", extra={"pods": count, "stuck": self._store.stuck})
        return count

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        info = trim(obj)
        if info is None:
            return
        if event == "DELETED":
            self._store.delete(info.namespace, info.name)
        else:
            self._store.upsert(info)
            if info.stuck:
                self._listener(info)
        self._metrics.recovery_cached_pods.set(len(self._store))


class PodWatcher:
    """Keeps a PodStore the live picture of the cluster's Pending pods.

    ``listener`` hears of every stored pod that waits on a failed image pull (in the watch
    thread: it must be quick) and of every full list (``None``).
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        store: PodStore,
        metrics: Metrics,
        listener: PodListener,
        options: WatchOptions | None = None,
        *,
        field_selector: str = PENDING,
    ) -> None:
        self._selector = field_selector
        restarts = metrics.watch_restarts
        self._stream = Reflector(
            PODS,
            k8s_client.CoreV1Api(api_client).list_pod_for_all_namespaces,
            _PodHandler(store, metrics, listener),
            field_selector=field_selector,
            options=options or WatchOptions(),
            on_listed=lambda _first: listener(None),
            on_alive=lambda: None,
            on_restart=lambda reason: restarts.labels(PODS, reason).inc(),
        )

    def start(self) -> None:
        self._stream.start()
        log.info("watching pods", extra={"field_selector": self._selector})

    def stop(self) -> None:
        """Stop the thread: the in-flight request is cut, a backoff sleep ends at once."""
        self._stream.request_stop()
        if not self._stream.join(_STOP_JOIN_SECONDS):
            log.warning("the pod watch thread is still finishing a request")
