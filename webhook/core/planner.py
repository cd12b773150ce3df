"""Project and cluster registries: which copies should exist, and what to do to get there.

Pure: no I/O, no clock, no Kubernetes client. Everything arrives as arguments (what the
store knows of the cluster, plus the data hash of each source that the controller read),
and the answer is a `Plan` of create/update/recreate/delete actions and the problems to
report. webhook/replication/ carries plans out; tests/unit/core/test_planner.py
holds the rules below to a table.

A *source* is a registry secret in one of the configured source namespaces carrying the
annotation ``pullsecret-injector.io/namespace-selector``. The selector (a Kubernetes
label selector, set-based forms included; the empty string selects every namespace)
picks the namespaces it serves. In each of them a *copy* named after the source holds
the source's data, type and labels (minus ownership labels of Helm, Argo CD and Flux),
is labelled ``app.kubernetes.io/managed-by: pullsecret-injector`` and annotated with its
source (``pullsecret-injector.io/source: <namespace>/<name>``) and a hash of the source's
data (``pullsecret-injector.io/source-hash: sha256:<hex>``).

Rules:

- Never served: ``kube-system``, the release namespace, the source namespaces (they hold
  sources, not copies) and namespaces labelled ``pullsecret-injector.io/inject=disabled``.
- A secret is ours exactly when it carries the managed-by label *and* a source annotation
  naming a secret in one of the configured source namespaces. Anything else is never
  created over, updated or deleted: a user's secret of the copy's name wins, and the clash
  is reported. (Copies of another installation, or of a source namespace removed from the
  configuration, are left alone too.)
- Two sources of the same name selecting one namespace: the first wins (source
  namespaces in configured order), the other is reported.
- A copy is updated when the source's data hash, type (recreated: the type of a Secret is
  immutable), copy labels or registry keys differ; deleted when its namespace is no longer
  served (selector, exclusion), its source lost the annotation or its selector became
  invalid, or the source is gone.
- A source whose data the kubelet cannot parse is held: its copies are neither created nor
  updated (existing ones keep the last good data) until it is fixed.
- Namespaces the caller does not know (absent from ``namespaces``) are left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from webhook.core.model import RegistrySecret
from webhook.kubelet.keyring import RegistryKey
from webhook.kubelet.labels import Selector, SelectorError, parse_selector

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pullsecret-injector"
SELECTOR_ANNOTATION = "pullsecret-injector.io/namespace-selector"
SOURCE_ANNOTATION = "pullsecret-injector.io/source"
HASH_ANNOTATION = "pullsecret-injector.io/source-hash"
INJECT_LABEL = "pullsecret-injector.io/inject"
INJECT_DISABLED = "disabled"
ALWAYS_EXCLUDED = frozenset({"kube-system"})

# Labels a copy does not inherit from its source: they tell Helm, Argo CD and Flux which
# release or application owns an object, and a copy carrying them would be adopted, shown
# as drift or pruned by those tools. (The managed-by label is replaced by ours.)
_OWNER_LABELS = frozenset(
    {
        MANAGED_BY_LABEL,
        "app.kubernetes.io/instance",
        "helm.sh/chart",
        "argocd.argoproj.io/instance",
    }
)
_OWNER_LABEL_SUFFIXES = ("fluxcd.io",)  # kustomize.toolkit.fluxcd.io/name, helm.toolkit...


@dataclass(frozen=True, slots=True, order=True)
class SourceRef:
    """A source secret: namespace and name (``namespace/name`` in annotations and logs)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str | None) -> SourceRef | None:
        if not text or text.count("/") != 1:
            return None
        namespace, name = text.split("/")
        return cls(namespace, name) if namespace and name else None


