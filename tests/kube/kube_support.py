"""Helpers of the live-cluster tests: TLS for the local API server, a watcher harness,
fake registry credentials (polling with a deadline is helpers.wait_for)."""

from __future__ import annotations

import ssl
from pathlib import Path

from webhook.cluster.apiclient import load_api_client
from webhook.cluster.heap import HeapKeeper
from webhook.cluster.pacing import ListPacer
from webhook.cluster.reflector import WatchOptions
from webhook.cluster.store import Store
from webhook.cluster.watchers import ClusterWatcher
from webhook.metrics import Metrics
from webhook.serve import certs


def auths(*hosts: str, password: str = "pw") -> dict[str, dict[str, str]]:
    """A docker config `auths` map with fake credentials for each host."""
    import base64  # noqa: PLC0415

    token = base64.b64encode(f"user:{password}".encode()).decode()
    return {host: {"auth": token} for host in hosts}


class Tls:
    def __init__(self, directory: Path) -> None:
        paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), directory)
        self.ca_file = paths["ca.crt"]
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        self.client = ssl.create_default_context(cafile=str(self.ca_file))


class Harness:
    """A ClusterWatcher on the local API server, with its store and metrics."""

    def __init__(
        self,
        kubeconfig: Path,
        heap: HeapKeeper | None = None,
        pacer: ListPacer | None = None,
        **options: float,
    ) -> None:
        self.store = Store()
        self.metrics = Metrics(store=self.store)
        self.watcher = ClusterWatcher(
            load_api_client(kubeconfig, None),
            self.store,
            self.metrics,
            WatchOptions(**options),
            heap=heap,
            pacer=pacer,
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
