"""Leader election: one replica at a time runs the controller; another takes over.

Short lease timings (2 s lease, 1.2 s renew deadline, 0.2 s retry) keep these fast; every
wait polls for a state with a deadline.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from helpers import wait_for
from kube_apiserver import ApiError
from kube_apiserver_writes import LEASES, WritableCluster, Write
from replication_support import FAST, FAST_LEASE, REL, Replica, add_source, copy_state, source_hash

from webhook.cluster.leader import micro_time

pytestmark = pytest.mark.writable_cluster

ELECTED = dataclasses.replace(FAST, leader_election=True, timings=FAST_LEASE)
LEASE = "pullsecret-injector"
ACTIONS = "pullsecret_injector_replication_actions_total"
MICRO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def leaders(group: list[Replica]) -> list[Replica]:
    return [r for r in group if r.replicator.is_leader]


def holder(cluster: WritableCluster) -> str | None:
    lease = cluster.lease(REL, LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity") or None


def writes(replica: Replica) -> float:
    return sum(
        replica.metric(ACTIONS, action=a, result="ok") for a in ("create", "update", "delete")
    )


def test_exactly_one_replica_leads_and_only_it_writes(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("a1")
    group = [replicas(options=ELECTED, identity=f"replica-{i}") for i in range(3)]
    (leader,) = wait_for(lambda: leaders(group) or None, "a leader")
    wait_for(lambda: copy_state(cluster, "a1") == source_hash(cluster), "the leader's copy")
    assert holder(cluster) == leader.replicator.identity
    for i in range(5):
        cluster.create_namespace(f"n{i}")
    wait_for(lambda: all(copy_state(cluster, f"n{i}") for i in range(5)), "copies")
    assert len(leaders(group)) == 1
    wait_for(lambda: writes(leader) >= 6, "the leader counting its writes")
    assert all(writes(r) == 0 for r in group if r is not leader)
    assert leader.metric("pullsecret_injector_replication_leader") == 1
    assert all(
        r.metric("pullsecret_injector_replication_leader") == 0 for r in group if r is not leader
    )
    lease = cluster.lease(REL, LEASE)
    assert lease is not None
    assert MICRO.match(lease["spec"]["renewTime"]) and MICRO.match(lease["spec"]["acquireTime"])
    assert lease["spec"]["leaseDurationSeconds"] == 2


def test_a_stopping_leader_hands_over_at_once(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    group = [replicas(options=ELECTED, identity=f"replica-{i}") for i in range(2)]
    (first,) = wait_for(lambda: leaders(group) or None, "a leader")
    transitions = cluster.lease(REL, LEASE)["spec"].get("leaseTransitions", 0)  # type: ignore[index]
    first.stop()  # releases the Lease
    assert not first.replicator.is_leader
    (second,) = wait_for(lambda: leaders(group) or None, "the other replica leading")
    assert second is not first
    assert holder(cluster) == second.replicator.identity
    assert cluster.lease(REL, LEASE)["spec"]["leaseTransitions"] == transitions + 1  # type: ignore[index]
    cluster.create_namespace("after")
    wait_for(lambda: copy_state(cluster, "after") == source_hash(cluster), "the new leader's copy")


def test_a_leader_that_cannot_renew_stops_and_another_takes_over(  # type: ignore[no-untyped-def]
    cluster, apiserver, replicas
) -> None:
    add_source(cluster, selector="")
    cluster.create_namespace("a1")
    group = [replicas(options=ELECTED, identity=f"replica-{i}") for i in range(2)]
    (old,) = wait_for(lambda: leaders(group) or None, "a leader")
    wait_for(lambda: copy_state(cluster, "a1"), "first copy")
    cut_off = old.replicator.identity

    def partition(write: Write) -> None:  # the old leader can no longer reach the API server
        body = write.body if isinstance(write.body, dict) else {}
        if write.resource == LEASES and (body.get("spec") or {}).get("holderIdentity") == cut_off:
            raise ApiError(
                503, "ServiceUnavailable", "the server is currently unable to handle the request"
            )

    apiserver.write_hook = partition
    wait_for(lambda: not old.replicator.is_leader, "the old leader stepping down")
    assert old.metric("pullsecret_injector_replication_leader") == 0
    before = writes(old)
    (new,) = wait_for(lambda: leaders(group) or None, "a new leader after the lease expired")
    assert new is not old and holder(cluster) == new.replicator.identity
    cluster.create_namespace("a2")
    wait_for(lambda: copy_state(cluster, "a2") == source_hash(cluster), "the new leader's copy")
    assert writes(old) == before  # the stopped controller wrote nothing more


def test_a_leader_that_sees_another_holder_steps_down(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    group = [replicas(options=ELECTED, identity="replica-0")]
    (leader,) = wait_for(lambda: leaders(group) or None, "a leader")
    lease = cluster.lease(REL, LEASE)
    assert lease is not None
    now = micro_time()
    stolen = {
        **lease,
        "spec": {
            **lease["spec"],
            "holderIdentity": "intruder",
            "renewTime": now,
            "acquireTime": now,
            "leaseDurationSeconds": 60,
        },
    }
    cluster.replace_object(LEASES, REL, LEASE, stolen)
    wait_for(lambda: not leader.replicator.is_leader, "stepping down on seeing another holder")
    assert holder(cluster) == "intruder"


def test_micro_time_keeps_six_digits() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    assert micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    assert MICRO.match(micro_time())
