"""Fixtures for the live-cluster tests: a local API server over TLS and watchers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kube_apiserver import ApiServer, Cluster, kubeconfig_text
from kube_support import Harness, Tls


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("apiserver-tls"))


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def apiserver(cluster: Cluster, tls: Tls) -> Iterator[ApiServer]:
    server = ApiServer(cluster, ssl_context=tls.server).start()
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

    def make(*, start: bool = True, **options: float) -> Harness:
        defaults: dict[str, float] = {
            "watch_timeout_seconds": 30,
            "page_size": 2,
            "backoff_cap_seconds": 0.2,
        }
        harness = Harness(kubeconfig, **{**defaults, **options})
        made.append(harness)
        if start:
            harness.watcher.start()
        return harness

    yield make
    for harness in made:
        harness.watcher.stop()
