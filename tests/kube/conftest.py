"""Fixtures for the live-cluster tests: a local API server over TLS and watchers on it."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kube_apiserver import ApiServer, Cluster, kubeconfig_text

from webhook import certs
from webhook.kube import ClusterWatcher, load_api_client
from webhook.metrics import Metrics
from webhook.store import Store


class Tls:
    def __init__(self, directory: Path) -> None:
        paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), directory)
        self.ca_file = paths["ca.crt"]
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        self.client = ssl.create_default_context(cafile=str(self.ca_file))


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


class Harness:
    """A ClusterWatcher on the local API server, with its store and metrics."""

    def __init__(self, kubeconfig: Path, **options: float) -> None:
        self.store = Store()
        self.metrics = Metrics()
        self.watcher = ClusterWatcher(
            load_api_client(kubeconfig, None), self.store, self.metrics, **options
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def restarts(self, resource: str, reason: str) -> float:
        return self.metric(
            "pullsecret_injector_watch_restarts_total", resource=resource, reason=reason
        )

    def secret(self, namespace: str, name: str):  # type: ignore[no-untyped-def]
        return self.store.secrets_in(namespace).get(name)

    def registries(self, namespace: str, name: str) -> tuple[str, ...] | None:
        secret = self.secret(namespace, name)
        return None if secret is None else tuple(k.key for k in secret.keys)


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
