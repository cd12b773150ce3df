"""Copies at admission, on every replica: the pod's first pull must find its secret.

When a pod arrives in a namespace whose copy does not exist yet (a namespace and its
workload applied in one ``kubectl apply``), :meth:`AdmissionCopies.ensure_copies` creates
the missing copies before the pod is answered, bounded by ``admission_timeout`` (skipped
on dryRun), and :meth:`AdmissionCopies.pending_copies` lets the decision name copies that
are not in the store yet (a dryRun, a creation still in flight): the kubelet retries the
pull and finds the copy once it lands.

``pending_copies`` returns the very mapping it was given when nothing is missing, so the
caller can tell "nothing to create" without a thread hop: :meth:`missing_nothing` says so
in words.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from types import MappingProxyType

from webhook.cluster.apiclient import describe, namespace_path
from webhook.cluster.store import Change, ChangeKind
from webhook.core.model import RegistrySecret
from webhook.core.planner import (
    SOURCE_ANNOTATION,
    Desired,
    Source,
    desired_in,
    find_sources,
)
from webhook.replication.copies import Parts, bounded

log = logging.getLogger(__name__)

# Labels read live for a namespace the store has not seen yet serve pending_copies until the
# watch delivers the namespace.
_RECENT_LABELS_SECONDS = 30.0
_DESIRED_CACHE_SIZE = 10_000
_ADMISSION_WORKERS = 4


class AdmissionCopies:
    """The admission side of replication: pending copies, and copies created before answering."""

    def __init__(self, parts: Parts, *, timeout: float) -> None:
        self._parts = parts
        self._api = parts.api
        self._store = parts.store
        self._metrics = parts.metrics
        self._config = parts.config
        self._timeout = timeout
        self._lock = threading.Lock()  # the caches below; never held during I/O
        self._sources_gen = 0
        self._sources_cache: tuple[int, list[Source]] | None = None
        self._desired_cache: dict[str, tuple[int, Mapping[str, str], Desired]] = {}
        self._recent_labels: dict[str, tuple[float, Mapping[str, str]]] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=_ADMISSION_WORKERS, thread_name_prefix="copy-admit"
        )
        self._admitting: dict[str, Future[list[str]]] = {}

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def on_change(self, change: Change) -> None:
        """Store listener: sources may have changed, or a namespace's labels."""
        relisted = change.kind in (ChangeKind.SECRETS_RELISTED, ChangeKind.NAMESPACES_RELISTED)
        with self._lock:
            if change.kind is ChangeKind.NAMESPACE:
                self._desired_cache.pop(change.namespace, None)
            elif relisted or change.namespace in self._config.source_namespaces:
                self._sources_gen += 1

    # ---- what the namespace should hold ------------------------------------------------------
    def _sources(self) -> list[Source]:
        with self._lock:
            gen = self._sources_gen
            cached = self._sources_cache
        if cached is not None and cached[0] == gen:
            return cached[1]
        secrets = [
            s for ns in self._config.source_namespaces for s in self._store.secrets_in(ns).values()
        ]
        sources = find_sources(secrets, self._config, {})
        with self._lock:
            self._sources_cache = (gen, sources)
        return sources

    def _labels(self, namespace: str) -> Mapping[str, str] | None:
        labels = self._store.namespace_labels(namespace)
        if labels is not None:
            return labels
        with self._lock:
            recent = self._recent_labels.get(namespace)
        if recent is not None and recent[0] > time.monotonic():
            return recent[1]
        return None

    def _desired(self, namespace: str, labels: Mapping[str, str]) -> Desired:
        sources = self._sources()
        with self._lock:
            gen = self._sources_gen
            cached = self._desired_cache.get(namespace)
        if cached is not None and cached[0] == gen and cached[1] is labels:
            return cached[2]
        desired = desired_in(namespace, labels, sources, self._config)
        with self._lock:
            if len(self._desired_cache) > _DESIRED_CACHE_SIZE:
                self._desired_cache.clear()
            self._desired_cache[namespace] = (gen, labels, desired)
        return desired

    def _missing(self, namespace: str, labels: Mapping[str, str]) -> list[Source]:
        desired = self._desired(namespace, labels)
        if not desired.copies:
            return []
        existing = self._parts.expectations.overlay(namespace, self._store.secrets_in(namespace))
        clashes = self._parts.clashes.names_in(namespace)
        return [
            source
            for name, source in desired.copies.items()
            if name not in existing and name not in clashes and not source.held
        ]

    # ---- the decision's view ---------------------------------------------------------------
    def pending_copies(
        self, namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Mapping[str, RegistrySecret]:
        """`secrets` plus the copies `namespace` should hold but the store has not seen.

        A secret of the same name in `secrets` always wins. Returns `secrets` itself when
        nothing is missing.
        """
        labels = self._labels(namespace)
        if labels is None:
            return secrets
        desired = self._desired(namespace, labels)
        if not desired.copies:
            return secrets
        missing = {
            name: source
            for name, source in desired.copies.items()
            if name not in secrets and not source.held
        }
        if not missing:
            return secrets
        clashes = self._parts.clashes.names_in(namespace)
        merged = dict(secrets)
        for name, source in missing.items():
            if name in clashes:
                continue
            merged[name] = RegistrySecret(
                namespace=namespace,
                name=name,
                type=source.type,
                keys=source.keys,
                error=source.parse_error,
                labels=source.labels,
                annotations=MappingProxyType({SOURCE_ANNOTATION: str(source.ref)}),
            )
        return MappingProxyType(merged)

    def missing_nothing(self, namespace: str) -> bool:
        """True when the store knows `namespace` and it holds every copy it should."""
        if self._store.namespace_labels(namespace) is None:
            return False
        secrets = self._store.secrets_in(namespace)
        return self.pending_copies(namespace, secrets) is secrets

    # ---- creating what is missing ------------------------------------------------------------
    def ensure_copies(self, namespace: str, dry_run: bool) -> list[str]:
        """Create the copies `namespace` should hold and does not, before a pod is admitted.

        Returns the names of the copies that were missing (created, or that would be on a
        dryRun, which writes nothing). Bounded by the admission timeout; on timeout or
        error the names are returned all the same (the controller creates them shortly)
        and the failure is logged and counted. Cheap when nothing is missing: no API call.
        """
        deadline = time.monotonic() + self._timeout
        labels = self._labels(namespace)
        if labels is None:
            labels = self._read_namespace_labels(namespace)
            if labels is None:
                return []
        missing = self._missing(namespace, labels)
        if not missing:
            return []
        names = sorted(s.ref.name for s in missing)
        if dry_run:
            self._metrics.replication_admission.labels("dry_run").inc(len(names))
            return names
        with self._lock:
            future = self._admitting.get(namespace)
            if future is None:
                try:
                    future = self._pool.submit(self._create, namespace, missing, deadline)
                except RuntimeError:  # stopped
                    return names
                self._admitting[namespace] = future
                future.add_done_callback(lambda f: self._admitted(namespace, f))
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            self._metrics.replication_admission.labels("timeout").inc(len(names))
            log.warning(
                "copies not created in time at admission (the controller will)",
                extra={"namespace": namespace, "secrets": names},
            )
        except Exception as exc:
            log.warning(
                "copies not created at admission (the controller will)",
                extra={"namespace": namespace, "error": describe(exc)},
            )
        return names

    def _admitted(self, namespace: str, future: Future[list[str]]) -> None:
        with self._lock:
            if self._admitting.get(namespace) is future:
                del self._admitting[namespace]

    def _read_namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """One bounded read of a namespace the store has not seen (created a moment ago)."""
        timeout = self._timeout
        try:
            obj = self._api.request("GET", namespace_path(namespace), timeout=(timeout, timeout))
        except Exception as exc:
            log.info(
                "namespace read at admission failed",
                extra={"namespace": namespace, "error": describe(exc)},
            )
            return None
        raw = (obj.get("metadata") or {}).get("labels") or {}
        labels: Mapping[str, str] = MappingProxyType(
            {str(k): v for k, v in raw.items() if isinstance(v, str)}
        )
        with self._lock:
            now = time.monotonic()
            self._recent_labels = {k: v for k, v in self._recent_labels.items() if v[0] > now}
            self._recent_labels[namespace] = (now + _RECENT_LABELS_SECONDS, labels)
        return labels

    def _create(self, namespace: str, missing: list[Source], deadline: float) -> list[str]:
        created: list[str] = []

        def left() -> tuple[float, float]:
            seconds = max(0.05, deadline - time.monotonic())
            return (seconds, seconds)

        request = bounded(self._api, left)
        for source in missing:
            if deadline - time.monotonic() <= 0:
                self._metrics.replication_admission.labels("timeout").inc()
                continue
            name = source.ref.name
            try:
                obj = self._parts.reader.read(source.ref, left())
                if obj is None:
                    continue
                result = self._parts.writer.create(request, namespace, name, obj, source.ref)
                del obj
                if result == "ok":
                    created.append(name)
                    self._metrics.replication_admission.labels("created").inc()
                    log.info(
                        "copy created at admission",
                        extra={"namespace": namespace, "secret": name, "source": str(source.ref)},
                    )
                else:  # exists, clash; gone (namespace terminating) counts as an error
                    label = "error" if result == "gone" else result
                    self._metrics.replication_admission.labels(label).inc()
            except Exception as exc:
                self._metrics.replication_admission.labels("error").inc()
                log.warning(
                    "copy not created at admission",
                    extra={"namespace": namespace, "secret": name, "error": describe(exc)},
                )
        return created