@dataclass(frozen=True, slots=True)
class Config:
    """Where sources live and which namespaces are never served."""

    source_namespaces: tuple[str, ...]
    release_namespace: str
    always_excluded: frozenset[str] = ALWAYS_EXCLUDED

    @classmethod
    def build(cls, release_namespace: str, source_namespaces: Iterable[str] = ()) -> Config:
        """Source namespaces in the order given (first wins a name conflict); default: release."""
        ordered = tuple(dict.fromkeys(ns for ns in source_namespaces if ns))
        return cls(ordered or (release_namespace,), release_namespace)

    def excluded(self, namespace: str, labels: Mapping[str, str]) -> str | None:
        """Why no source serves `namespace`, or None when it may be served."""
        if namespace in self.always_excluded:
            return f"{namespace} is never served"
        if namespace == self.release_namespace:
            return "the release namespace is never served"
        if namespace in self.source_namespaces:
            return "a source namespace holds sources, not copies"
        if labels.get(INJECT_LABEL) == INJECT_DISABLED:
            return f"namespace opted out ({INJECT_LABEL}={INJECT_DISABLED})"
        return None

    def own_copy(self, secret: RegistrySecret) -> SourceRef | None:
        """The source of a copy this configuration manages: ours, from a source namespace.

        A copy made from another namespace (another installation's, or a namespace since
        removed from the configuration) is left alone like any secret we did not create.
        """
        ref = copy_source(secret)
        return ref if ref is not None and ref.namespace in self.source_namespaces else None

    def rank(self, namespace: str) -> int:
        try:
            return self.source_namespaces.index(namespace)
        except ValueError:
            return len(self.source_namespaces)


@dataclass(frozen=True, slots=True)
class Source:
    """A source registry as the planner sees it (never its data: only a hash of it)."""

    ref: SourceRef
    type: str
    selector_text: str
    selector: Selector | None  # None: the selector is invalid and serves nothing
    selector_error: str | None
    labels: Mapping[str, str]  # the labels its copies carry
    keys: tuple[RegistryKey, ...]
    parse_error: str | None  # the kubelet cannot parse its data: held
    data_hash: str | None = None  # None: not read yet (copies are created, not compared)

    @property
    def held(self) -> bool:
        return self.parse_error is not None

    def serves(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return (
            self.selector is not None
            and namespace != self.ref.namespace
            and self.selector.matches(labels)
        )


def copy_labels(source_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of a copy: the source's (so a --secret-selector picks copies as it picks
    sources), minus ownership labels of deployment tools, plus our managed-by label."""
    out = {
        k: v
        for k, v in source_labels.items()
        if k not in _OWNER_LABELS and not k.split("/", 1)[0].endswith(_OWNER_LABEL_SUFFIXES)
    }
    out[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    return dict(sorted(out.items()))


def copy_source(secret: RegistrySecret) -> SourceRef | None:
    """The source a secret is a copy of; None when it is not ours (never touched)."""
    if secret.labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    return SourceRef.parse(secret.annotations.get(SOURCE_ANNOTATION))


def is_copy(secret: RegistrySecret) -> bool:
    return copy_source(secret) is not None


def find_sources(
    secrets: Iterable[RegistrySecret], config: Config, hashes: Mapping[SourceRef, str]
) -> list[Source]:
    """The sources among `secrets`, ordered by source namespace (configured order), name.

    A copy (ours) is never a source, even when it sits in a source namespace.
    """
    found: list[Source] = []
    wanted = set(config.source_namespaces)
    for secret in secrets:
        if secret.namespace not in wanted or SELECTOR_ANNOTATION not in secret.annotations:
            continue
        if is_copy(secret):
            continue
        ref = SourceRef(secret.namespace, secret.name)
        text = secret.annotations[SELECTOR_ANNOTATION]
        selector: Selector | None
        try:
            selector, error = parse_selector(text.strip()), None
        except SelectorError as exc:
            selector, error = None, str(exc)
        found.append(
            Source(
                ref=ref,
                type=secret.type,
                selector_text=text,
                selector=selector,
                selector_error=error,
                labels=MappingProxyType(copy_labels(secret.labels)),
                keys=secret.keys,
                parse_error=secret.error,
                data_hash=hashes.get(ref),
            )
        )
    found.sort(key=lambda s: (config.rank(s.ref.namespace), s.ref.name, s.ref.namespace))
    return found


# ---- data: hashing and the objects written (pure, but they see the source's data) --------


def data_hash(secret_type: str, data: Mapping[str, Any] | None) -> str:
    """``sha256:<hex>`` of a secret's type and data (the base64 strings as stored).

    Stored on copies so a rotation is detected without holding any data. Whoever can read
    the annotation can read the copy's data itself, so the hash discloses nothing new.
    """
    canonical = json.dumps(
        {"type": secret_type, "data": dict(sorted((data or {}).items()))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def copy_object(source: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The Secret to create in `namespace` from a source Secret as read from the API."""
    meta = source.get("metadata") or {}
    ref = SourceRef(str(meta.get("namespace", "")), str(meta.get("name", "")))
    secret_type = str(source.get("type") or "")
    data = dict(source.get("data") or {})
    raw_labels = meta.get("labels")
    labels: Mapping[str, Any] = raw_labels if isinstance(raw_labels, Mapping) else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": ref.name,
            "namespace": namespace,
            "labels": copy_labels({str(k): str(v) for k, v in labels.items()}),
            "annotations": {
                SOURCE_ANNOTATION: str(ref),
                HASH_ANNOTATION: data_hash(secret_type, data),
            },
        },
        "type": secret_type,
        "data": data,
    }


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def copy_update_patch(source: Mapping[str, Any], current_source: SourceRef) -> list[dict[str, Any]]:
    """JSON Patch bringing a copy up to date with `source`.

    It opens with ``test`` operations: the API server applies it only if the secret is
    still ours and still a copy of `current_source` (otherwise 422, nothing written), so a
    user's secret that replaced the copy in the meantime is never overwritten.
    """
    wanted = copy_object(source, "")
    meta = wanted["metadata"]
    return [
        {
            "op": "test",
            "path": f"/metadata/labels/{_pointer(MANAGED_BY_LABEL)}",
            "value": MANAGED_BY_VALUE,
        },
        {
            "op": "test",
            "path": f"/metadata/annotations/{_pointer(SOURCE_ANNOTATION)}",
            "value": str(current_source),
        },
        {"op": "add", "path": "/data", "value": wanted["data"]},
        {"op": "add", "path": "/metadata/labels", "value": meta["labels"]},
        {
            "op": "add",
            "path": f"/metadata/annotations/{_pointer(SOURCE_ANNOTATION)}",
            "value": meta["annotations"][SOURCE_ANNOTATION],
        },
        {
            "op": "add",
            "path": f"/metadata/annotations/{_pointer(HASH_ANNOTATION)}",
            "value": meta["annotations"][HASH_ANNOTATION],
        },
    ]


