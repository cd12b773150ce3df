"""Admission-time copies: a pod admitted before the controller's copy exists still gets it.

The namespace and its workload arrive together (one `kubectl apply`): the watch has not
delivered the namespace yet, the copy does not exist. `ensure_copies` creates it before
the pod is answered (bounded); `pending_copies` lets the decision name it either way.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from helpers import wait_for
from kube_apiserver import NAMESPACES, SECRETS, held_events
from kube_apiserver_writes import WritableCluster, Write
from kube_support import auths
from replication_support import (
    FAST,
    FAST_LEASE,
    REL,
    Replica,
    add_source,
    copy_state,
    lease_held_elsewhere,
    source_hash,
)

from webhook.core.injection import Policy, decide

pytestmark = pytest.mark.writable_cluster

POLICY = Policy.build("", ())
ADMISSION = "pullsecret_injector_replication_admission_copies_total"
PROJECT = "field.cattle.io/projectId"


def pod(*images: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]},
    }


def admit(
    replica: Replica, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool = False
) -> tuple[list[str], tuple[str, ...]]:
    """What the admission path does: ensure the copies, then decide with pending ones."""
    created = replica.replicator.ensure_copies(namespace, dry_run)
    secrets = replica.replicator.pending_copies(namespace, replica.store.secrets_in(namespace))
    return created, decide(manifest, namespace, secrets, POLICY).add


def new_namespaces_unseen(cluster: WritableCluster) -> Any:
    """Hold every watch: the store sees neither the new namespace nor the copies."""
    return held_events(cluster, lambda flt: flt.resource in (NAMESPACES, SECRETS))


def follower(cluster: WritableCluster, replicas: Callable[..., Replica]) -> Replica:
    """A replica that serves admission while another holds the Lease (no controller here)."""
    lease_held_elsewhere(cluster)
    replica = replicas(options=dataclasses.replace(FAST, leader_election=True, timings=FAST_LEASE))
    wait_for(lambda: replica.replicator.elector.observed_holder, "the replica seeing the leader")  # type: ignore[union-attr]
    assert not replica.replicator.is_leader
    return replica


def test_the_copy_exists_before_the_pod_is_answered(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="team=a", hosts=("registry.example.com",))
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    with new_namespaces_unseen(cluster):
        cluster.create_namespace("fresh", {"team": "a"})
        created, injected = admit(replica, "fresh", pod("registry.example.com/app:1"))
        assert created == ["reg"]
        assert copy_state(cluster, "fresh") == source_hash(cluster)  # before the answer
        assert injected == ("reg",)
        assert replica.store.namespace_labels("fresh") is None  # the watch is still held
    assert replica.metric(ADMISSION, result="created") == 1


def test_dry_run_names_the_copy_and_writes_nothing(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("ns1")
    replica = follower(cluster, replicas)
    # the namespaces stream may sync before the secrets stream that carries the source
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    wait_for(lambda: replica.store.namespace_labels("ns1") is not None, "namespace seen")
    before = len(apiserver.writes)
    created, injected = admit(replica, "ns1", pod("registry.example.com/app"), dry_run=True)
    assert created == ["reg"] and injected == ("reg",)
    assert copy_state(cluster, "ns1") is None
    assert len(apiserver.writes) == before
    assert replica.metric(ADMISSION, result="dry_run") == 1


def test_nothing_missing_costs_no_request(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("ns1")
    replica = replicas()
    wait_for(lambda: replica.store.secrets_in("ns1").get("reg"), "copy in the store")
    requests, writes = len(apiserver.requests), len(apiserver.writes)
    created, injected = admit(replica, "ns1", pod("registry.example.com/app"))
    assert created == [] and injected == ("reg",)
    assert (len(apiserver.requests), len(apiserver.writes)) == (requests, writes)


def test_concurrent_pods_share_one_creation(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    results: list[tuple[list[str], tuple[str, ...]]] = []
    with new_namespaces_unseen(cluster):
        cluster.create_namespace("burst")
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    admit(replica, "burst", pod("registry.example.com/x"))
                )
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(r == (["reg"], ("reg",)) or r == ([], ("reg",)) for r in results), results
    posts = [w for w in apiserver.writes_of(SECRETS, "POST") if "/burst/" in w.path]
    assert len(posts) == 1


def test_a_users_secret_of_the_copys_name_is_never_injected(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    cluster.create_namespace("taken")
    cluster.create_secret("taken", "reg", secret_type="Opaque", data={"token": "dG9rZW4="})
    wait_for(lambda: replica.store.namespace_labels("taken") is not None, "namespace seen")
    _, injected = admit(replica, "taken", pod("registry.example.com/app"))
    assert injected == ()  # an Opaque secret of that name is not a registry credential
    assert copy_state(cluster, "taken") == "user"
    assert replica.metric(ADMISSION, result="clash") == 1
    assert admit(replica, "taken", pod("registry.example.com/app")) == ([], ())


def test_admission_is_bounded_when_the_api_server_is_slow(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    release = threading.Event()

    def stall(write: Write) -> None:
        if write.method == "POST" and "/slow/" in write.path:
            release.wait(30)

    apiserver.write_hook = stall
    try:
        with new_namespaces_unseen(cluster):
            cluster.create_namespace("slow")
            created, injected = admit(replica, "slow", pod("registry.example.com/app"))
            assert not release.is_set()  # answered while the API server still holds the write
            assert created == ["reg"] and injected == ("reg",)  # the pod names it anyway
            assert copy_state(cluster, "slow") is None
        assert replica.metric(ADMISSION, result="timeout") >= 1
    finally:
        release.set()
    wait_for(lambda: copy_state(cluster, "slow") == source_hash(cluster), "the slow copy lands")


def test_a_pod_in_project_a_never_gets_project_bs_registry(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    """Cross-project isolation on purpose: both registries serve the same host."""
    add_source(cluster, "reg-a", f"{PROJECT}=p-a", hosts=("shared.example.com",), password="a")
    add_source(cluster, "reg-b", f"{PROJECT}=p-b", hosts=("shared.example.com",), password="b")
    cluster.create_namespace("team-b", {PROJECT: "p-b"})
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.namespace_labels("team-b") is not None, "synced")
    with new_namespaces_unseen(cluster):
        cluster.create_namespace("team-a", {PROJECT: "p-a"})
        created, injected = admit(
            replica, "team-a", pod("shared.example.com/app", "shared.example.com/db")
        )
        assert created == ["reg-a"] and injected == ("reg-a",)
    created, injected = admit(replica, "team-b", pod("shared.example.com/app"))
    assert created == ["reg-b"] and injected == ("reg-b",)
    assert set(cluster.secrets_in("team-a")) == {"reg-a"}
    assert set(cluster.secrets_in("team-b")) == {"reg-b"}
    # what the decision may ever see in team-a: never reg-b, pending or stored
    seen = replica.replicator.pending_copies("team-a", replica.store.secrets_in("team-a"))
    assert "reg-b" not in seen


def test_excluded_and_unknown_namespaces_get_nothing_at_admission(
    cluster, apiserver, replicas
) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("optout", {"pullsecret-injector.io/inject": "disabled"})
    replica = follower(cluster, replicas)
    wait_for(lambda: replica.store.namespace_labels("optout") is not None, "synced")
    assert admit(replica, "optout", pod("registry.example.com/app")) == ([], ())
    assert admit(replica, "kube-system", pod("registry.example.com/app")) == ([], ())
    assert admit(replica, "does-not-exist", pod("registry.example.com/app")) == ([], ())
    assert not apiserver.writes_of(SECRETS, "POST")


def test_the_copy_created_at_admission_is_kept_by_the_controller(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    replica = replicas()
    wait_for(lambda: replica.store.is_synced("secrets", "namespaces"), "synced")
    with new_namespaces_unseen(cluster):
        cluster.create_namespace("both")
        assert admit(replica, "both", pod("registry.example.com/app")) == (["reg"], ("reg",))
    wait_for(lambda: replica.store.secrets_in("both").get("reg"), "the watch catching up")
    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="new"))
    wait_for(lambda: copy_state(cluster, "both") == source_hash(cluster), "rotated by the leader")
