"""Harness for the stuck-pod recovery tests: a controller (watcher + Recovery, optionally under
a Replicator's Lease) on the local API server with pods (kube_apiserver_pods)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kube_apiserver_pods import PodCluster
from kube_support import auths

from webhook.cluster.apiclient import load_api_client
from webhook.cluster.reflector import WatchOptions
from webhook.cluster.store import Store
from webhook.cluster.watchers import ClusterWatcher
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.replication.recovery import Leadership, Recovery, RecoveryOptions

REL = "psi-system"
REG = "registry.example.com"
IMAGE = f"{REG}/team/app:1"
PASSWORD = "s3cret-never-logged"  # a fake credential the tests look for
FAST = RecoveryOptions(
    leader_election=False,
    evictions_per_minute=6000,
    resync_seconds=3600,  # tests ask for full passes themselves
    retry_seconds=0.2,
    backoff_base_seconds=60,
    backoff_cap_seconds=600,
    watch_timeout_seconds=30,
    page_size=50,
    watch_backoff_cap_seconds=0.2,
)
ACTIONS = "pullsecret_injector_recovery_actions_total"


def make_cluster() -> PodCluster:
    cluster = PodCluster()
    cluster.create_namespace(REL)
    cluster.create_namespace("kube-system")
    return cluster


def add_secret(cluster: PodCluster, namespace: str, name: str = "reg", host: str = REG) -> None:
    cluster.create_secret(namespace, name, auths=auths(host, password=PASSWORD))


class Controller:
    """One replica's recovery: a store fed by a ClusterWatcher, and the Recovery controller."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        options: RecoveryOptions = FAST,
        leadership: Leadership | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        **settings: Any,
    ) -> None:
        self.store = store or Store()
        self.metrics = metrics or Metrics()
        self.api = load_api_client(kubeconfig, None)
        self.watcher: ClusterWatcher | None = None
        if store is None:
            self.watcher = ClusterWatcher(
                self.api,
                self.store,
                self.metrics,
                WatchOptions(watch_timeout_seconds=30, page_size=100, backoff_cap_seconds=0.2),
            )
        self.settings = Settings(dev=True, release_namespace=REL, **settings)
        self.recovery = Recovery(
            self.api, self.store, self.metrics, self.settings, options, leadership=leadership
        )
        self.started = False

    def start(self) -> Controller:
        if self.watcher is not None:
            self.watcher.start()
        self.recovery.start()
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            self.recovery.stop()
            if self.watcher is not None:
                self.watcher.stop()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def ready(self) -> bool:
        pods = self.recovery.pods
        return (
            self.store.is_synced("secrets", "namespaces")
            and pods is not None
            and pods.synced
            and self.recovery.passes > 0
        )

    def settle(self) -> int:
        """Ask for a full pass and return once one more pass than now has completed."""
        before = self.recovery.passes
        self.recovery.request_full_pass()
        return before


def options(**changes: Any) -> RecoveryOptions:
    return dataclasses.replace(FAST, **changes)