def is_our_object(obj: Mapping[str, Any]) -> SourceRef | None:
    """The source of a Secret object read from the API when it is one of our copies."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if not isinstance(labels, Mapping) or labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return None
    if not isinstance(annotations, Mapping):
        return None
    value = annotations.get(SOURCE_ANNOTATION)
    return SourceRef.parse(value if isinstance(value, str) else None)


# ---- the plan ------------------------------------------------------------------------------


class ActionKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RECREATE = "recreate"  # the type changed: delete, then create
    DELETE = "delete"


class ProblemKind(StrEnum):
    INVALID_SELECTOR = "invalid_selector"
    UNUSABLE_SOURCE = "unusable_source"  # the kubelet cannot parse the source's data
    CLASH = "clash"  # a secret that is not ours has the copy's name
    NAME_CONFLICT = "name_conflict"  # two sources of one name serve one namespace


@dataclass(frozen=True, slots=True, order=True)
class Action:
    namespace: str
    name: str
    kind: ActionKind
    source: SourceRef | None  # the source to copy from (None for a delete)
    reason: str = field(compare=False)
    current_source: SourceRef | None = field(default=None, compare=False)  # of the copy


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    kind: ProblemKind
    source: SourceRef
    namespace: str | None
    message: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class Desired:
    """The copies one namespace should hold: copy name -> source, and the losers."""

    copies: Mapping[str, Source]
    conflicts: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    problems: tuple[Problem, ...]
    desired: int  # copies that should exist in the namespaces planned

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]


def clash_problem(ref: SourceRef, namespace: str) -> Problem:
    """A copy not made because a secret of its name that we did not create is there."""
    return Problem(
        ProblemKind.CLASH,
        ref,
        namespace,
        f"not copied into {namespace}: a secret named {ref.name!r} that "
        "pullsecret-injector did not create is there (it is left untouched)",
    )


def desired_in(
    namespace: str, labels: Mapping[str, str], sources: Iterable[Source], config: Config
) -> Desired:
    """The copies `namespace` should hold (sources in find_sources order: first wins)."""
    if config.excluded(namespace, labels) is not None:
        return Desired(MappingProxyType({}))
    copies: dict[str, Source] = {}
    conflicts: list[Problem] = []
    for source in sources:
        if not source.serves(namespace, labels):
            continue
        winner = copies.get(source.ref.name)
        if winner is None:
            copies[source.ref.name] = source
        else:
            conflicts.append(
                Problem(
                    ProblemKind.NAME_CONFLICT,
                    source.ref,
                    namespace,
                    f"not copied into {namespace}: {winner.ref} has the same name and comes first",
                )
            )
    return Desired(MappingProxyType(copies), tuple(conflicts))


def _update_reason(copy: RegistrySecret, ref: SourceRef, source: Source) -> str | None:
    if ref != source.ref:
        return f"now served by {source.ref} (was {ref})"
    if source.data_hash is not None and copy.annotations.get(HASH_ANNOTATION) != source.data_hash:
        return "source data changed"
    if dict(copy.labels) != dict(source.labels):
        return "labels differ from the source's"
    if source.data_hash is not None and (
        copy.keys != source.keys or copy.error != source.parse_error
    ):
        return "data differs from the source's"
    return None


def _delete_reason(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    ref: SourceRef,
    *,
    by_ref: Mapping[SourceRef, Source],
    config: Config,
) -> str:
    excluded = config.excluded(namespace, labels)
    if excluded is not None:
        return excluded
    source = by_ref.get(ref)
    if source is None:
        return f"source {ref} is gone (deleted, or no longer annotated)"
    if source.selector is None:
        return f"source {ref} has an invalid selector"
    if not source.serves(namespace, labels):
        return f"source {ref} no longer selects {namespace}"
    return f"named {name!r}, not after its source {ref}"


def plan(
    sources: Iterable[Source],
    namespaces: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, RegistrySecret]],
    config: Config,
    *,
    only: Iterable[str] | None = None,
) -> Plan:
    """Actions bringing the copies of `namespaces` (or of `only`) in line with `sources`.

    `namespaces` maps every known namespace to its labels; `secrets` maps a namespace to
    its registry secrets by name (namespaces without any may be absent).
    """
    ordered = list(sources)
    by_ref = {s.ref: s for s in ordered}
    problems: list[Problem] = []
    for source in ordered:
        if source.selector is None:
            problems.append(
                Problem(
                    ProblemKind.INVALID_SELECTOR,
                    source.ref,
                    None,
                    f"invalid {SELECTOR_ANNOTATION} {source.selector_text!r}: "
                    f"{source.selector_error}; it serves no namespace",
                )
            )
        elif source.held:
            problems.append(
                Problem(
                    ProblemKind.UNUSABLE_SOURCE,
                    source.ref,
                    None,
                    f"the kubelet cannot parse its data ({source.parse_error}); copies are "
                    "neither created nor updated until it is fixed",
                )
            )
    targets = sorted(namespaces) if only is None else sorted(set(only) & set(namespaces))
    actions: list[Action] = []
    desired_count = 0
    empty: Mapping[str, RegistrySecret] = MappingProxyType({})
    for namespace in targets:
        labels = namespaces[namespace]
        desired = desired_in(namespace, labels, ordered, config)
        problems.extend(desired.conflicts)
        existing = secrets.get(namespace, empty)
        desired_count += len(desired.copies)
        for name, source in desired.copies.items():
            current = existing.get(name)
            if current is None:
                if not source.held:
                    actions.append(
                        Action(namespace, name, ActionKind.CREATE, source.ref, "missing")
                    )
                continue
            ref = config.own_copy(current)
            if ref is None:
                problems.append(clash_problem(source.ref, namespace))
                continue
            if source.held:
                continue
            if current.type != source.type:
                actions.append(
                    Action(
                        namespace,
                        name,
                        ActionKind.RECREATE,
                        source.ref,
                        f"type {current.type} -> {source.type}",
                        ref,
                    )
                )
                continue
            reason = _update_reason(current, ref, source)
            if reason is not None:
                actions.append(Action(namespace, name, ActionKind.UPDATE, source.ref, reason, ref))
        for name, current in existing.items():
            if name in desired.copies:
                continue
            ref = config.own_copy(current)
            if ref is None:
                continue
            reason = _delete_reason(namespace, name, labels, ref, by_ref=by_ref, config=config)
            actions.append(Action(namespace, name, ActionKind.DELETE, None, reason, ref))
    return Plan(tuple(sorted(actions)), tuple(sorted(problems)), desired_count)
