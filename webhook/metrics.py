"""Prometheus metrics, one registry per process (no globals).

Counters and histograms are counted where things happen. What describes the cluster state
(cache sizes, staleness) is read from the store when /metrics is scraped
(:class:`StoreCollector`), so no writer has to keep a gauge in step with it.

A leaf module: it imports nothing of ours, so every layer that counts may import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class StoreView(Protocol):
    """What the collector reads of the store (webhook.cluster.store.Store)."""

    def secret_count(self) -> int: ...

    def namespaces(self) -> Mapping[str, Mapping[str, str]]: ...

    def ages(self) -> Mapping[str, float]: ...


class StoreCollector(Collector):
    """Cache sizes and staleness, read from the store at scrape time."""

    def __init__(self, store: StoreView) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "pullsecret_injector_cache_secrets",
            "Registry secrets held in the in-memory store.",
            value=self._store.secret_count(),
        )
        yield GaugeMetricFamily(
            "pullsecret_injector_cache_namespaces",
            "Namespaces held in the in-memory store.",
            value=len(self._store.namespaces()),
        )
        age = GaugeMetricFamily(
            "pullsecret_injector_last_sync_age_seconds",
            "Seconds since the store was last proven current, by resource: a watch event or "
            "bookmark, a (re-)list, or a watch that ran its whole timeout. A reconnect is no "
            "proof (a 410 may follow): the age keeps growing until the re-list lands. Without "
            "bookmarks, an idle cluster's age grows up to the watch timeout.",
            labels=["resource"],
        )
        for resource, seconds in sorted(self._store.ages().items()):
            age.add_metric([resource], seconds)
        yield age


class Metrics:
    """Every metric the webhook exports. Labels never carry secret data.

    With a `store`, the cache gauges are read from it at scrape time.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        store: StoreView | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if store is not None:
            r.register(StoreCollector(store))
        self.requests = Counter(
            "pullsecret_injector_admission_requests",
            "AdmissionReview requests by outcome "
            "(patched, unchanged, skipped, bad_request, error).",
            ["outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "pullsecret_injector_admission_duration_seconds",
            "Time to decide one AdmissionReview, from body read to response.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.injected = Counter(
            "pullsecret_injector_injected_secrets",
            "imagePullSecrets entries added to pods.",
            registry=r,
        )
        self.warnings = Counter(
            "pullsecret_injector_admission_warnings",
            "Warnings returned to API clients, by kind.",
            ["kind"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "pullsecret_injector_watch_restarts",
            "Watch restarts by resource and reason (expired, closed, error, timeout).",
            ["resource", "reason"],
            registry=r,
        )
        self.live_reads = Counter(
            "pullsecret_injector_live_reads",
            "Live reads of a namespace the store had never seen, by result (ok, error, timeout).",
            ["result"],
            registry=r,
        )
        self.cert_reloads = Counter(
            "pullsecret_injector_certificate_reloads",
            "Serving certificate reloads from disk, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.cert_expiry = Gauge(
            "pullsecret_injector_serving_certificate_expiry_timestamp_seconds",
            "Not-after of the serving certificate in use, as Unix time (set at start and on "
            "every reload).",
            registry=r,
        )
        # ---- project and cluster registries (webhook/replication/) ----
        self.replication_actions = Counter(
            "pullsecret_injector_replication_actions",
            "Copy writes by action (create, update, recreate, delete) and result (ok, "
            "conflict, clash, gone, error).",
            ["action", "result"],
            registry=r,
        )
        self.replication_problems = Gauge(
            "pullsecret_injector_replication_problems",
            "Current problems by kind (invalid_selector, unusable_source, clash, "
            "name_conflict), as of the last full reconcile.",
            ["kind"],
            registry=r,
        )
        self.replication_sources = Gauge(
            "pullsecret_injector_replication_sources",
            "Source registries (annotated secrets in the source namespaces).",
            registry=r,
        )
        self.replication_copies = Gauge(
            "pullsecret_injector_replication_desired_copies",
            "Copies the sources should have, as of the last full reconcile.",
            registry=r,
        )
        self.replication_reconcile = Histogram(
            "pullsecret_injector_replication_reconcile_duration_seconds",
            "One reconcile pass (plan and writes), by scope (full, partial).",
            ["scope"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.replication_leader = Gauge(
            "pullsecret_injector_replication_leader",
            "1 while this replica holds the Lease and runs the replication controller.",
            registry=r,
        )
        self.replication_admission = Counter(
            "pullsecret_injector_replication_admission_copies",
            "Copies missing at admission, by result (created, exists, dry_run, clash, "
            "error, timeout).",
            ["result"],
            registry=r,
        )
        # ---- stuck-pod recovery (replication/recovery.py) ----
        self.recovery_actions = Counter(
            "pullsecret_injector_recovery_actions",
            "Stuck-pod recovery actions by action (evict, event) and result (ok, "
            "pdb_blocked, gone, error).",
            ["action", "result"],
            registry=r,
        )
        self.recovery_stuck_pods = Gauge(
            "pullsecret_injector_recovery_stuck_pods",
            "Pods seen waiting in ErrImagePull or ImagePullBackOff, as of the last pass.",
            registry=r,
        )
        self.recovery_skipped = Gauge(
            "pullsecret_injector_recovery_skipped_pods",
            "Stuck pods left alone in the last full pass, by reason.",
            ["reason"],
            registry=r,
        )
        self.recovery_cached_pods = Gauge(
            "pullsecret_injector_recovery_cached_pods",
            "Pending pods held (trimmed) by the recovery pod watch.",
            registry=r,
        )
        # ---- hardening (issue 11): connections and requests the HTTP limits ended ----
        self.client_disconnects = Counter(
            "pullsecret_injector_client_disconnects",
            "Admission requests whose client disconnected before sending the whole body.",
            registry=r,
        )
        self.http_rejections = Counter(
            "pullsecret_injector_http_rejections",
            "Connections or requests refused by an HTTP limit, by reason (header_too_large, "
            "request_line_too_large, header_timeout, body_timeout, too_many_connections, shutdown, "
            "malformed).",
            ["reason"],
            registry=r,
        )
