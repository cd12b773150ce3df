"""The decision: pod + the registry secrets in scope for its namespace -> names to add.

Pure: everything arrives as arguments; nothing here does I/O. The rules are the kubelet's
(see credentials.keyring_lookup): a secret is injected for an image exactly when the
kubelet's keyring, built from the pod's imagePullSecrets after the patch, would hand that
secret's credentials to the runtime for that image.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonpatch
import orjson

from webhook.core.model import RegistrySecret
from webhook.kubelet.keyring import RegistryKey, keyring_lookup
from webhook.kubelet.labels import Selector, parse_selector
from webhook.kubelet.reference import ImageRef, InvalidImage, parse_image

OPT_OUT_ANNOTATION = "pullsecret-injector.io/inject"
CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True, slots=True)
class Policy:
    """What the admin configured that shapes the decision."""

    secret_selector: Selector | None = None  # narrows the namespace's registry secrets
    # Registry hosts whose images always need credentials ("host" covers every port of it,
    # "host:port" only that port): an image there that no credential matches is warned about.
    private_registries: frozenset[str] = frozenset()

    @classmethod
    def build(cls, secret_selector: str | None, private_registries: Iterable[str] = ()) -> Policy:
        """From configuration text; raises SelectorError for an invalid selector."""
        return cls(
            secret_selector=parse_selector(secret_selector) if secret_selector else None,
            private_registries=frozenset(private_registries),
        )


@dataclass(frozen=True, slots=True)
class ImageDecision:
    """For one container image: which secrets the kubelet would use, and why."""

    field: str
    container: str
    image: str
    name: str | None  # normalised repository name, None when invalid
    invalid_reason: str | None
    used: tuple[str, ...]  # every secret (existing or added) whose credentials apply
    added: tuple[str, ...]  # the subset this decision adds
    via_default_registry: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one pod. `patch` is empty when nothing is added."""

    add: tuple[str, ...]
    patch: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]
    images: tuple[ImageDecision, ...] = ()
    not_added: tuple[tuple[str, str], ...] = ()  # (secret, why it was not added)
    reason: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.add)


@dataclass(slots=True)
class _Scope:
    candidates: dict[str, RegistrySecret] = field(default_factory=dict)
    not_added: dict[str, str] = field(default_factory=dict)


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for fld in CONTAINER_FIELDS:
        items = spec.get(fld)
        if not isinstance(items, list):
            continue
        for c in items:
            if isinstance(c, Mapping):
                yield fld, str(c.get("name", "")), c.get("image")


def existing_pull_secrets(spec: Mapping[str, Any]) -> list[str]:
    """The names already in spec.imagePullSecrets, in order (entries without a name kept out)."""
    entries = spec.get("imagePullSecrets")
    if not isinstance(entries, list):
        return []
    return [e["name"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str)]


def _scope(secrets: Mapping[str, RegistrySecret], existing: set[str], policy: Policy) -> _Scope:
    scope = _Scope()
    for name in sorted(secrets):
        secret = secrets[name]
        if name in existing:
            continue
        if policy.secret_selector is not None and not policy.secret_selector.matches(secret.labels):
            scope.not_added[name] = f"its labels do not match {policy.secret_selector.text!r}"
        elif secret.error is not None:
            scope.not_added[name] = f"the kubelet cannot parse it ({secret.error})"
        elif not secret.keys:
            scope.not_added[name] = "it holds no registry credentials"
        else:
            scope.candidates[name] = secret
    return scope


def _is_private(ref: ImageRef, private: frozenset[str]) -> bool:
    """Whether the image's registry is on the list; an entry without a port covers all ports."""
    host = ref.registry_host
    if host in private or ref.domain in private:
        return True
    bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return bare in private


def json_patch(spec: Mapping[str, Any], add: Sequence[str]) -> tuple[dict[str, Any], ...]:
    """JSON Patch appending `add` to spec.imagePullSecrets (created when absent or null)."""
    if not add:
        return ()
    # fresh objects for every caller, decoded from the validated patch of these inputs
    return tuple(
        orjson.loads(_patch_json(isinstance(spec.get("imagePullSecrets"), list), tuple(add)))
    )


@lru_cache(maxsize=1024)
def _patch_json(append: bool, add: tuple[str, ...]) -> bytes:
    """The patch built (and validated) by jsonpatch, once per distinct input."""
    entries = [{"name": n} for n in add]
    ops: list[dict[str, Any]]
    if append:
        ops = [{"op": "add", "path": "/spec/imagePullSecrets/-", "value": e} for e in entries]
    else:
        ops = [{"op": "add", "path": "/spec/imagePullSecrets", "value": entries}]
    return orjson.dumps(jsonpatch.JsonPatch(ops).patch)


@dataclass(slots=True)
class _Keyring:
    """What one namespace's secrets and one pod's existing entries give every container.

    `entries` is the kubelet's keyring of the pod after the patch: the existing entries
    that name a usable secret, in order, then the candidates. `images` remembers the
    decision (and warning) for each (field, container name, image) seen (bounded).
    """

    namespace: str
    entries: tuple[tuple[str, Sequence[RegistryKey]], ...]
    scope: _Scope
    warnings: tuple[str, ...]  # about the existing entries
    images: dict[tuple[str, str, str], tuple[ImageDecision, str | None]] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class _NamespaceMemo:
    secrets: Mapping[str, RegistrySecret]  # the snapshot everything here was derived from
    keyrings: dict[tuple[str, ...], _Keyring] = field(default_factory=dict)


_MAX_IMAGES_PER_KEYRING = 512
_MAX_KEYRINGS_PER_NAMESPACE = 64


