"""The real `serve --kubeconfig` process recovering stuck pods on the local API server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import wait_for
from kube_apiserver_pods import PODS, PodApiServer, PodCluster
from recovery_support import IMAGE, PASSWORD, REL, add_secret
from replication_support import add_source
from serve_support import running_serve

from webhook.replication.recovery import EVICTED_REASON

pytestmark = pytest.mark.pod_cluster

RS = ("ReplicaSet", "web-7d9f")


def test_serve_evicts_a_stuck_pod_under_its_lease_and_logs_no_credential(
    cluster: PodCluster, apiserver: PodApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pull_fails("team-a", "web-1")
    log = tmp_path / "serve.log"
    with running_serve(
        kubeconfig,
        log,
        "--release-namespace",
        REL,
        "--log-level",
        "debug",
        stop_timeout=20,
        must_stop=False,
        env={"POD_NAME": "serve-under-test"},
    ) as serve:
        wait_for(lambda: apiserver.requests_for(PODS, watch=True), "the pod watch", timeout=30)
        add_secret(cluster, "team-a")
        wait_for(lambda: ("team-a", "web-1", 201) in cluster.evictions, "the eviction", 30)
        wait_for(lambda: cluster.events_for("web-1", EVICTED_REASON), "the Event")
        wait_for(
            lambda: (
                'pullsecret_injector_recovery_actions_total{action="evict",result="ok"} 1.0'
                in serve.metrics()
            ),
            "the metric",
        )
    text = log.read_text()
    assert "stuck pod evicted" in text
    assert PASSWORD not in text


def test_serve_with_recovery_off_never_reads_pods(
    cluster: PodCluster, apiserver: PodApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pull_fails("team-a", "web-1")
    add_secret(cluster, "team-a")
    with running_serve(
        kubeconfig,
        tmp_path / "serve.log",
        "--release-namespace",
        REL,
        "--recovery-mode",
        "off",
        stop_timeout=20,
        must_stop=False,
    ) as serve:
        wait_for(
            lambda: "pullsecret_injector_replication_leader 1.0" in serve.metrics(),
            "serve leading",
            timeout=30,
        )
        wait_for(lambda: serve.status("/readyz") == 200, "ready", timeout=30)
        # the Lease holder's controllers at work: a copy made by replication, then a second
        # in which recovery (were it on) would have evicted the stuck pod long since
        add_source(cluster, selector="team=a")
        wait_for(lambda: cluster.secret("team-a", "reg") is not None, "the copy", timeout=30)
        time.sleep(1.0)
    assert apiserver.requests_for(PODS, watch=False) == []
    assert apiserver.requests_for(PODS, watch=True) == []
    assert cluster.evictions == []
    assert "stuck-pod recovery" not in (tmp_path / "serve.log").read_text()
