"""Harness for the replication tests: replicas (watcher + replicator) on the writable local
API server, the cluster they start from, source secrets and the state of their copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kube_apiserver import DOCKERCONFIGJSON
from kube_apiserver_writes import LEASES, WritableCluster
from kube_support import auths

from webhook.cluster.apiclient import load_api_client
from webhook.cluster.leader import LeaseTimings, micro_time
from webhook.cluster.reflector import WatchOptions
from webhook.cluster.store import Store
from webhook.cluster.watchers import ClusterWatcher
from webhook.config import Settings
from webhook.core.planner import (
    HASH_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SELECTOR_ANNOTATION,
    SOURCE_ANNOTATION,
    data_hash,
)
from webhook.metrics import Metrics
from webhook.replication.controller import ReplicationOptions, Replicator

REL = "psi-system"  # the release namespace: default source namespace, holds the Lease
FAST = ReplicationOptions(
    leader_election=False,
    qps=2000,
    burst=2000,
    resync_seconds=3600,  # tests trigger full reconciles themselves
    retry_base_seconds=0.05,
    retry_cap_seconds=0.5,
    admission_timeout=2.0,
)
FAST_LEASE = LeaseTimings(lease_duration=2.0, renew_deadline=1.2, retry_period=0.2)


class Replica:
    """One webhook replica: store, watcher and replicator on the local API server."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        options: ReplicationOptions = FAST,
        source_namespaces: tuple[str, ...] = (),
        identity: str | None = None,
    ) -> None:
        self.store = Store()
        self.metrics = Metrics(store=self.store)
        self.api = load_api_client(kubeconfig, None)
        self.watcher = ClusterWatcher(
            self.api,
            self.store,
            self.metrics,
            WatchOptions(watch_timeout_seconds=30, page_size=100, backoff_cap_seconds=0.2),
        )
        settings = Settings(dev=True, release_namespace=REL, source_namespaces=source_namespaces)
        self.settings = settings
        self.replicator = Replicator(
            self.api, self.store, self.metrics, settings, options, identity=identity
        )
        self.started = False

    def start(self) -> Replica:
        self.watcher.start()
        self.replicator.start()
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            self.replicator.stop()
            self.watcher.stop()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def make_cluster() -> WritableCluster:
    cluster = WritableCluster()
    cluster.create_namespace(REL)
    cluster.create_namespace("kube-system")
    return cluster


# ---- objects -------------------------------------------------------------------------------


def add_source(
    cluster: WritableCluster,
    name: str = "reg",
    selector: str = "team=a",
    *,
    namespace: str = REL,
    hosts: tuple[str, ...] = ("registry.example.com",),
    password: str = "pw",
    labels: dict[str, str] | None = None,
    secret_type: str = DOCKERCONFIGJSON,
) -> dict[str, Any]:
    return cluster.create_secret(
        namespace,
        name,
        auths=auths(*hosts, password=password),
        annotations={SELECTOR_ANNOTATION: selector},
        labels=labels,
        secret_type=secret_type,
    )


def copy_state(cluster: WritableCluster, namespace: str, name: str = "reg") -> str | None:
    """'ours:<hash>' for our copy, 'user' for someone else's secret, None when absent."""
    obj = cluster.secret(namespace, name)
    if obj is None:
        return None
    meta = obj["metadata"]
    ours = (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and (
        meta.get("annotations") or {}
    ).get(SOURCE_ANNOTATION)
    if not ours:
        return "user"
    return "ours:" + (meta.get("annotations") or {}).get(HASH_ANNOTATION, "")


def source_hash(cluster: WritableCluster, name: str = "reg", namespace: str = REL) -> str:
    obj = cluster.secret(namespace, name)
    assert obj is not None
    return "ours:" + data_hash(obj["type"], obj.get("data"))


def copies_of(cluster: WritableCluster, name: str = "reg") -> dict[str, str | None]:
    """namespace -> copy_state for every namespace holding a secret of that name."""
    out: dict[str, str | None] = {}
    for obj in cluster.objects("secrets"):
        if obj["metadata"]["name"] == name and obj["metadata"]["namespace"] != REL:
            out[obj["metadata"]["namespace"]] = copy_state(
                cluster, obj["metadata"]["namespace"], name
            )
    return out


def lease_held_elsewhere(cluster: WritableCluster, holder: str = "the-leader-elsewhere") -> None:
    """The controller Lease, held for an hour by a replica that is not in the test."""
    now = micro_time()
    spec = {
        "holderIdentity": holder,
        "leaseDurationSeconds": 3600,
        "acquireTime": now,
        "renewTime": now,
    }
    body = {"metadata": {"name": "pullsecret-injector"}, "spec": spec}
    cluster.create_object(LEASES, REL, body, manager="test")
