"""SecretViews: a re-list reuses what it already holds for the same object version."""

from __future__ import annotations

from typing import Any

import orjson
from helpers import secret_object

from webhook.cluster.secret_views import SecretViews
from webhook.cluster.store import Store
from webhook.cluster.watchers import _NamespaceHandler

JSON_TYPE = "kubernetes.io/dockerconfigjson"


def _obj(namespace: str, name: str, rv: str, host: str = "registry.example.com") -> dict[str, Any]:
    obj = secret_object(namespace, name, {host: {"auth": "dTpw"}})
    if rv:
        obj["metadata"]["resourceVersion"] = rv
    return obj


def _listed(views: SecretViews, *objs: dict[str, Any]) -> Store:
    views.replace_type(JSON_TYPE, objs)
    return views._store


def test_a_relist_of_unchanged_versions_reuses_the_secrets_and_the_namespace_mappings() -> None:
    views = SecretViews(Store())
    store = _listed(views, _obj("a", "one", "10"), _obj("a", "two", "11"), _obj("b", "x", "12"))
    before_a, before_b = store.secrets_in("a"), store.secrets_in("b")
    _listed(views, _obj("a", "one", "10"), _obj("a", "two", "11"), _obj("b", "x", "12"))
    assert store.secrets_in("a") is before_a  # the Decider's memo stays warm
    assert store.secrets_in("b") is before_b
    assert store.secrets_in("a")["one"].resource_version == "10"


def test_a_relist_parses_a_new_version_and_keeps_the_rest() -> None:
    views = SecretViews(Store())
    store = _listed(views, _obj("a", "one", "10"), _obj("a", "two", "11"), _obj("b", "x", "12"))
    old_one, old_b = store.secrets_in("a")["one"], store.secrets_in("b")
    _listed(
        views,
        _obj("a", "one", "20", host="quay.io"),  # changed: a new version
        _obj("a", "two", "11"),
        _obj("b", "x", "12"),
    )
    new_one = store.secrets_in("a")["one"]
    assert new_one is not old_one
    assert [k.key for k in new_one.keys] == ["quay.io"]
    assert new_one.resource_version == "20"
    assert store.secrets_in("b") is old_b


def test_a_relist_drops_what_is_gone_and_a_recreated_secret_is_parsed_again() -> None:
    views = SecretViews(Store())
    store = _listed(views, _obj("a", "one", "10"), _obj("b", "x", "12"))
    _listed(views, _obj("a", "one", "30", host="ghcr.io"))  # deleted and recreated, b gone
    assert [k.key for k in store.secrets_in("a")["one"].keys] == ["ghcr.io"]
    assert not store.has_namespace("b")


def test_objects_without_a_resource_version_are_never_taken_for_the_held_ones() -> None:
    views = SecretViews(Store())
    store = _listed(views, _obj("a", "one", ""))
    held = store.secrets_in("a")["one"]
    _listed(views, _obj("a", "one", "", host="quay.io"))
    assert store.secrets_in("a")["one"] is not held
    assert [k.key for k in store.secrets_in("a")["one"].keys] == ["quay.io"]


def test_a_watch_event_between_relists_is_what_the_next_relist_compares_against() -> None:
    views = SecretViews(Store())
    store = _listed(views, _obj("a", "one", "10"))
    views.apply(JSON_TYPE, "MODIFIED", _obj("a", "one", "15", host="quay.io"))
    by_event = store.secrets_in("a")["one"]
    _listed(views, _obj("a", "one", "15", host="quay.io"))
    assert store.secrets_in("a")["one"] is by_event
    _listed(views, _obj("a", "one", "16", host="gcr.io"))
    assert [k.key for k in store.secrets_in("a")["one"].keys] == ["gcr.io"]


def test_a_relist_keeps_equal_namespace_labels_as_they_were() -> None:
    store = Store()
    store.replace_namespaces({"a": {"team": "x"}, "b": {}})
    held = store.namespace_labels("a")
    store.replace_namespaces({"a": {"team": "x"}, "b": {"team": "y"}})
    assert store.namespace_labels("a") is held
    assert dict(store.namespace_labels("b") or {}) == {"team": "y"}


def test_equal_namespaces_names_and_types_are_one_string_however_many_secrets_carry_them() -> None:
    """A page parsed from JSON gives every value its own string; the store keeps one."""
    page = orjson.loads(
        orjson.dumps([_obj(ns, name, "1") for ns in ("a", "b") for name in ("regcred", "other")])
    )
    namespaces = orjson.loads(
        orjson.dumps([{"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
                      for n in ("a", "b")])
    )  # fmt: skip
    store = Store()
    _NamespaceHandler(store).replace(namespaces)
    SecretViews(store).replace_type(JSON_TYPE, page)
    secrets = store.all_secrets()
    assert len(secrets) == 4
    assert len({id(s.type) for s in secrets}) == 1
    assert len({id(s.name) for s in secrets}) == 2  # "regcred" and "other", once each
    for namespace, labels in store.namespaces().items():
        held = store.secrets_in(namespace)
        assert {id(s.namespace) for s in held.values()} == {id(namespace)}
        assert labels["kubernetes.io/metadata.name"] is namespace
