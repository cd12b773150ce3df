"""The in-memory store: snapshots per namespace, sync state, change notification."""

from __future__ import annotations

import logging

import pytest
from helpers import registry_secret

from webhook.cluster.store import SECRETS, Change, ChangeKind, Store


def test_every_kind_of_write_is_reported_to_listeners() -> None:
    writes = {n for n in vars(Store) if n.startswith(("upsert_", "delete_", "replace_"))}
    assert len(writes) == 7, "a new Store write needs a _notify call and a line below"
    store = Store()
    seen: list[Change] = []
    store.add_listener(seen.append)
    reg = registry_secret("a1", "reg", "registry.example.com")
    store.upsert_secret(reg)
    store.delete_secret("a1", "reg")
    store.replace_secrets([reg])
    store.replace_namespace_secrets("a1", [])
    store.upsert_namespace("a1", {"team": "a"})
    store.delete_namespace("a1")
    store.replace_namespaces({})
    assert [(c.kind, c.namespace, c.name) for c in seen] == [
        (ChangeKind.SECRET, "a1", "reg"),
        (ChangeKind.SECRET, "a1", "reg"),
        (ChangeKind.SECRETS_RELISTED, "", ""),
        (ChangeKind.NAMESPACE_SECRETS, "a1", ""),
        (ChangeKind.NAMESPACE, "a1", ""),
        (ChangeKind.NAMESPACE, "a1", ""),
        (ChangeKind.NAMESPACES_RELISTED, "", ""),
    ]
    store.remove_listener(seen.append)
    store.upsert_namespace("b1", {})
    assert len(seen) == 7


def test_a_failing_listener_stops_neither_the_write_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(broken)
    store.add_listener(seen.append)
    with caplog.at_level(logging.ERROR):
        store.upsert_namespace("a1", {})
    assert store.has_namespace("a1")
    assert len(seen) == 1
    assert "store listener failed" in caplog.text


def test_a_reader_keeps_its_snapshot_while_a_writer_replaces_the_namespace() -> None:
    store = Store()
    store.upsert_secret(registry_secret("a1", "one", "registry.example.com"))
    snapshot = store.secrets_in("a1")
    store.upsert_secret(registry_secret("a1", "two", "ghcr.io"))
    assert set(snapshot) == {"one"}
    assert set(store.secrets_in("a1")) == {"one", "two"}


def test_deleting_the_last_secret_forgets_the_namespace_secrets() -> None:
    store = Store()
    store.upsert_secret(registry_secret("a1", "one", "registry.example.com"))
    store.delete_secret("a1", "one")
    store.delete_secret("a1", "missing")  # no error
    assert dict(store.secrets_in("a1")) == {}
    assert store.secret_count() == 0


def test_readiness_needs_every_resource_synced() -> None:
    store = Store()
    assert store.staleness("secrets") is None
    store.mark_synced("secrets")
    assert not store.is_synced("secrets", "namespaces")
    store.mark_synced("namespaces")
    assert store.is_synced("secrets", "namespaces")
    staleness = store.staleness("secrets")
    assert staleness is not None and staleness >= 0


def test_a_namespace_is_known_by_its_labels_or_by_a_secret_in_it() -> None:
    store = Store()
    assert not store.has_namespace("a1")
    store.upsert_secret(registry_secret("a1", "one", "registry.example.com"))
    assert store.has_namespace("a1") and store.namespace_labels("a1") is None
    store.upsert_namespace("b1", {"team": "b"})
    assert store.has_namespace("b1") and store.namespace_labels("b1") == {"team": "b"}
    store.delete_namespace("b1")
    assert not store.has_namespace("b1")


def test_a_live_read_of_an_empty_namespace_makes_it_known() -> None:
    store = Store()
    store.replace_namespace_secrets("new", [])
    assert store.has_namespace("new")
    assert dict(store.secrets_in("new")) == {}


def test_a_full_list_replaces_every_namespace_at_once() -> None:
    store = Store()
    store.upsert_secret(registry_secret("gone", "old", "registry.example.com"))
    store.replace_secrets(
        [registry_secret("a1", "one", "ghcr.io"), registry_secret("a2", "two", "quay.io")]
    )
    assert not store.has_namespace("gone")
    assert store.secret_count() == 2
    assert {(s.namespace, s.name) for s in store.all_secrets()} == {("a1", "one"), ("a2", "two")}


def test_readers_get_copies_and_immutable_views() -> None:
    store = Store()
    store.replace_namespaces({"a1": {"team": "a"}})
    listed = store.namespaces()
    listed["intruder"] = {}
    assert "intruder" not in store.namespaces()
    labels = store.namespace_labels("a1")
    assert labels is not None
    with pytest.raises(TypeError):
        labels["team"] = "b"  # type: ignore[index]
    store.upsert_secret(registry_secret("a1", "one", "registry.example.com"))
    with pytest.raises(TypeError):
        store.secrets_in("a1")["two"] = store.secrets_in("a1")["one"]  # type: ignore[index]


def test_ages_cover_every_resource_that_proved_alive_and_only_those() -> None:
    store = Store()
    assert store.ages() == {}
    store.touch(SECRETS)
    ages = store.ages()
    assert set(ages) == {SECRETS} and ages[SECRETS] >= 0
    assert not store.is_synced(SECRETS)  # alive is not synced


def test_the_store_keeps_no_credential() -> None:
    secret = registry_secret("a1", "one", "registry.example.com")
    store = Store()
    store.upsert_secret(secret)
    kept = repr(store.secrets_in("a1")["one"])
    assert "pw-one" not in kept and "user-one" not in kept
    assert [k.key for k in store.secrets_in("a1")["one"].keys] == ["registry.example.com"]
