"""The in-memory store: snapshots per namespace, sync state, change notification."""

from __future__ import annotations

import logging

import pytest
from helpers import registry_secret

from webhook.cluster.store import Change, ChangeKind, Store


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
