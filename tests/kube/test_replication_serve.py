"""The real `serve --kubeconfig` process replicating against the local API server.

Skipped until `serve` is wired to the Replicator (create_app takes `replication`).
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from kube_apiserver import held_events
from kube_apiserver_writes import WritableApiServer, WritableCluster
from replication_support import REL, add_source, copy_state, source_hash
from serve_support import Serve, running_serve

from webhook.serve.app import create_app

pytestmark = [
    pytest.mark.writable_cluster,
    pytest.mark.skipif(
        "replication" not in inspect.signature(create_app).parameters,
        reason="serve is not wired to the replication controller yet",
    ),
]


@pytest.fixture
def serve(kubeconfig: Path, apiserver: WritableApiServer, tmp_path: Path) -> Iterator[Serve]:
    with running_serve(
        kubeconfig,
        tmp_path / "serve.log",
        "--release-namespace",
        REL,
        stop_timeout=20,
        must_stop=False,
        env={"POD_NAME": "serve-under-test"},
    ) as server:
        yield server


def test_serve_replicates_and_creates_copies_at_admission(
    cluster: WritableCluster, apiserver: WritableApiServer, serve: Serve
) -> None:
    add_source(cluster, selector="team=a", hosts=("registry.example.com",))
    cluster.create_namespace("a1", {"team": "a"})
    wait_for(
        lambda: "pullsecret_injector_replication_leader 1.0" in serve.metrics(),
        "serve leading",
        timeout=30,
    )
    wait_for(lambda: copy_state(cluster, "a1") == source_hash(cluster), "the controller's copy")
    lease = cluster.lease(REL, "pullsecret-injector")
    assert lease is not None and lease["spec"]["holderIdentity"].startswith("serve-under-test_")

    image = "registry.example.com/app:1"
    with held_events(cluster):  # the namespace and its pod in one apply: no event yet
        cluster.create_namespace("fresh", {"team": "a"})
        cluster.create_namespace("dry", {"team": "a"})
        assert serve.admit("fresh", image) == ["reg"]
        assert copy_state(cluster, "fresh") == source_hash(cluster)  # before the answer
        assert serve.admit("dry", image, dry_run=True) == ["reg"]
        assert copy_state(cluster, "dry") is None  # a dryRun writes nothing

    # released at shutdown: another replica would take over at once
    serve.http.close()
    serve.proc.send_signal(signal.SIGTERM)
    serve.proc.wait(20)
    lease = cluster.lease(REL, "pullsecret-injector")
    assert lease is not None and not lease["spec"].get("holderIdentity")