def _keyring(
    secrets: Mapping[str, RegistrySecret],
    existing: tuple[str, ...],
    namespace: str,
    policy: Policy,
) -> _Keyring:
    warnings: list[str] = []
    entries: list[tuple[str, Sequence[RegistryKey]]] = []
    for name in existing:
        known = secrets.get(name)
        if known is None:
            warnings.append(
                f"imagePullSecrets entry {name!r} names no registry secret in namespace "
                f"{namespace!r}: the kubelet will pull without it"
            )
        elif known.error is not None:
            warnings.append(
                f"imagePullSecrets entry {name!r} cannot be parsed by the kubelet "
                f"({known.error}): every pull of this pod will fail"
            )
        else:
            entries.append((name, known.keys))
    scope = _scope(secrets, set(existing), policy)
    entries.extend((name, s.keys) for name, s in scope.candidates.items())
    return _Keyring(namespace, tuple(entries), scope, tuple(warnings))


def _image(
    ring: _Keyring, fld: str, container: str, image: object, policy: Policy
) -> tuple[ImageDecision, str | None]:
    """The decision for one container's image, and the warning it gives, if any."""
    ref = (
        parse_image(image)
        if isinstance(image, str)
        else InvalidImage(repr(image), "image is not a string")
    )
    if isinstance(ref, InvalidImage):
        return (
            ImageDecision(fld, container, ref.original, None, ref.reason, (), (), False),
            f"{fld} {container!r}: image {ref.original!r} is not a valid reference "
            f"({ref.reason}); no credentials injected for it",
        )
    match = keyring_lookup(ring.entries, ref.name)
    new = tuple(n for n in match.secrets if n in ring.scope.candidates)
    warning = None
    if not match.secrets and _is_private(ref, policy.private_registries):
        warning = (
            f"{fld} {container!r}: no registry secret in namespace {ring.namespace!r} has "
            f"credentials for {ref.name!r} ({ref.registry_host} is a private registry)"
        )
    decision = ImageDecision(
        fld, container, ref.original, ref.name, None, match.secrets, new, match.via_default_registry
    )
    return decision, warning


class Decider:
    """decide() for one policy, remembering what it derived from each namespace's secrets.

    Building a namespace's keyring and matching image names against it cost most of a
    decision; pods of one namespace mostly share both. The store replaces a namespace's
    mapping whenever one of its secrets changes and never mutates it (store.py), so what
    was derived from one mapping object stays right while the store hands out that same
    object: a memo is used only for the very object it was derived from (held, so its
    identity cannot be reused) and dropped when the namespace's mapping changes. What is
    remembered is immutable (ImageDecision, str), so decisions can share it. Bounded: at
    most `max_namespaces` namespaces (oldest dropped first), 64 sets of existing entries
    per namespace and 512 container images per set. Not thread-safe: one per event loop.
    """

    def __init__(self, policy: Policy, max_namespaces: int = 4096) -> None:
        self.policy = policy
        self._max_namespaces = max_namespaces
        self._memo: dict[str, _NamespaceMemo] = {}

    def _keyring(
        self, namespace: str, secrets: Mapping[str, RegistrySecret], existing: tuple[str, ...]
    ) -> _Keyring:
        memo = self._memo.get(namespace)
        if memo is None or memo.secrets is not secrets:
            if memo is None and len(self._memo) >= self._max_namespaces:
                del self._memo[next(iter(self._memo))]
            memo = self._memo[namespace] = _NamespaceMemo(secrets)
        ring = memo.keyrings.get(existing)
        if ring is None:
            ring = _keyring(secrets, existing, namespace, self.policy)
            if len(memo.keyrings) < _MAX_KEYRINGS_PER_NAMESPACE:
                memo.keyrings[existing] = ring
        return ring

    def decide(
        self, pod: Mapping[str, Any], namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Decision:
        """Which in-scope secrets to append to the pod's imagePullSecrets, and the patch."""
        metadata = pod.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        if isinstance(annotations, Mapping) and annotations.get(OPT_OUT_ANNOTATION) == "false":
            return Decision((), (), (), reason=f"pod annotation {OPT_OUT_ANNOTATION}: 'false'")
        spec = pod.get("spec")
        if not isinstance(spec, Mapping):
            return Decision((), (), (), reason="pod has no spec")

        ring = self._keyring(namespace, secrets, tuple(dict.fromkeys(existing_pull_secrets(spec))))
        warnings = list(ring.warnings)
        images: list[ImageDecision] = []
        added: set[str] = set()
        for fld, container, image in _containers(spec):
            key = (fld, container, image)
            known = ring.images.get(key) if type(image) is str else None
            if known is None:
                known = _image(ring, fld, container, image, self.policy)
                if type(image) is str and len(ring.images) < _MAX_IMAGES_PER_KEYRING:
                    ring.images[key] = known
            decision, warning = known
            images.append(decision)
            added.update(decision.added)
            if warning is not None:
                warnings.append(warning)

        add = tuple(sorted(added))
        not_added = dict(ring.scope.not_added)
        for name in ring.scope.candidates:
            if name not in added:
                not_added[name] = "no image of the pod is pulled with its credentials"
        return Decision(
            add=add,
            patch=json_patch(spec, add),
            warnings=tuple(warnings),
            images=tuple(images),
            not_added=tuple(sorted(not_added.items())),
            reason=f"adds {', '.join(add)}" if add else "no in-scope secret is needed",
        )


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    secrets: Mapping[str, RegistrySecret],
    policy: Policy,
) -> Decision:
    """Which in-scope secrets to append to the pod's imagePullSecrets, and the patch."""
    return Decider(policy).decide(pod, namespace, secrets)
