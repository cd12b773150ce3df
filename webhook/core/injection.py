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
# Real pods have a handful of containers, rarely dozens; a thousand is far beyond any
# workload yet decided in about 30 ms (bench/), so beyond it the work is not done at all.
DEFAULT_MAX_CONTAINERS = 1000


@dataclass(frozen=True, slots=True)
class Policy:
    """What the admin configured that shapes the decision."""

    secret_selector: Selector | None = None  # narrows the namespace's registry secrets
    # Registry hosts whose images always need credentials ("host" covers every port of it,
    # "host:port" only that port): an image there that no credential matches is warned about.
    private_registries: frozenset[str] = frozenset()
    # A pod with more containers than this (all three kinds together) is not decided: it is
    # admitted unchanged with a warning (issue 11: 45,000 took over a second of CPU).
    max_containers: int = DEFAULT_MAX_CONTAINERS

    @classmethod
    def build(
        cls,
        secret_selector: str | None,
        private_registries: Iterable[str] = (),
        max_containers: int = DEFAULT_MAX_CONTAINERS,
    ) -> Policy:
        """From configuration text; raises SelectorError for an invalid selector."""
        return cls(
            secret_selector=parse_selector(secret_selector) if secret_selector else None,
            private_registries=frozenset(private_registries),
            max_containers=max_containers,
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
    # What core.admission derives from this decision for the response, kept here once it
    # is built: a Decider hands the same decision to every pod of a workload (its memo).
    # Not part of the decision's value (not compared, not shown).
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
            if isinstance(c, (dict, Mapping)):
                yield fld, str(c.get("name", "")), c.get("image")


def _container_count(spec: Mapping[str, Any]) -> int:
    return sum(len(v) for f in CONTAINER_FIELDS if isinstance(v := spec.get(f), list))


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


def _patch_ops(append: bool, add: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """JSON Patch appending `add` to spec.imagePullSecrets: to the list (`append`: the pod
    has one), else created (absent or null)."""
    if not add:
        return ()
    # fresh objects for every decision, decoded from the validated patch of these inputs
    return tuple(orjson.loads(_patch_json(append, add)))


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


# (spec.imagePullSecrets is a list, the containers: (field, name, image) each)
_PodKey = tuple[bool, tuple[tuple[str, str, str], ...]]


def _pod_key(
    unknown: Sequence[str], append: bool, found: Sequence[tuple[str, str, Any]]
) -> _PodKey | None:
    """What a decision reads of a pod besides its namespace's secrets and the existing
    entries that name one of them (its keyring's key); None: not to be remembered. A pod
    with entries that name no secret of the namespace is not: keys never hold names a
    pod's author made up (issue 11), only what the workload's pods share."""
    if unknown or len(found) > _MAX_POD_KEY_CONTAINERS:
        return None
    chars = 0
    for _, container, image in found:
        if type(image) is not str:
            return None
        chars += len(container) + len(image)
    if chars > _MAX_POD_KEY_CHARS:
        return None
    return append, tuple(found)


def _pod_cost(key: _PodKey, decision: Decision) -> int:
    """The key, the decision and what is derived from it for the response (Decision.derived:
    about the images' text again in its audit annotation, the warnings again, the patch)."""
    return (
        _ENTRY_COST * (4 + len(key[1]) + len(decision.images))
        + 2 * sum(_text_cost(*c) for c in key[1])
        + 2 * _text_cost(*decision.warnings)
        + _text_cost(*decision.add)
        + 200 * len(decision.patch)
        + sum(_text_cost(n, why) for n, why in decision.not_added)
    )


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
    # whole decisions, keyed on everything else of the pod they read (_pod_key): the pods
    # of one workload are decided once (bounded like the rest; what the response derives
    # from a decision is kept on it, Decision.derived, and counted in _pod_cost)
    pods: dict[_PodKey, Decision] = field(default_factory=dict)


@dataclass(slots=True)
class _NamespaceMemo:
    secrets: Mapping[str, RegistrySecret]  # the snapshot everything here was derived from
    keyrings: dict[tuple[str, ...], _Keyring] = field(default_factory=dict)
    entries: int = 0  # keyrings and images remembered here (counted in Decider's budget)
    size: int = 0  # their estimated bytes


_MAX_IMAGES_PER_KEYRING = 512
_MAX_PODS_PER_KEYRING = 64
# A pod is remembered whole only with this many containers (all kinds) and key characters
# at most: a workload's pods have a few; anything larger is decided image by image.
_MAX_POD_KEY_CONTAINERS = 32
_MAX_POD_KEY_CHARS = 4096
_MAX_KEYRINGS_PER_NAMESPACE = 64
# ---- memory bounds of the Decider memo (issue 11, item 1) ----
# Whatever a request holds, the memo stays under both budgets: entries (keyrings and
# images) and estimated bytes, across every namespace, least recently used dropped first.
# A normal namespace needs a few keyrings and a few dozen images (a few KiB each at most);
# the budgets hold thousands of such namespaces and cap what hostile pods can leave behind.
DEFAULT_MEMO_MAX_ENTRIES = 65_536
DEFAULT_MEMO_MAX_BYTES = 16 * 1024 * 1024
# An image reference is at most 255 characters of name plus a tag (128) and a digest (71);
# a container name is a DNS label (63). Anything longer is decided, never remembered.
_MAX_MEMO_KEY_CHARS = 600
# Warnings about imagePullSecrets entries that name no registry secret: the first few are
# spelled out, the rest summed up in one line (the API server truncates warnings anyway).
MAX_ENTRY_WARNINGS = 10
_ENTRY_COST = 200  # bytes: object headers, dict slots and tuple of one memo entry


def _text_cost(*texts: str | None) -> int:
    return sum(len(t) + 50 for t in texts if t is not None)


def _keyring_cost(ring: _Keyring) -> int:
    scope = ring.scope
    return (
        _ENTRY_COST
        + 64 * len(ring.entries)
        + sum(_text_cost(n) for n in scope.candidates)
        + sum(_text_cost(n, why) for n, why in scope.not_added.items())
        + _text_cost(*ring.warnings)
    )


def _image_cost(key: tuple[str, str, str], known: tuple[ImageDecision, str | None]) -> int:
    decision, warning = known
    return (
        _ENTRY_COST * 2
        + _text_cost(*key)
        + _text_cost(decision.name, warning)
        + 8 * (len(decision.used) + len(decision.added))
    )


def _split_entries(
    spec: Mapping[str, Any], secrets: Mapping[str, RegistrySecret]
) -> tuple[tuple[str, ...], list[str], int]:
    """The pod's imagePullSecrets entries as (the distinct names of a secret of the namespace
    in order, the first MAX_ENTRY_WARNINGS distinct other names, how many other entries
    follow those). Nothing here grows with the entries the pod's author made up."""
    entries = spec.get("imagePullSecrets")
    known: dict[str, None] = {}
    unknown: dict[str, None] = {}
    more = 0
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("name") if isinstance(entry, (dict, Mapping)) else None
        if not isinstance(name, str) or name in known or name in unknown:
            continue
        if name in secrets:
            known[name] = None
        elif len(unknown) < MAX_ENTRY_WARNINGS:
            unknown[name] = None
        else:
            more += 1
    return tuple(known), list(unknown), more


def _unknown_entry_warnings(unknown: Sequence[str], more: int, namespace: str) -> list[str]:
    """Warnings for entries naming no registry secret: MAX_ENTRY_WARNINGS, then a count."""
    warnings = [
        f"imagePullSecrets entry {name!r} names no registry secret in namespace "
        f"{namespace!r}: the kubelet will pull without it"
        for name in unknown
    ]
    if more:
        warnings.append(
            f"and {more} more imagePullSecrets entries name no registry secret in "
            f"namespace {namespace!r}"
        )
    return warnings


def _keyring(
    secrets: Mapping[str, RegistrySecret],
    existing: tuple[str, ...],
    namespace: str,
    policy: Policy,
) -> _Keyring:
    """The keyring of the existing entries that name a registry secret (`existing`)."""
    warnings: list[str] = []
    entries: list[tuple[str, Sequence[RegistryKey]]] = []
    for name in existing:
        known = secrets[name]
        if known.error is not None:
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
    decision; pods of one namespace mostly share both, and the pods of one workload share
    the whole decision: it is remembered too, keyed on the containers (field, name, image)
    and the form of imagePullSecrets, and handed out as the same object (never changed:
    the response derived from it is kept on it, Decision.derived). The store replaces a namespace's
    mapping whenever one of its secrets changes and never mutates it (store.py), so what
    was derived from one mapping object stays right while the store hands out that same
    object: a memo is used only for the very object it was derived from (held, so its
    identity cannot be reused) and dropped when the namespace's mapping changes. What is
    remembered is immutable (ImageDecision, str), so decisions can share it.

    Bounded whatever the requests hold (issue 11): keyrings are keyed on the existing
    entries that name a secret of the namespace (cluster state), never on the names a pod
    makes up; images longer than a valid reference are not remembered; and the whole memo
    stays under `max_entries` entries and `max_bytes` estimated bytes, least recently used
    namespace dropped first (also at most `max_namespaces` namespaces, 64 keyrings per
    namespace and 512 images per keyring). Not thread-safe: one per event loop.
    """

    def __init__(
        self,
        policy: Policy,
        max_namespaces: int = 4096,
        *,
        max_entries: int = DEFAULT_MEMO_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MEMO_MAX_BYTES,
    ) -> None:
        self.policy = policy
        self._max_namespaces = max_namespaces
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._memo: dict[str, _NamespaceMemo] = {}
        self._entries = 0
        self._bytes = 0

    def memo_size(self) -> tuple[int, int]:
        """(entries, estimated bytes) remembered now."""
        return self._entries, self._bytes

    def _drop(self, namespace: str) -> None:
        memo = self._memo.pop(namespace)
        self._entries -= memo.entries
        self._bytes -= memo.size

    def _admit(self, memo: _NamespaceMemo, cost: int) -> bool:
        """Make room for one entry of `cost` bytes in `memo`, dropping the least recently
        used other namespaces; False when it cannot fit (it is then not remembered)."""
        if cost > self._max_bytes:
            return False
        while self._entries + 1 > self._max_entries or self._bytes + cost > self._max_bytes:
            oldest = next(iter(self._memo))
            if self._memo[oldest] is memo:
                return False
            self._drop(oldest)
        memo.entries += 1
        memo.size += cost
        self._entries += 1
        self._bytes += cost
        return True

    def _namespace(self, namespace: str, secrets: Mapping[str, RegistrySecret]) -> _NamespaceMemo:
        memo = self._memo.pop(namespace, None)  # re-inserted last: most recently used
        if memo is not None and memo.secrets is not secrets:
            self._entries -= memo.entries
            self._bytes -= memo.size
            memo = None
        if memo is None:
            while len(self._memo) >= self._max_namespaces:
                self._drop(next(iter(self._memo)))
            memo = _NamespaceMemo(secrets)
        self._memo[namespace] = memo
        return memo

    def _keyring(self, memo: _NamespaceMemo, namespace: str, existing: tuple[str, ...]) -> _Keyring:
        ring = memo.keyrings.get(existing)
        if ring is None:
            ring = _keyring(memo.secrets, existing, namespace, self.policy)
            if len(memo.keyrings) < _MAX_KEYRINGS_PER_NAMESPACE and self._admit(
                memo, _keyring_cost(ring)
            ):
                memo.keyrings[existing] = ring
        return ring

    def decide(
        self, pod: Mapping[str, Any], namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Decision:
        """Which in-scope secrets to append to the pod's imagePullSecrets, and the patch."""
        # (dict, Mapping) here and below: a dict (what orjson decodes) is told at once, where
        # the ABC's check alone costs about as much as the rest of the test (issue 14)
        metadata = pod.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, (dict, Mapping)) else None
        opt_out = isinstance(annotations, (dict, Mapping)) and annotations.get(OPT_OUT_ANNOTATION)
        if opt_out == "false":
            return Decision((), (), (), reason=f"pod annotation {OPT_OUT_ANNOTATION}: 'false'")
        spec = pod.get("spec")
        if not isinstance(spec, (dict, Mapping)):
            return Decision((), (), (), reason="pod has no spec")
        count = _container_count(spec)
        if count > self.policy.max_containers:
            why = (
                f"pod has {count} containers, more than the {self.policy.max_containers} "
                "pullsecret-injector decides for: no imagePullSecrets injected"
            )
            return Decision((), (), (why,), reason=why)

        # The keyring depends only on the entries that name a secret of the namespace; the
        # others (any number, made up by the pod's author) only give warnings, never memo keys.
        existing, unknown, more = _split_entries(spec, secrets)
        memo = self._namespace(namespace, secrets)
        ring = self._keyring(memo, namespace, existing)
        found = list(_containers(spec))
        append = isinstance(spec.get("imagePullSecrets"), list)
        pod_key = _pod_key(unknown, append, found)
        if pod_key is not None:
            remembered = ring.pods.get(pod_key)
            if remembered is not None:
                return remembered
        decision = self._decide(
            memo, ring, existing, found, unknown=unknown, more=more, append=append
        )
        if (
            pod_key is not None
            and len(ring.pods) < _MAX_PODS_PER_KEYRING
            and memo.keyrings.get(existing) is ring
            and self._admit(memo, _pod_cost(pod_key, decision))
        ):
            ring.pods[pod_key] = decision
        return decision

    def _decide(
        self,
        memo: _NamespaceMemo,
        ring: _Keyring,
        existing: tuple[str, ...],
        found: list[tuple[str, str, Any]],
        *,
        unknown: list[str],
        more: int,
        append: bool,
    ) -> Decision:
        """The decision for a pod's containers (`found`) with this keyring, image by image."""
        warnings = _unknown_entry_warnings(unknown, more, ring.namespace) + list(ring.warnings)
        images: list[ImageDecision] = []
        added: set[str] = set()
        for fld, container, image in found:
            key = (fld, container, image)
            rememberable = type(image) is str and len(container) + len(image) <= _MAX_MEMO_KEY_CHARS
            known = ring.images.get(key) if rememberable else None
            if known is None:
                known = _image(ring, fld, container, image, self.policy)
                if (
                    rememberable
                    and len(ring.images) < _MAX_IMAGES_PER_KEYRING
                    and memo.keyrings.get(existing) is ring
                    and self._admit(memo, _image_cost(key, known))
                ):
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
            patch=_patch_ops(append, add),
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
