"""Prometheus metrics, one registry per process (no globals).

Counters and histograms are counted where things happen. What describes the cluster state
(cache sizes, staleness) is read from the store when /metrics is scraped
(:class:`StoreCollector`), so no writer has to keep a gauge in step with it.

A leaf module: it imports nothing of ours, so every layer that counts may import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from itertools import product
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Every value a labelled counter can take, created at 0 when the process starts: a series
# that first appears at 1 hides that first event from rate() and increase() (Prometheus,
# "Instrumentation": avoid missing metrics), and the FailingOpen alert is a rate.
OUTCOMES = ("patched", "unchanged", "skipped", "bad_request", "error")
HTTP_REJECTIONS = (
    "header_too_large", "request_line_too_large", "header_timeout", "body_timeout",
    "too_many_connections", "shutdown", "malformed", "upgrade", "body_budget",
)  # fmt: skip
COPY_ACTIONS = ("create", "update", "recreate", "delete")
COPY_RESULTS = ("ok", "conflict", "clash", "gone", "error")
ADMISSION_COPY_RESULTS = ("created", "exists", "dry_run", "clash", "error", "timeout")
RECOVERY_RESULTS = {"evict": ("ok", "pdb_blocked", "gone", "error"), "event": ("ok", "error")}


def _at_zero(counter: Counter, *label_values: tuple[str, ...]) -> Counter:
    for values in label_values:
        counter.labels(*values)
    return counter


def _version() -> str:
    try:
        return version("pullsecret-injector")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


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
        if registry is None:  # the process's own: memory, CPU, start time, GC, Python
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
        Gauge(
            "pullsecret_injector_build_info",
            "Always 1; the running version as a label.",
            ["version"],
            registry=r,
        ).labels(_version()).set(1)
        self.requests = _at_zero(
            Counter(
                "pullsecret_injector_admission_requests",
                "AdmissionReview requests by outcome (patched, unchanged, skipped, "
                "bad_request, error): every request POST /mutate answers, once (a client "
                "gone before its body: client_disconnects_total).",
                ["outcome"],
                registry=r,
            ),
            *((o,) for o in OUTCOMES),
        )
        self.latency = Histogram(
            "pullsecret_injector_admission_duration_seconds",
            "Time to answer one request to POST /mutate, from its first byte handled to the "
            "answer ready (errors included).",
            # up to and past the API server's timeoutSeconds (3 by default, at most 30)
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
                3.0,
                5.0,
                10.0,
                30.0,
            ),
            registry=r,
        )
        self.injected = Counter(
            "pullsecret_injector_injected_secrets",
            "imagePullSecrets entries added to pods.",
            registry=r,
        )
        self.warnings = Counter(
            "pullsecret_injector_admission_warnings",
            "Warnings the decisions gave API clients (before the response's cap of ten).",
            registry=r,
        )
        self.watch_restarts = Counter(
            "pullsecret_injector_watch_restarts",
            "Watch restarts by resource and reason (expired, closed, error, timeout).",
            ["resource", "reason"],
            registry=r,
        )
        self.live_reads = _at_zero(
            Counter(
                "pullsecret_injector_live_reads",
                "Live reads of a namespace the store had never seen, by result (ok, error, "
                "timeout).",
                ["result"],
                registry=r,
            ),
            ("ok",), ("error",), ("timeout",),
        )  # fmt: skip
        self.cert_reloads = _at_zero(
            Counter(
                "pullsecret_injector_certificate_reloads",
                "Serving certificate reloads from disk, by result (ok, error).",
                ["result"],
                registry=r,
            ),
            ("ok",), ("error",),
        )  # fmt: skip
        self.cert_expiry = Gauge(
            "pullsecret_injector_serving_certificate_expiry_timestamp_seconds",
            "Not-after of the serving certificate in use, as Unix time (set at start and on "
            "every reload).",
            registry=r,
        )
        # ---- project and cluster registries (webhook/replication/) ----
        self.replication_actions = _at_zero(
            Counter(
                "pullsecret_injector_replication_actions",
                "Copy writes by action (create, update, recreate, delete) and result (ok, "
                "conflict, clash, gone, error).",
                ["action", "result"],
                registry=r,
            ),
            *product(COPY_ACTIONS, COPY_RESULTS),
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
        self.replication_admission = _at_zero(
            Counter(
                "pullsecret_injector_replication_admission_copies",
                "Copies missing at admission, by result (created, exists, dry_run, clash, "
                "error, timeout).",
                ["result"],
                registry=r,
            ),
            *((v,) for v in ADMISSION_COPY_RESULTS),
        )
        # ---- stuck-pod recovery (replication/recovery.py) ----
        self.recovery_actions = _at_zero(
            Counter(
                "pullsecret_injector_recovery_actions",
                "Stuck-pod recovery actions by action (evict, event) and result (ok, "
                "pdb_blocked, gone, error).",
                ["action", "result"],
                registry=r,
            ),
            *((a, v) for a, values in RECOVERY_RESULTS.items() for v in values),
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
        self.http_rejections = _at_zero(
            Counter(
                "pullsecret_injector_http_rejections",
                "Connections or requests refused by an HTTP limit, by reason "
                f"({', '.join(HTTP_REJECTIONS)}).",
                ["reason"],
                registry=r,
            ),
            *((v,) for v in HTTP_REJECTIONS),
        )
