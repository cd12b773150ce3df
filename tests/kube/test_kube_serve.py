"""The real `pullsecret-injector serve --kubeconfig` process against the local API server.

Readiness waits for the first full sync; admissions follow the cluster's changes through
the watches (no API call on the admission path) and a namespace the watches have not
delivered yet is served by one live read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from kube_apiserver import ApiServer, Cluster, Request, held_events
from kube_support import auths
from serve_support import Serve, running_serve


@pytest.fixture
def serve(kubeconfig: Path, apiserver: ApiServer, tmp_path: Path) -> Iterator[Serve]:
    with running_serve(
        kubeconfig,
        tmp_path / "serve.log",
        "--live-read-timeout",
        "2",
        stop_timeout=15,
        must_stop=True,
    ) as server:
        yield server


@pytest.fixture
def gate(apiserver: ApiServer) -> Iterator[threading.Event]:
    """Secret lists wait until the test opens the gate: the first sync is in flight."""
    opened = threading.Event()

    def wait(req: Request) -> None:
        if req.path == "/api/v1/secrets":
            opened.wait(30)

    apiserver.before_list = wait
    yield opened
    opened.set()


def test_serve_follows_the_cluster(
    gate: threading.Event, serve: Serve, apiserver: ApiServer, cluster: Cluster
) -> None:
    cluster.create_namespace("wire-a")
    cluster.create_secret("wire-a", "regcred", auths=auths("registry.example.com"))
    cluster.create_secret("wire-a", "quay", auths=auths("quay.io"))

    wait_for(lambda: serve.status("/healthz") == 200, "serve to listen", timeout=30)
    wait_for(lambda: apiserver.requests_for("secrets", watch=False), "the first secret list")
    assert serve.status("/readyz") == 503  # the first sync is not complete
    gate.set()
    wait_for(lambda: serve.status("/readyz") == 200, "readiness after the first sync", timeout=30)

    image = "registry.example.com/team/app:1.0"
    assert sorted(serve.admit("wire-a", image, "quay.io/org/tool")) == ["quay", "regcred"]

    cluster.create_secret("wire-a", "extra", auths=auths("ghcr.io"))
    wait_for(lambda: serve.admit("wire-a", "ghcr.io/org/x") == ["extra"], "the added secret")
    cluster.update_secret("wire-a", "regcred", auths=auths("other.example.com"))
    wait_for(lambda: serve.admit("wire-a", image) == [], "the updated secret to stop matching")
    cluster.delete_secret("wire-a", "extra")
    wait_for(lambda: serve.admit("wire-a", "ghcr.io/org/x") == [], "the deleted secret")

    # 410 Gone with a change the watches never delivered: the relist brings it.
    with held_events(cluster):
        cluster.update_secret("wire-a", "regcred", auths=auths("registry.example.com"))
        apiserver.expire_watches()
    wait_for(lambda: serve.admit("wire-a", image) == ["regcred"], "the change, after a relist")
    # Every stream has listed again and watches (a later relist would see "fresh" below).
    wait_for(lambda: apiserver.open_watches() == 3, "all three watches to be back")

    # A namespace applied together with its workload: its events are not here yet.
    with held_events(cluster):
        cluster.create_namespace("fresh")
        cluster.create_secret("fresh", "pull", auths=auths("registry.example.com"))
        assert serve.admit("fresh", image) == ["pull"]  # first try: one live read

    metrics = serve.ops("/metrics")
    assert metrics is not None
    assert 'pullsecret_injector_live_reads_total{result="ok"} 1.0' in metrics.text
    assert 'pullsecret_injector_watch_restarts_total{reason="expired",resource="secrets"}' in (
        metrics.text
    )
    assert serve.status("/readyz") == 200
