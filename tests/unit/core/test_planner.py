"""The replication planner: sources + namespaces + existing secrets -> actions, as a table."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import pytest

from webhook.core.model import RegistrySecret, secret_from_object
from webhook.core.planner import (
    HASH_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SELECTOR_ANNOTATION,
    SOURCE_ANNOTATION,
    ActionKind,
    Config,
    ProblemKind,
    SourceRef,
    copy_labels,
    copy_object,
    copy_update_patch,
    data_hash,
    desired_in,
    find_sources,
    is_our_object,
    plan,
)

REL = "psi-system"  # the release namespace, default source namespace
CONFIG = Config.build(REL)
DCJ = "kubernetes.io/dockerconfigjson"
DCFG = "kubernetes.io/dockercfg"


def data_for(*hosts: str, password: str = "pw", secret_type: str = DCJ) -> dict[str, str]:
    token = base64.b64encode(f"user:{password}".encode()).decode()
    auths = {h: {"auth": token} for h in hosts}
    if secret_type == DCFG:
        return {".dockercfg": base64.b64encode(json.dumps(auths).encode()).decode()}
    raw = json.dumps({"auths": auths}).encode()
    return {".dockerconfigjson": base64.b64encode(raw).decode()}


def secret(
    namespace: str,
    name: str,
    *,
    hosts: tuple[str, ...] = ("registry.example.com",),
    password: str = "pw",
    secret_type: str = DCJ,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
) -> RegistrySecret:
    obj = {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
        },
        "type": secret_type,
        "data": dict(data)
        if data is not None
        else data_for(*hosts, password=password, secret_type=secret_type),
    }
    made = secret_from_object(obj)
    assert made is not None
    DATA_HASH[id(made)] = data_hash(secret_type, obj["data"])
    return made


DATA_HASH: dict[int, str] = {}  # id(secret) -> hash of the data it was built from


def source(
    name: str = "reg",
    selector: str = "team=a",
    *,
    namespace: str = REL,
    **kw: Any,
) -> RegistrySecret:
    annotations = {SELECTOR_ANNOTATION: selector, **kw.pop("annotations", {})}
    return secret(namespace, name, annotations=annotations, **kw)


def src_hash(
    password: str = "pw", secret_type: str = DCJ, hosts: tuple[str, ...] = ("registry.example.com",)
) -> str:
    return data_hash(secret_type, data_for(*hosts, password=password, secret_type=secret_type))


def copy(
    namespace: str,
    name: str = "reg",
    *,
    of: str = f"{REL}/reg",
    password: str = "pw",
    hash_of: str | None = None,
    labels: Mapping[str, str] | None = None,
    secret_type: str = DCJ,
    hosts: tuple[str, ...] = ("registry.example.com",),
) -> RegistrySecret:
    return secret(
        namespace,
        name,
        password=password,
        hosts=hosts,
        secret_type=secret_type,
        labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE} if labels is None else labels,
        annotations={
            SOURCE_ANNOTATION: of,
            HASH_ANNOTATION: src_hash(hash_of or password, secret_type, hosts),
        },
    )


NAMESPACES: dict[str, dict[str, str]] = {
    REL: {},
    "kube-system": {"team": "a"},
    "a1": {"team": "a", "field.cattle.io/projectId": "p-abc12"},
    "a2": {"team": "a"},
    "b1": {"team": "b", "field.cattle.io/projectId": "p-xyz99"},
    "legacy": {"team": "a", "legacy": "true"},
    "optout": {"team": "a", "pullsecret-injector.io/inject": "disabled"},
    "plain": {},
}


@dataclass
class Case:
    id: str
    sources: list[RegistrySecret]
    existing: list[RegistrySecret] = field(default_factory=list)
    expect: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, namespace, name)
    problems: set[tuple[str, str | None]] = field(default_factory=set)  # (kind, namespace)
    hashes: dict[str, str] | None = None  # source "ns/name" -> hash; None: every source's
    namespaces: dict[str, dict[str, str]] = field(default_factory=lambda: NAMESPACES)
    config: Config = CONFIG
    only: tuple[str, ...] | None = None


def C(kind: str, ns: str, name: str = "reg") -> tuple[str, str, str]:
    return (kind, ns, name)


CASES = [
    Case(
        "equality selector: a copy in each matching namespace, none elsewhere",
        [source(selector="team=a")],
        expect={C("create", "a1"), C("create", "a2"), C("create", "legacy")},
    ),
    Case(
        "Rancher project selector",
        [source(selector="field.cattle.io/projectId=p-abc12")],
        expect={C("create", "a1")},
    ),
    Case(
        "empty selector: every namespace but kube-system, release, opted-out",
        [source(selector="")],
        expect={C("create", ns) for ns in ("a1", "a2", "b1", "legacy", "plain")},
    ),
    Case(
        "set-based selector: in, notin, does-not-exist",
        [source(selector="team in (a,b),!legacy,field.cattle.io/projectId notin (p-xyz99)")],
        expect={C("create", "a1"), C("create", "a2")},
    ),
    Case(
        "existence selector",
        [source(selector="field.cattle.io/projectId")],
        expect={C("create", "a1"), C("create", "b1")},
    ),
    Case(
        "up-to-date copies: nothing to do",
        [source(selector="team=b")],
        existing=[copy("b1")],
    ),
    Case(
        "rotation: the source's data hash differs from the copy's",
        [source(selector="team=b", password="new")],
        existing=[copy("b1", password="old")],
        expect={C("update", "b1")},
    ),
    Case(
        "hash not read yet: existing copies are not compared, missing ones created",
        [source(selector="field.cattle.io/projectId", password="new")],
        existing=[copy("b1", password="old")],
        hashes={},
        expect={C("create", "a1")},
    ),
    Case(
        "a copy whose labels drifted is updated",
        [source(selector="team=b", labels={"tier": "gold"})],
        existing=[copy("b1")],
        expect={C("update", "b1")},
    ),
    Case(
        "a copy whose data was edited (keys differ, hash annotation kept) is updated",
        [source(selector="team=b")],
        existing=[copy("b1", hosts=("evil.example.com",), hash_of="pw")],
        expect={C("update", "b1")},
    ),
    Case(
        "a source whose type changed: the copy is recreated (type is immutable)",
        [source(selector="team=b", secret_type=DCFG)],
        existing=[copy("b1")],
        expect={C("recreate", "b1")},
    ),
    Case(
        "a user's secret of the same name wins: untouched, reported",
        [source(selector="team=b")],
        existing=[secret("b1", "reg")],
        problems={("clash", "b1")},
    ),
    Case(
        "managed-by label without our source annotation is not ours",
        [source(selector="team=b")],
        existing=[secret("b1", "reg", labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE})],
        problems={("clash", "b1")},
    ),
    Case(
        "source annotation without our label is not ours",
        [source(selector="team=b")],
        existing=[secret("b1", "reg", annotations={SOURCE_ANNOTATION: f"{REL}/reg"})],
        problems={("clash", "b1")},
    ),
    Case(
        "namespace relabelled out of the selector: copy deleted",
        [source(selector="team=a")],
        existing=[copy("b1"), copy("a1"), copy("a2"), copy("legacy")],
        expect={C("delete", "b1")},
    ),
    Case(
        "annotation removed from the source: every copy deleted",
        [secret(REL, "reg")],
        existing=[copy("a1"), copy("b1")],
        expect={C("delete", "a1"), C("delete", "b1")},
    ),
    Case(
        "source deleted: every copy deleted, user secrets untouched",
        [],
        existing=[copy("a1"), copy("b1"), secret("a2", "reg")],
        expect={C("delete", "a1"), C("delete", "b1")},
    ),
    Case(
        "invalid selector: reported, serves nothing, its copies deleted",
        [source(selector="team in (a")],
        existing=[copy("a1")],
        expect={C("delete", "a1")},
        problems={("invalid_selector", None)},
    ),
    Case(
        "excluded namespaces lose copies: kube-system, release namespace, opted out",
        [source(selector="")],
        existing=[
            copy("kube-system"),
            copy("optout"),
            copy(REL, "other", of=f"{REL}/other"),
            *(copy(ns) for ns in ("a1", "a2", "b1", "legacy", "plain")),
        ],
        expect={C("delete", "kube-system"), C("delete", "optout"), C("delete", REL, "other")},
    ),
    Case(
        "copies in namespaces the store does not know are left alone",
        [],
        existing=[copy("ghost")],
    ),
    Case(
        "a copy named differently from its source is deleted",
        [source(selector="team=b")],
        existing=[copy("b1"), copy("b1", "old-name")],
        expect={C("delete", "b1", "old-name")},
    ),
    Case(
        "two sources of one name: first source namespace wins, the other is reported",
        [source(selector="team=b", namespace="platform"), source(selector="", namespace=REL)],
        config=Config.build(REL, ["platform", REL]),
        namespaces={**NAMESPACES, "platform": {}},
        expect={C("create", ns) for ns in ("a1", "a2", "b1", "legacy", "plain")},
        problems={("name_conflict", "b1")},
    ),
    Case(
        "the winner takes over the loser's copy (rebind)",
        [source(selector="team=b", namespace="platform"), source(selector="", namespace=REL)],
        config=Config.build(REL, ["platform", REL]),
        namespaces={REL: {}, "platform": {}, "b1": {"team": "b"}},
        existing=[copy("b1", of=f"{REL}/reg")],
        expect={C("update", "b1")},
        problems={("name_conflict", "b1")},
    ),
    Case(
        "source namespaces hold sources, never copies",
        [source(selector="", namespace="platform")],
        config=Config.build(REL, ["platform", "registries"]),
        namespaces={REL: {}, "platform": {}, "registries": {}, "x": {}},
        expect={C("create", "x")},
    ),
    Case(
        "a secret outside the source namespaces is not a source, and its copies are not ours",
        [source(selector="", namespace="a1")],
        existing=[copy("b1", of="a1/reg")],
        problems=set(),
    ),
    Case(
        "another installation's copies are left alone, even when they block a name",
        [source(selector="team=b")],
        existing=[copy("b1", of="elsewhere/reg"), copy("a1", "x", of="elsewhere/x")],
        problems={("clash", "b1")},
    ),
    Case(
        "a copy sitting in a source namespace is not a source",
        [
            secret(
                "platform",
                "reg",
                labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
                annotations={SOURCE_ANNOTATION: f"{REL}/reg", SELECTOR_ANNOTATION: ""},
            )
        ],
        config=Config.build(REL, ["platform"]),
        namespaces={REL: {}, "platform": {}, "x": {}},
        expect=set(),  # and a copy of a namespace this configuration does not own
    ),
    Case(
        "unparseable source: held (no create, no update), reported; deselection still deletes",
        [source(selector="team=a", data={".dockerconfigjson": "bm90IGpzb24="})],
        existing=[copy("a1", password="old"), copy("b1")],
        expect={C("delete", "b1")},
        problems={("unusable_source", None)},
    ),
    Case(
        "only: the plan is restricted to the namespaces named",
        [source(selector="team=a")],
        existing=[copy("b1")],
        only=("a2", "b1", "unknown"),
        expect={C("create", "a2"), C("delete", "b1")},
    ),
    Case(
        "cross-project isolation: project B's registry never lands in project A",
        [
            source("reg-a", "field.cattle.io/projectId=p-abc12"),
            source("reg-b", "field.cattle.io/projectId=p-xyz99"),
        ],
        existing=[copy("a1", "reg-b", of=f"{REL}/reg-b")],
        expect={C("create", "a1", "reg-a"), C("create", "b1", "reg-b"), C("delete", "a1", "reg-b")},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    hashes = (
        {SourceRef.parse(k): v for k, v in case.hashes.items()}
        if case.hashes is not None
        else {SourceRef(s.namespace, s.name): DATA_HASH[id(s)] for s in case.sources}
    )
    sources = find_sources(case.sources, case.config, hashes)  # type: ignore[arg-type]
    secrets: dict[str, dict[str, RegistrySecret]] = {}
    for s in [*case.existing, *case.sources]:
        secrets.setdefault(s.namespace, {})[s.name] = s
    result = plan(sources, case.namespaces, secrets, case.config, only=case.only)
    got = {(a.kind.value, a.namespace, a.name) for a in result.actions}
    assert got == case.expect
    assert {(p.kind.value, p.namespace) for p in result.problems} == case.problems
    assert list(result.actions) == sorted(result.actions)  # stable order
    assert all(a.reason for a in result.actions)


# ---- the objects written ------------------------------------------------------------------


def source_object(**meta: Any) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": "reg",
            "namespace": REL,
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {
                "team": "platform",
                "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/instance": "registries",
                "helm.sh/chart": "registries-1.0.0",
                "kustomize.toolkit.fluxcd.io/name": "infra",
            },
            "annotations": {SELECTOR_ANNOTATION: "team=a", "other": "x"},
            **meta,
        },
        "type": DCJ,
        "data": data_for("registry.example.com", password="s3cret"),
    }


def test_copy_object_is_a_labelled_annotated_replica() -> None:
    obj = copy_object(source_object(), "a1")
    assert obj["metadata"] == {
        "name": "reg",
        "namespace": "a1",
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "team": "platform"},
        "annotations": {
            SOURCE_ANNOTATION: f"{REL}/reg",
            HASH_ANNOTATION: data_hash(DCJ, source_object()["data"]),
        },
    }
    assert obj["type"] == DCJ
    assert obj["data"] == source_object()["data"]
    assert is_our_object(obj) == SourceRef(REL, "reg")
    # never a source itself: no selector annotation is carried over
    assert SELECTOR_ANNOTATION not in obj["metadata"]["annotations"]


def test_copy_labels_drop_ownership_labels_of_deployment_tools() -> None:
    assert copy_labels(
        {
            "team": "a",
            "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/instance": "x",
            "argocd.argoproj.io/instance": "y",
            "helm.toolkit.fluxcd.io/name": "z",
            "app.kubernetes.io/name": "registry",
        }
    ) == {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        "app.kubernetes.io/name": "registry",
        "team": "a",
    }


def test_data_hash_follows_data_and_type_only() -> None:
    a = data_for("r.example", password="one")
    assert data_hash(DCJ, a) == data_hash(DCJ, dict(reversed(list(a.items()))))
    assert data_hash(DCJ, a) != data_hash(DCJ, data_for("r.example", password="two"))
    assert data_hash(DCJ, a) != data_hash(DCFG, a)
    assert data_hash(DCJ, a).startswith("sha256:")
    assert "one" not in data_hash(DCJ, a)


def test_update_patch_rewrites_a_copy_and_refuses_anything_else() -> None:
    rotated = source_object()
    rotated["data"] = data_for("registry.example.com", password="rotated")
    stale = copy_object(source_object(), "a1")
    patched = jsonpatch.apply_patch(stale, copy_update_patch(rotated, SourceRef(REL, "reg")))
    assert patched == copy_object(rotated, "a1")

    users = {**stale, "metadata": {**stale["metadata"], "labels": {"team": "platform"}}}
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(users, copy_update_patch(rotated, SourceRef(REL, "reg")))
    other = copy_object({**source_object(), "metadata": {"name": "reg", "namespace": "x"}}, "a1")
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(other, copy_update_patch(rotated, SourceRef(REL, "reg")))


def test_source_refs_parse_strictly() -> None:
    assert SourceRef.parse("ns/name") == SourceRef("ns", "name")
    assert str(SourceRef("ns", "name")) == "ns/name"
    for bad in (None, "", "name", "/name", "ns/", "a/b/c"):
        assert SourceRef.parse(bad) is None


def test_desired_in_names_copies_after_sources() -> None:
    sources = find_sources([source("reg-a", "team=a"), source("reg-all", "")], CONFIG, {})
    desired = desired_in("a1", NAMESPACES["a1"], sources, CONFIG)
    assert sorted(desired.copies) == ["reg-a", "reg-all"]
    assert desired_in("b1", NAMESPACES["b1"], sources, CONFIG).copies.keys() == {"reg-all"}
    assert not desired_in("optout", NAMESPACES["optout"], sources, CONFIG).copies
    assert not desired_in(REL, {}, sources, CONFIG).copies


def test_selector_annotation_is_trimmed_and_checked_like_kubectl() -> None:
    (good,) = find_sources([source(selector="  team = a ")], CONFIG, {})
    assert good.selector is not None and good.selector.matches({"team": "a"})
    (bad,) = find_sources([source(selector="team=a,")], CONFIG, {})
    assert bad.selector is None and bad.selector_error
    result = plan([bad], NAMESPACES, {}, CONFIG)
    assert [p.kind for p in result.problems] == [ProblemKind.INVALID_SELECTOR]
    assert "team=a," in result.problems[0].message
    assert not result.of(ActionKind.CREATE)
