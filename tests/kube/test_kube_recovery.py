"""Stuck-pod recovery against the local API server, through the real client, watches and writes.

Pods reach ``ImagePullBackOff`` the way a kubelet reports it: a write to the
``pods/status`` subresource (over the wire, with the official client). Each test starts a
controller (ClusterWatcher + Recovery) and asserts on what the API server saw: evictions,
Events, and the pods left standing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import REVIEWS, wait_for
from kube_apiserver_pods import PODS, PodApiServer, PodCluster
from kube_apiserver_writes import LEASES, Write
from kubernetes import client as k8s_client
from recovery_support import (
    ACTIONS,
    IMAGE,
    PASSWORD,
    REG,
    REL,
    Controller,
    add_secret,
    options,
)
from replication_support import FAST, FAST_LEASE, add_source, lease_held_elsewhere

from webhook.core.recovery import Mode
from webhook.replication.recovery import EVICTED_REASON, MISSING_REASON
from webhook.serve.app import create_app

pytestmark = pytest.mark.pod_cluster

RS = ("ReplicaSet", "web-7d9f")


@pytest.fixture
def controllers(kubeconfig: Path) -> Iterator[Callable[..., Controller]]:
    made: list[Controller] = []

    def make(*, start: bool = True, **kw: Any) -> Controller:
        controller = Controller(kubeconfig, **kw)
        made.append(controller)
        if start:
            controller.start()
            wait_for(controller.ready, "the controller's first pass on a synced picture")
        return controller

    yield make
    for controller in made:
        controller.stop()


def stuck(
    controller: Controller,
    cluster: PodCluster,
    ns: str,
    name: str,
    reason: str = "ImagePullBackOff",
    *,
    ready: bool = False,
) -> None:
    """The kubelet reports the pull failure: PATCH pods/status over the wire."""
    status = cluster.waiting_status(ns, name, reason, ready)
    k8s_client.CoreV1Api(controller.api).patch_namespaced_pod_status(name, ns, {"status": status})


def evicted(cluster: PodCluster, ns: str, name: str) -> bool:
    return (ns, name, 201) in cluster.evictions


def quiet(controller: Controller, seconds: float = 0.3) -> None:
    """Let the controller finish a full pass and a little more (to see it did nothing)."""
    before = controller.settle()
    wait_for(lambda: controller.recovery.passes > before, "a full pass")
    time.sleep(seconds)


# ---- the main path -------------------------------------------------------------------------


def test_an_owned_stuck_pod_is_evicted_once_a_secret_serves_its_image(
    cluster: PodCluster, controllers: Callable[..., Controller], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    c = controllers()
    stuck(c, cluster, "team-a", "web-1")
    wait_for(lambda: c.metric("pullsecret_injector_recovery_stuck_pods") == 1, "the stuck pod")
    quiet(c)
    assert cluster.evictions == []  # no secret serves it yet

    add_secret(cluster, "team-a", "reg")
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction")
    assert cluster.pod("team-a", "web-1") is None
    (event,) = wait_for(lambda: cluster.events_for("web-1", EVICTED_REASON), "the Event")
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["involvedObject"]["namespace"] == "team-a"
    assert "reg" in event["message"] and IMAGE in event["message"]
    wait_for(lambda: c.metric(ACTIONS, action="evict", result="ok") == 1, "the count")
    text = caplog.text + repr([r.__dict__ for r in caplog.records]) + repr(cluster.posted_events)
    assert PASSWORD not in text
    assert "auth" not in repr(event).replace("author", "")  # no credential field in the Event
    assert any(r.getMessage().startswith("stuck pod evicted") for r in caplog.records)


def test_a_pull_failure_seen_on_a_pod_triggers_it(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    """The secret was there first (the pod was admitted while the webhook was down)."""
    cluster.create_namespace("team-a")
    add_secret(cluster, "team-a", "reg")
    c = controllers()
    cluster.create_pod("team-a", "web-2", IMAGE, owner=RS)
    quiet(c)
    assert cluster.evictions == []  # Pending but not stuck: nothing to do yet
    stuck(c, cluster, "team-a", "web-2", "ErrImagePull")
    wait_for(lambda: evicted(cluster, "team-a", "web-2"), "the eviction")


def test_a_stuck_init_container_is_enough(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-3", "busybox", init_images=(IMAGE,), owner=RS)
    c = controllers()
    stuck(c, cluster, "team-a", "web-3")
    add_secret(cluster, "team-a")
    wait_for(lambda: evicted(cluster, "team-a", "web-3"), "the eviction")


def test_a_bare_pod_gets_one_event_and_is_never_evicted(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "bare", IMAGE)
    c = controllers()
    stuck(c, cluster, "team-a", "bare")
    add_secret(cluster, "team-a", "reg")
    (event,) = wait_for(lambda: cluster.events_for("bare", MISSING_REASON), "the Event")
    assert event["type"] == "Warning"
    assert "reg" in event["message"] and IMAGE in event["message"]
    assert "never deleted" in event["message"]
    quiet(c)  # a full pass and more: handled once, by uid
    stuck(c, cluster, "team-a", "bare", "ErrImagePull")  # the kubelet keeps reporting
    quiet(c)
    assert len(cluster.events_for("bare", MISSING_REASON)) == 1
    assert cluster.evictions == []
    assert cluster.pod("team-a", "bare") is not None
    assert c.metric(ACTIONS, action="event", result="ok") == 1


def test_mode_event_reports_owned_pods_and_evicts_nothing(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    c = controllers(options=options(mode=Mode.EVENT))
    stuck(c, cluster, "team-a", "web-1")
    add_secret(cluster, "team-a")
    (event,) = wait_for(lambda: cluster.events_for("web-1", MISSING_REASON), "the Event")
    assert "recovery.mode is event" in event["message"]
    quiet(c)
    assert cluster.evictions == []


# ---- what it leaves alone ----------------------------------------------------------------------


def test_opted_out_ready_already_named_and_excluded_pods_are_left_alone(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_namespace("off", {"pullsecret-injector.io/inject": "disabled"})
    cluster.create_namespace("skipped")
    opt_out = {"pullsecret-injector.io/inject": "false"}
    cluster.create_pod("team-a", "opted-out", IMAGE, owner=RS, annotations=opt_out)
    cluster.create_pod("team-a", "serving", "busybox", IMAGE, owner=RS)
    cluster.create_pod("team-a", "named", IMAGE, owner=RS, pull_secrets=("reg",))
    cluster.create_pod("off", "web-1", IMAGE, owner=RS)
    cluster.create_pod("skipped", "web-1", IMAGE, owner=RS)
    cluster.create_pod(REL, "web-1", IMAGE, owner=RS)
    cluster.create_pod("kube-system", "web-1", IMAGE, owner=RS)
    cluster.create_pod("team-a", "control", IMAGE, owner=RS)
    c = controllers(recovery_exclude_namespaces=("skipped",))
    for ns, name in [
        ("team-a", "opted-out"),
        ("team-a", "named"),
        ("team-a", "control"),
        ("off", "web-1"),
        ("skipped", "web-1"),
        (REL, "web-1"),
        ("kube-system", "web-1"),
    ]:
        stuck(c, cluster, ns, name)
    stuck(c, cluster, "team-a", "serving", ready=True)  # first container runs and is ready
    for ns in ("team-a", "off", "skipped", REL, "kube-system"):
        add_secret(cluster, ns, "reg")
    wait_for(lambda: evicted(cluster, "team-a", "control"), "the control pod's eviction")
    quiet(c)
    assert cluster.evictions == [("team-a", "control", 201)]
    assert [e["involvedObject"]["name"] for e in cluster.posted_events] == ["control"]
    assert c.metric("pullsecret_injector_recovery_stuck_pods") == 8 - 1
    skipped = {
        reason: c.metric("pullsecret_injector_recovery_skipped_pods", reason=reason)
        for reason in ("opted_out", "ready", "already_named", "namespace_excluded")
    }
    assert skipped == {"opted_out": 1, "ready": 1, "already_named": 1, "namespace_excluded": 4}


# ---- safety --------------------------------------------------------------------------------------


def test_a_pdb_refusal_429_is_retried_later(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pdb_blocked.add("team-a/web-1")
    c = controllers()
    stuck(c, cluster, "team-a", "web-1")
    add_secret(cluster, "team-a")
    wait_for(lambda: ("team-a", "web-1", 429) in cluster.evictions, "the refused eviction")
    assert cluster.pod("team-a", "web-1") is not None
    wait_for(lambda: c.metric(ACTIONS, action="evict", result="pdb_blocked"), "the count")
    cluster.pdb_blocked.clear()  # the budget allows a disruption again
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction, retried")
    wait_for(lambda: cluster.events_for("web-1", EVICTED_REASON), "the Event")
    assert len(cluster.posted_events) == 1  # for the eviction only, not for the refusals


def test_evictions_are_rate_limited_cluster_wide(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    names = [f"web-{i}" for i in range(5)]
    for i, name in enumerate(names):
        ns = f"ns-{i % 2}"
        if cluster.current("namespaces", ns) is None:
            cluster.create_namespace(ns)
        cluster.create_pod(ns, name, IMAGE, owner=("ReplicaSet", f"rs-{i}"))
    c = controllers(options=options(evictions_per_minute=2))  # burst 2, then one per 30 s
    for i, name in enumerate(names):
        stuck(c, cluster, f"ns-{i % 2}", name)
    add_secret(cluster, "ns-0")
    add_secret(cluster, "ns-1")
    wait_for(lambda: len(cluster.evictions) == 2, "the first two evictions")
    quiet(c, 1.0)
    assert len(cluster.evictions) == 2
    assert all(code == 201 for _, _, code in cluster.evictions)


def test_a_replacement_that_comes_back_stuck_waits_for_its_owners_backoff(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    """The webhook was down when the replacement was made: it is as bare as the first."""
    cluster.create_namespace("team-a")
    generation = iter(range(1, 100))

    def replicaset(evicted_pod: dict[str, Any]) -> None:
        name = f"web-r{next(generation)}"
        cluster.create_pod("team-a", name, IMAGE, owner=RS, created_offset=1.0)
        cluster.set_status("team-a", name, cluster.waiting_status("team-a", name, "ErrImagePull"))

    cluster.on_evicted = replicaset
    cluster.create_pod("team-a", "web-0", IMAGE, owner=RS, created_offset=-60)
    c = controllers(options=options(backoff_base_seconds=2.0))
    stuck(c, cluster, "team-a", "web-0")
    add_secret(cluster, "team-a")
    wait_for(lambda: evicted(cluster, "team-a", "web-0"), "the first eviction")
    started = time.monotonic()
    wait_for(lambda: cluster.pod("team-a", "web-r1"), "the replacement")
    quiet(c, 0.5)
    assert not evicted(cluster, "team-a", "web-r1")  # held by the owner's backoff
    assert c.metric("pullsecret_injector_recovery_skipped_pods", reason="owner_backoff") == 1
    wait_for(lambda: evicted(cluster, "team-a", "web-r1"), "the eviction after the backoff")
    assert time.monotonic() - started >= 1.0
    quiet(c, 1.0)  # the second replacement waits twice as long (4 s)
    assert not evicted(cluster, "team-a", "web-r2")


def test_an_eviction_names_the_exact_pod_it_planned_for(
    cluster: PodCluster, controllers: Callable[..., Controller], apiserver: PodApiServer
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    c = controllers()
    stuck(c, cluster, "team-a", "web-1")
    uid = cluster.pod("team-a", "web-1")["metadata"]["uid"]  # type: ignore[index]
    add_secret(cluster, "team-a")
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction")
    (write,) = [w for w in apiserver.writes if w.path.endswith("/eviction")]
    assert write.path == "/api/v1/namespaces/team-a/pods/web-1/eviction"
    assert write.body == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "team-a"},
        "deleteOptions": {"preconditions": {"uid": uid}},
    }


# ---- the pod watch ---------------------------------------------------------------------------


def test_the_pod_watch_asks_only_for_pending_pods_and_forgets_started_ones(
    cluster: PodCluster, controllers: Callable[..., Controller], apiserver: PodApiServer
) -> None:
    cluster.create_namespace("team-a")
    for i in range(3):
        cluster.create_pod("team-a", f"web-{i}", IMAGE, owner=RS)
    c = controllers()
    pods = c.recovery.pods
    assert pods is not None and len(pods) == 3
    for req in apiserver.requests_for(PODS, watch=False) + apiserver.requests_for(PODS, watch=True):
        assert req.path == "/api/v1/pods"
        assert req.query.get("fieldSelector") == "status.phase=Pending"
    assert apiserver.requests_for(PODS, watch=True)
    cluster.set_status("team-a", "web-0", {"phase": "Running"})  # left the selector
    wait_for(lambda: len(pods) == 2, "the started pod to be dropped")
    assert c.metric("pullsecret_injector_recovery_cached_pods") == 2

    apiserver.expire_watches()  # 410 Gone: listed again, stuck pods planned again
    stuck(c, cluster, "team-a", "web-1")
    add_secret(cluster, "team-a")
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction after a re-list")
    assert c.metric("pullsecret_injector_watch_restarts_total", resource="pods", reason="expired")


# ---- under the replication Lease -------------------------------------------------------------


def test_it_runs_under_the_replication_lease_and_acts_on_replication_copies(
    cluster: PodCluster, replicas: Callable[..., Any], controllers: Callable[..., Controller]
) -> None:
    """A project registry reaches the namespace as a copy: the copy is the trigger."""
    cluster.create_namespace("team-a", {"team": "a"})
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    replica = replicas()
    c = controllers(
        leadership=replica.replicator, store=replica.store, metrics=replica.metrics, start=False
    )
    c.start()  # the replicator leads already: recovery starts with it
    wait_for(c.ready, "recovery's first pass")
    stuck(c, cluster, "team-a", "web-1")
    quiet(c)
    assert cluster.evictions == []
    add_source(cluster, selector="team=a", hosts=(REG,))
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction")
    (event,) = wait_for(lambda: cluster.events_for("web-1", EVICTED_REASON), "the Event")
    assert "reg" in event["message"]
    replica.stop()  # the Replicator stops leading: so does recovery
    assert not c.recovery.is_leading and c.recovery.pods is None


def follower(cluster: PodCluster, replicas: Callable[..., Any]) -> Any:
    """A replica (watcher + replicator) while another holds the Lease for an hour."""
    lease_held_elsewhere(cluster, "elsewhere")
    return replicas(options=dataclasses.replace(FAST, leader_election=True, timings=FAST_LEASE))


def test_a_follower_neither_watches_pods_nor_evicts_until_it_holds_the_lease(
    cluster: PodCluster,
    replicas: Callable[..., Any],
    controllers: Callable[..., Controller],
    apiserver: PodApiServer,
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pull_fails("team-a", "web-1")
    add_secret(cluster, "team-a")
    replica = follower(cluster, replicas)
    c = controllers(
        leadership=replica.replicator, store=replica.store, metrics=replica.metrics, start=False
    )
    c.start()
    wait_for(lambda: replica.replicator.elector.observed_holder, "the other holder seen")
    time.sleep(0.5)
    assert not c.recovery.is_leading
    assert apiserver.requests_for(PODS, watch=False) == []
    assert cluster.evictions == []

    cluster.patch_object(  # the other holder releases the Lease
        LEASES,
        REL,
        "pullsecret-injector",
        "application/merge-patch+json",
        {"spec": {"holderIdentity": ""}},
    )
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction by the new leader")


def test_dry_run_admission_triggers_nothing(
    cluster: PodCluster,
    replicas: Callable[..., Any],
    controllers: Callable[..., Controller],
) -> None:
    """A dry-run admission creates no copy, so recovery has nothing new; a real one does."""
    cluster.create_namespace("team-a", {"team": "a"})
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pull_fails("team-a", "web-1")
    add_source(cluster, selector="team=a", hosts=(REG,))
    replica = follower(cluster, replicas)  # serves admission; no replication controller runs
    c = controllers(store=replica.store, metrics=replica.metrics)  # recovery leads on its own
    app = create_app(replica.settings, replica.store, replica.metrics, None, replica.replicator)
    review = json.loads((REVIEWS / "v1-create-pod-dry-run.json").read_text())
    assert review["request"]["dryRun"] is True and review["request"]["namespace"] == "team-a"

    async def post(doc: dict[str, Any]) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            response = await client.post("/mutate", json=doc)
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    answer = asyncio.run(post(review))
    assert answer["response"]["allowed"] is True
    quiet(c, 0.5)
    assert cluster.secret("team-a", "reg") is None  # no copy made on a dry run...
    assert cluster.evictions == []  # ...so nothing to recover with

    review["request"]["dryRun"] = False
    asyncio.run(post(review))
    assert cluster.secret("team-a", "reg") is not None  # the copy, made at admission
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction")


def test_a_pod_replaced_under_the_same_name_is_not_evicted_in_its_place(
    cluster: PodCluster, controllers: Callable[..., Controller], apiserver: PodApiServer
) -> None:
    """A StatefulSet recreates its pod under the same name between the plan and the eviction:
    the uid precondition refuses (409) and the new pod is judged on its own."""
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "db-0", IMAGE, owner=("StatefulSet", "db"))
    c = controllers()
    stuck(c, cluster, "team-a", "db-0")
    replaced: list[str] = []

    def recreate_first(write: Write) -> None:
        if write.path.endswith("/eviction") and not replaced:
            old = cluster.pod("team-a", "db-0")
            assert old is not None
            replaced.append(old["metadata"]["uid"])
            cluster.delete_object(PODS, "team-a", "db-0", {})
            cluster.create_pod(
                "team-a", "db-0", IMAGE, owner=("StatefulSet", "db"), pull_secrets=("reg",)
            )

    apiserver.write_hook = recreate_first
    add_secret(cluster, "team-a")
    wait_for(lambda: ("team-a", "db-0", 409) in cluster.evictions, "the refused eviction")
    wait_for(lambda: c.metric(ACTIONS, action="evict", result="gone") == 1, "counted as gone")
    quiet(c)
    new = cluster.pod("team-a", "db-0")
    assert new is not None and new["metadata"]["uid"] not in replaced  # still there
    assert cluster.evictions == [("team-a", "db-0", 409)]


def test_with_replication_off_it_campaigns_for_the_same_lease_itself(
    cluster: PodCluster, controllers: Callable[..., Controller]
) -> None:
    cluster.create_namespace("team-a")
    cluster.create_pod("team-a", "web-1", IMAGE, owner=RS)
    cluster.pull_fails("team-a", "web-1")
    add_secret(cluster, "team-a")
    c = controllers(options=options(leader_election=True, timings=FAST_LEASE), start=False)
    c.start()
    wait_for(lambda: evicted(cluster, "team-a", "web-1"), "the eviction by the Lease holder")
    lease = cluster.lease(REL, "pullsecret-injector")  # the replication controller's Lease
    assert lease is not None and lease["spec"]["holderIdentity"] == c.recovery.identity
    c.stop()  # releases it for the next replica
    released = cluster.lease(REL, "pullsecret-injector")
    assert released is not None and released["spec"]["holderIdentity"] == ""
