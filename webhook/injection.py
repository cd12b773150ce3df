"""The decision: pod + the registry secrets in scope for its namespace -> names to add.

Pure: everything arrives as arguments; nothing here does I/O. The rules are the kubelet's
(see credentials.keyring_lookup): a secret is injected for an image exactly when the
kubelet's keyring, built from the pod's imagePullSecrets after the patch, would hand that
secret's credentials to the runtime for that image.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from webhook.credentials import RegistryKey, keyring_lookup
from webhook.images import ImageRef, InvalidImage, parse_image
from webhook.selectors import Selector, parse_selector
from webhook.store import RegistrySecret

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
    entries = [{"name": n} for n in add]
    ops: list[dict[str, Any]]
    if isinstance(spec.get("imagePullSecrets"), list):
        ops = [{"op": "add", "path": "/spec/imagePullSecrets/-", "value": e} for e in entries]
    else:
        ops = [{"op": "add", "path": "/spec/imagePullSecrets", "value": entries}]
    return tuple(jsonpatch.JsonPatch(ops).patch)


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    secrets: Mapping[str, RegistrySecret],
    policy: Policy,
) -> Decision:
    """Which in-scope secrets to append to the pod's imagePullSecrets, and the patch."""
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if isinstance(annotations, Mapping) and annotations.get(OPT_OUT_ANNOTATION) == "false":
        return Decision((), (), (), reason=f"pod annotation {OPT_OUT_ANNOTATION}: 'false'")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return Decision((), (), (), reason="pod has no spec")

    warnings: list[str] = []
    existing = existing_pull_secrets(spec)
    existing_set = set(existing)
    keyring: list[tuple[str, Sequence[RegistryKey]]] = []
    for name in dict.fromkeys(existing):
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
            keyring.append((name, known.keys))

    scope = _scope(secrets, existing_set, policy)
    keyring.extend((name, s.keys) for name, s in scope.candidates.items())

    images: list[ImageDecision] = []
    added: set[str] = set()
    for fld, container, image in _containers(spec):
        ref = (
            parse_image(image)
            if isinstance(image, str)
            else InvalidImage(repr(image), "image is not a string")
        )
        if isinstance(ref, InvalidImage):
            warnings.append(
                f"{fld} {container!r}: image {ref.original!r} is not a valid reference "
                f"({ref.reason}); no credentials injected for it"
            )
            images.append(
                ImageDecision(fld, container, ref.original, None, ref.reason, (), (), False)
            )
            continue
        match = keyring_lookup(keyring, ref.name)
        new = tuple(n for n in match.secrets if n in scope.candidates)
        added.update(new)
        if not match.secrets and _is_private(ref, policy.private_registries):
            warnings.append(
                f"{fld} {container!r}: no registry secret in namespace {namespace!r} has "
                f"credentials for {ref.name!r} ({ref.registry_host} is a private registry)"
            )
        images.append(
            ImageDecision(
                fld,
                container,
                image,
                ref.name,
                None,
                match.secrets,
                new,
                match.via_default_registry,
            )
        )

    add = tuple(sorted(added))
    not_added = dict(scope.not_added)
    for name in scope.candidates:
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
