"""Fixtures for the live-cluster tests: a local API server over TLS and watchers on it.

Modules marked `writable_cluster` (the replication tests) get the writable cluster instead:
the release namespace and kube-system present, writes recorded, replicas to start on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_apiserver import ApiServer, Cluster, kubeconfig_text
from kube_apiserver_ops import OpsApiServer
from kube_apiserver_pods import PodApiServer, PodCluster
from kube_apiserver_writes import WritableApiServer, WritableCluster
from kube_support import Harness, Tls
from ops_support import Install, install
from recovery_support import make_cluster as make_pod_cluster
from replication_support import Replica, make_cluster

from webhook.cluster.heap import HeapKeeper
from webhook.cluster.pacing import ListPacer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "writable_cluster: the cluster and apiserver fixtures are the writable ones"
    )
    config.addinivalue_line(
        "markers", "pod_cluster: the writable cluster and apiserver with pods (recovery tests)"
    )


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("apiserver-tls"))


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if request.node.get_closest_marker("pod_cluster") is not None:
        return make_pod_cluster()
    if request.node.get_closest_marker("writable_cluster") is not None:
        return make_cluster()
    return Cluster()


@pytest.fixture
def apiserver(cluster: Cluster, tls: Tls) -> Iterator[ApiServer]:
    server_class = WritableApiServer if isinstance(cluster, WritableCluster) else ApiServer
    if isinstance(cluster, PodCluster):
        server_class = PodApiServer
    server = server_class(cluster, ssl_context=tls.server).start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tls: Tls, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text(apiserver, str(tls.ca_file)))
    return path


@pytest.fixture
def make_harness(kubeconfig: Path) -> Iterator[Callable[..., Harness]]:
    """Build (and start) watchers; all are stopped at teardown."""
    made: list[Harness] = []

    def make(
        *,
        start: bool = True,
        heap: HeapKeeper | None = None,
        pacer: ListPacer | None = None,
        **options: float,
    ) -> Harness:
        defaults: dict[str, float] = {
            "watch_timeout_seconds": 30,
            "page_size": 2,
            "backoff_cap_seconds": 0.2,
        }
        harness = Harness(kubeconfig, heap, pacer, **{**defaults, **options})
        made.append(harness)
        if start:
            harness.watcher.start()
        return harness

    yield make
    for harness in made:
        harness.watcher.stop()


@pytest.fixture
def replicas(kubeconfig: Path) -> Iterator[Callable[..., Replica]]:
    """Build (and start) replicas on the writable cluster; all are stopped at teardown."""
    made: list[Replica] = []

    def make(*, start: bool = True, **kw: Any) -> Replica:
        replica = Replica(kubeconfig, **kw)
        made.append(replica)
        return replica.start() if start else replica

    yield make
    for replica in made:
        replica.stop()


@pytest.fixture
def ops(tls: Tls, tmp_path: Path) -> Iterator[tuple[Install, Path]]:
    """The chart installed on the local API server (explain, doctor), and a kubeconfig."""
    server = OpsApiServer(WritableCluster(), ssl_context=tls.server).start()
    inst = install(server, tmp_path)
    kubeconfig = tmp_path / "ops-kubeconfig"
    kubeconfig.write_text(kubeconfig_text(server, str(tls.ca_file)))
    yield inst, kubeconfig
    inst.tls.stop()
    server.stop()
