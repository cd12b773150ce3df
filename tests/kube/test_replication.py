"""The replication controller against the local API server, through the real client and watches.

Each test starts a replica (ClusterWatcher + Replicator, leader election off: see
test_replication_leader.py) on the writable local API server and changes the cluster the
way users do; assertions poll the server's state with a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from kube_apiserver import DOCKERCFG, SECRETS, ApiError
from kube_apiserver_writes import WritableCluster, Write
from kube_support import auths
from replication_support import REL, add_source, copies_of, copy_state, source_hash

from webhook.core.planner import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SELECTOR_ANNOTATION,
    SOURCE_ANNOTATION,
)

pytestmark = pytest.mark.writable_cluster

PROBLEMS = "pullsecret_injector_replication_problems"
ACTIONS = "pullsecret_injector_replication_actions_total"


def set_annotations(cluster: WritableCluster, ns: str, name: str, **values: str | None) -> None:
    cluster.patch_object(
        SECRETS, ns, name, "application/merge-patch+json", {"metadata": {"annotations": values}}
    )


def selector_patch(cluster: WritableCluster, selector: str | None, name: str = "reg") -> None:
    set_annotations(cluster, REL, name, **{SELECTOR_ANNOTATION: selector})


def converged(cluster: WritableCluster, expected: dict[str, str | None], name: str = "reg") -> Any:
    """A predicate: the copies of `name` are exactly `expected` (namespace -> state)."""

    def check() -> bool:
        return copies_of(cluster, name) == expected

    return check


def test_copies_appear_in_matching_namespaces_and_new_ones(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="team=a", labels={"tier": "gold"})
    cluster.create_namespace("a1", {"team": "a"})
    cluster.create_namespace("b1", {"team": "b"})
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"a1": want}), "copy in a1 only")

    cluster.create_namespace("a2", {"team": "a"})
    wait_for(converged(cluster, {"a1": want, "a2": want}), "copy in the new namespace a2")

    copy = cluster.secret("a2", "reg")
    source = cluster.secret(REL, "reg")
    assert copy is not None and source is not None
    assert copy["data"] == source["data"] and copy["type"] == source["type"]
    assert copy["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "tier": "gold"}
    assert copy["metadata"]["annotations"][SOURCE_ANNOTATION] == f"{REL}/reg"
    assert SELECTOR_ANNOTATION not in copy["metadata"]["annotations"]


def test_relabelling_moves_copies_in_and_out(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="field.cattle.io/projectId=p-abc12")
    cluster.create_namespace("n1", {"field.cattle.io/projectId": "p-abc12"})
    cluster.create_namespace("n2")
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"n1": want}), "copy in the project's namespace")

    cluster.label_namespace("n2", {"field.cattle.io/projectId": "p-abc12"})
    wait_for(converged(cluster, {"n1": want, "n2": want}), "copy after relabelling into")
    cluster.label_namespace("n1", {"field.cattle.io/projectId": None})
    wait_for(converged(cluster, {"n2": want}), "copy deleted after the label was removed")


def test_rotation_reaches_every_copy(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="", password="old")
    for i in range(25):
        cluster.create_namespace(f"ns{i:02}")
    replicas()
    old = source_hash(cluster)
    wait_for(converged(cluster, {f"ns{i:02}": old for i in range(25)}), "25 copies")

    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="new"))
    new = source_hash(cluster)
    assert new != old
    wait_for(converged(cluster, {f"ns{i:02}": new for i in range(25)}), "every copy rotated")
    source = cluster.secret(REL, "reg")
    assert source is not None
    assert all(cluster.secret(f"ns{i:02}", "reg")["data"] == source["data"] for i in range(25))  # type: ignore[index]


def test_annotation_removed_or_source_deleted_deletes_copies_only(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, "reg", selector="")
    add_source(cluster, "other", selector="")
    cluster.create_namespace("a1")
    cluster.create_namespace("a2")
    cluster.create_secret("a2", "unrelated", auths=auths("x.example"))
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"a1": want, "a2": want}), "copies")

    selector_patch(cluster, None)
    wait_for(converged(cluster, {}), "copies deleted when the annotation went")
    assert cluster.secret(REL, "reg") is not None  # the source itself is never touched

    other = source_hash(cluster, "other")
    wait_for(converged(cluster, {"a1": other, "a2": other}, "other"), "other's copies")
    cluster.delete_secret(REL, "other")
    wait_for(converged(cluster, {}, "other"), "copies deleted with their source")
    assert cluster.secret("a2", "unrelated") is not None


def test_selector_edited_moves_copies(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="team=a")
    cluster.create_namespace("a1", {"team": "a"})
    cluster.create_namespace("b1", {"team": "b"})
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"a1": want}), "copy in a1")
    selector_patch(cluster, "team in (b)")
    wait_for(converged(cluster, {"b1": want}), "copy moved to b1")


def test_a_users_secret_of_the_same_name_is_never_touched(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("mine")
    cluster.create_namespace("opaque")
    cluster.create_namespace("free")
    users = cluster.create_secret("mine", "reg", auths=auths("user.example", password="u"))
    cluster.create_secret("opaque", "reg", secret_type="Opaque", data={"k": "dg=="})
    replica = replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"mine": "user", "opaque": "user", "free": want}), "copies")
    wait_for(lambda: cluster.events_for("reg", "CopyBlocked"), "an Event on the source")

    untouched = cluster.secret("mine", "reg")
    assert untouched is not None
    assert untouched["metadata"]["resourceVersion"] == users["metadata"]["resourceVersion"]
    event = cluster.events_for("reg", "CopyBlocked")[0]
    assert event["involvedObject"]["namespace"] == REL and event["type"] == "Warning"
    assert "mine" in event["message"] or "opaque" in event["message"]
    for w in apiserver.writes_of(SECRETS):
        assert w.path not in ("/api/v1/namespaces/mine/secrets/reg",)
        assert not (w.method in ("PUT", "PATCH", "DELETE") and "/opaque/" in w.path)

    # rotation and a full reconcile still leave them alone, and count them
    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="new"))
    wait_for(
        converged(cluster, {"mine": "user", "opaque": "user", "free": source_hash(cluster)}),
        "rotated",
    )
    replica.replicator.request_full_reconcile()
    wait_for(lambda: replica.metric(PROBLEMS, kind="clash") == 2, "clash gauge")
    assert (
        cluster.secret("mine", "reg")["metadata"]["resourceVersion"]
        == users["metadata"]["resourceVersion"]
    )  # type: ignore[index]


def test_a_copy_replaced_by_a_user_is_left_to_the_user(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("a1")
    replicas()
    wait_for(converged(cluster, {"a1": source_hash(cluster)}), "copy")
    cluster.delete_secret("a1", "reg")
    cluster.create_secret("a1", "reg", auths=auths("user.example"))
    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="new"))
    wait_for(converged(cluster, {"a1": "user"}), "the user's secret kept")
    # A user who takes over a copy by removing our label keeps it too.
    cluster.create_namespace("a2")
    wait_for(converged(cluster, {"a1": "user", "a2": source_hash(cluster)}), "copy in a2")
    cluster.update_secret("a2", "reg", labels={"owner": "me"})
    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="newer"))
    wait_for(converged(cluster, {"a1": "user", "a2": "user"}), "adopted copy kept")


def test_excluded_namespaces_get_no_copies(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("served")
    cluster.create_namespace("optout", {"pullsecret-injector.io/inject": "disabled"})
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"served": want}), "copy only where served")
    assert cluster.secret("kube-system", "reg") is None
    cluster.label_namespace("served", {"pullsecret-injector.io/inject": "disabled"})
    wait_for(converged(cluster, {}), "copy deleted once the namespace opted out")
    cluster.label_namespace("optout", {"pullsecret-injector.io/inject": None})
    wait_for(converged(cluster, {"optout": want}), "copy once it opted back in")


def test_invalid_selector_is_reported_and_serves_nothing(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="team in (a")
    cluster.create_namespace("a1", {"team": "a"})
    replica = replicas()
    wait_for(lambda: cluster.events_for("reg", "InvalidNamespaceSelector"), "an Event")
    wait_for(lambda: replica.metric(PROBLEMS, kind="invalid_selector") == 1, "the metric")
    event = cluster.events_for("reg", "InvalidNamespaceSelector")[0]
    assert "team in (a" in event["message"]
    assert copies_of(cluster) == {}
    selector_patch(cluster, "team in (a)")
    wait_for(converged(cluster, {"a1": source_hash(cluster)}), "copy once fixed")
    replica.replicator.request_full_reconcile()
    wait_for(lambda: replica.metric(PROBLEMS, kind="invalid_selector") == 0, "gauge cleared")
    assert len(cluster.events_for("reg", "InvalidNamespaceSelector")) == 1  # told once


def test_converges_after_a_restart(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, "reg", selector="team=a")
    add_source(cluster, "gone", selector="")
    for ns, team in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        cluster.create_namespace(ns, {"team": team})
    first = replicas()
    wait_for(converged(cluster, {"a1": source_hash(cluster), "a2": source_hash(cluster)}), "reg")
    wait_for(lambda: len(copies_of(cluster, "gone")) == 3, "gone's copies")
    first.stop()

    # While nobody runs the controller:
    cluster.update_secret(REL, "reg", auths=auths("registry.example.com", password="rotated"))
    cluster.delete_secret("a1", "reg")  # a copy deleted by hand
    cluster.label_namespace("a2", {"team": "b"})  # a namespace leaving the selector
    cluster.create_namespace("a3", {"team": "a"})  # a new namespace
    cluster.delete_secret(REL, "gone")  # a source deleted: orphans left behind
    cluster.compact()  # and the old resourceVersions are gone

    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"a1": want, "a3": want}), "converged after the restart")
    wait_for(converged(cluster, {}, "gone"), "orphans deleted")


def test_an_edited_copy_is_restored(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("a1")
    replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {"a1": want}), "copy")
    cluster.update_secret("a1", "reg", auths=auths("evil.example.com"))  # labels, hash kept
    source = cluster.secret(REL, "reg")
    assert source is not None
    wait_for(lambda: cluster.secret("a1", "reg")["data"] == source["data"], "data restored")  # type: ignore[index]


def test_a_source_changing_type_recreates_its_copies(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    add_source(cluster, selector="")
    cluster.create_namespace("a1")
    replicas()
    wait_for(converged(cluster, {"a1": source_hash(cluster)}), "copy")
    cluster.replace_secret_type(
        REL,
        "reg",
        DOCKERCFG,
        auths=auths("registry.example.com"),
        annotations={SELECTOR_ANNOTATION: ""},
    )
    wait_for(converged(cluster, {"a1": source_hash(cluster)}), "copy recreated")
    assert cluster.secret("a1", "reg")["type"] == DOCKERCFG  # type: ignore[index]


def test_projects_stay_isolated(cluster, replicas) -> None:  # type: ignore[no-untyped-def]
    """Project B's registry never lands in project A's namespaces, even while moving."""
    project = "field.cattle.io/projectId"
    add_source(cluster, "reg-a", f"{project}=p-a", hosts=("shared.example.com",), password="a")
    add_source(cluster, "reg-b", f"{project}=p-b", hosts=("shared.example.com",), password="b")
    for ns, p in (("a1", "p-a"), ("a2", "p-a"), ("b1", "p-b")):
        cluster.create_namespace(ns, {project: p})
    replicas()
    ha, hb = source_hash(cluster, "reg-a"), source_hash(cluster, "reg-b")
    wait_for(converged(cluster, {"a1": ha, "a2": ha}, "reg-a"), "project A's copies")
    wait_for(converged(cluster, {"b1": hb}, "reg-b"), "project B's copies")

    cluster.label_namespace("a2", {project: "p-b"})
    wait_for(converged(cluster, {"a1": ha}, "reg-a"), "A's copy left a2")
    wait_for(converged(cluster, {"a2": hb, "b1": hb}, "reg-b"), "B's copy in a2")
    for ns in ("a1",):
        assert set(cluster.secrets_in(ns)) == {"reg-a"}
    assert set(cluster.secrets_in("b1")) == {"reg-b"}


def test_several_source_namespaces_first_one_wins_a_name(
    cluster, kubeconfig: Path, replicas
) -> None:  # type: ignore[no-untyped-def]
    cluster.create_namespace("platform")
    add_source(cluster, selector="", namespace="platform", password="platform")
    add_source(cluster, selector="", namespace=REL, password="release")
    cluster.create_namespace("a1")
    replicas(source_namespaces=("platform", REL))
    want = source_hash(cluster, namespace="platform")
    wait_for(lambda: copy_state(cluster, "a1") == want, "platform's copy wins")
    assert (
        cluster.secret("platform", "reg")["metadata"]["annotations"].get(SOURCE_ANNOTATION) is None
    )  # type: ignore[index]
    wait_for(lambda: cluster.events_for("reg", "CopyNameConflict"), "conflict reported")


def test_failed_writes_are_retried(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    failures = {"left": 4}

    def flaky(write: Write) -> None:
        if write.method == "POST" and write.resource == SECRETS and failures["left"] > 0:
            failures["left"] -= 1
            raise ApiError(500, "InternalError", "Internal error occurred: etcd is sulking")

    apiserver.write_hook = flaky
    add_source(cluster, selector="")
    for i in range(3):
        cluster.create_namespace(f"n{i}")
    replica = replicas()
    want = source_hash(cluster)
    wait_for(converged(cluster, {f"n{i}": want for i in range(3)}), "copies despite errors")
    assert failures["left"] == 0
    assert replica.metric(ACTIONS, action="create", result="error") >= 1


def test_events_drive_the_controller(cluster, apiserver, replicas) -> None:  # type: ignore[no-untyped-def]
    """An unrelated change causes one cheap pass and no write; a related one writes."""
    add_source(cluster, selector="team=a")
    cluster.create_namespace("a1", {"team": "a"})
    replica = replicas()
    wait_for(converged(cluster, {"a1": source_hash(cluster)}), "copy")
    wait_for(lambda: replica.replicator.passes >= 2, "the pass that saw its own write")
    writes = len(apiserver.writes_of(SECRETS))
    passes = replica.replicator.passes
    cluster.create_namespace("z1", {"team": "z"})
    wait_for(lambda: replica.replicator.passes > passes, "a pass triggered by the watch")
    assert len(apiserver.writes_of(SECRETS)) == writes
    cluster.label_namespace("z1", {"team": "a"})
    wait_for(lambda: copy_state(cluster, "z1") is not None, "copy after the relabel event")
