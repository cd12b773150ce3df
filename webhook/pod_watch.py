"""Pending pods, cluster-wide, trimmed: the recovery controller's picture of stuck pods.

One list+watch of ``/api/v1/pods`` with the server-side field selector
``status.phase=Pending`` (the loop of webhook/kube.py: paginated list, watch with
bookmarks from its resourceVersion, re-list on 410 Gone, capped backoff with jitter).
A pod whose image cannot be pulled never starts, so it stays Pending; a pod that starts
running leaves the selector, and the watch cache sends it as DELETED, so the store
holds only pods that have not started yet, not every pod of the cluster.

Each object is trimmed on arrival (``recovery_plan.pod_info``: name, namespace, uid,
creation time, controller owner, the opt-out annotation, images, imagePullSecrets, the
containers' waiting reasons and ready flags); the raw object is dropped. README "Stuck
pods recover" and bench/recovery_scale.py give the memory this takes at 10,000 pods.

Only the Lease holder runs it (started and stopped with leadership).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from webhook.kube import (
    _BACKOFF_BASE_SECONDS,
    _CONNECT_TIMEOUT,
    _GONE,
    _LIST_READ_TIMEOUT,
    _MIN_HEALTHY_WATCH_SECONDS,
    _describe,
    _ExpiredError,
    _RawWatch,
    _resource_version,
    _shutdown,
    _StoppedError,
)
from webhook.metrics import Metrics
from webhook.recovery_plan import PodInfo, pod_info

log = logging.getLogger(__name__)

PODS = "pods"
PENDING = "status.phase=Pending"
Key = tuple[str, str]  # (namespace, name)


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

    def replace(self, pods: list[PodInfo]) -> None:
        by_ns: dict[str, dict[str, PodInfo]] = {}
        for p in pods:
            by_ns.setdefault(p.namespace, {})[p.name] = p
        with self._lock:
            self._pods = by_ns
            self._count = len(pods)
            self._stuck = sum(1 for p in pods if p.stuck)
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
        *,
        field_selector: str = PENDING,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_cap_seconds: float = 30.0,
    ) -> None:
        self._core = k8s_client.CoreV1Api(api_client)
        self._store = store
        self._metrics = metrics
        self._listener = listener
        self._selector = field_selector
        self._watch_timeout = watch_timeout_seconds
        self._watch_read_timeout = watch_timeout_seconds + min(10.0, watch_timeout_seconds / 2)
        self._page_size = page_size
        self._backoff_cap = backoff_cap_seconds
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PodWatcher.start() called twice")
        self._thread = threading.Thread(target=self._run, name="watch-pods", daemon=True)
        self._thread.start()
        log.info("watching pods", extra={"field_selector": self._selector})

    def stop(self) -> None:
        self._stop.set()
        with self._io_lock:
            if self._response is not None:
                _shutdown(self._response)
        if self._thread is not None:
            self._thread.join(5.0)

    # ---- the loop (webhook/kube.py's, for one stream) ------------------------------------
    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                started = time.monotonic()
                rv, events = self._watch(rv)
                lasted = time.monotonic() - started
                healthy = events > 0 or lasted >= _MIN_HEALTHY_WATCH_SECONDS
                reason = "timeout" if lasted + 0.5 >= self._watch_timeout else "closed"
                failures = 0 if healthy else failures + 1
            except _StoppedError:
                break
            except _ExpiredError:
                rv, reason = None, "expired"
                failures += 1
                log.info("pods: resourceVersion expired (410 Gone): listing again")
            except Exception as exc:
                if self._stop.is_set():
                    break
                reason = "error"
                failures += 1
                log.warning(
                    "pods: list/watch failed: retrying with backoff",
                    extra={"error": _describe(exc), "failures": failures},
                )
            self._metrics.watch_restarts.labels(PODS, reason).inc()
            delay = 0.0
            if failures and not (reason == "expired" and failures == 1):
                ceiling = min(self._backoff_cap, _BACKOFF_BASE_SECONDS * 2.0 ** min(failures, 30))
                delay = ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            if delay and self._stop.wait(delay):
                break

    def _adopt(self, response: Any) -> None:
        with self._io_lock:
            if self._stop.is_set():
                _shutdown(response)
                raise _StoppedError
            self._response = response

    def _release(self) -> None:
        with self._io_lock:
            self._response = None

    def _pages(self) -> Iterator[tuple[str | None, list[Any]]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self._page_size,
                "field_selector": self._selector,
                "_preload_content": False,
                "_request_timeout": (_CONNECT_TIMEOUT, _LIST_READ_TIMEOUT),
            }
            if token:
                kwargs["_continue"] = token
            try:
                response: Any = self._core.list_pod_for_all_namespaces(**kwargs)
            except ApiException as exc:
                if exc.status == _GONE:
                    raise _ExpiredError from exc
                raise
            self._adopt(response)
            try:
                body = orjson.loads(response.data)
            finally:
                self._release()
                response.release_conn()
            meta = body.get("metadata") or {}
            token = meta.get("continue") or None
            yield meta.get("resourceVersion"), body.get("items") or []
            if not token:
                return

    def _list(self) -> str:
        rv: str | None = None
        pods: list[PodInfo] = []
        for page_rv, items in self._pages():
            rv = rv or page_rv
            pods.extend(p for p in map(pod_info, items) if p is not None)
            del items  # one page of raw objects at a time
        if rv is None:
            raise ValueError("list response without metadata.resourceVersion")
        self._store.replace(pods)
        self._metrics.recovery_cached_pods.set(len(pods))
        log.info("listed pods", extra={"pods": len(pods), "stuck": self._store.stuck})
        self._listener(None)
        return rv

    def _watch(self, rv: str) -> tuple[str, int]:
        def call(**kwargs: Any) -> Any:
            response = self._core.list_pod_for_all_namespaces(**kwargs)
            self._adopt(response)
            return response

        watch = _RawWatch()  # type: ignore[no-untyped-call]
        generator = watch.stream(  # type: ignore[no-untyped-call]
            call,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,
            field_selector=self._selector,
            _request_timeout=(_CONNECT_TIMEOUT, self._watch_read_timeout),
        )
        events = 0
        try:
            for event in generator:
                if self._stop.is_set():
                    raise _StoppedError
                kind = event.get("type") if isinstance(event, Mapping) else None
                obj = event.get("raw_object") if isinstance(event, Mapping) else None
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, Mapping):
                    self._apply(kind, obj)
                elif kind != "BOOKMARK":
                    continue
                rv = _resource_version(obj) or rv
                events += 1
        except ApiException as exc:
            if exc.status == _GONE:
                raise _ExpiredError from exc
            raise
        finally:
            generator.close()
            self._release()
        return rv, events

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        info = pod_info(obj)
        if info is None:
            return
        if kind == "DELETED":
            self._store.delete(info.namespace, info.name)
        else:
            self._store.upsert(info)
            if info.stuck:
                self._listener(info)
        self._metrics.recovery_cached_pods.set(len(self._store))
