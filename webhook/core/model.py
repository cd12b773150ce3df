"""The value types the decision works on: what the webhook knows of a registry secret.

Pure: no I/O. Only namespace, name, type, labels, our own annotations and the registry
keys of a secret are kept: never a password, token or ``auth`` value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from webhook.kubelet.dockerconfig import (
    REGISTRY_SECRET_TYPES,
    ParsedDockerConfig,
    parse_docker_config,
)
from webhook.kubelet.keyring import RegistryKey

OUR_ANNOTATION_PREFIX = "pullsecret-injector.io/"


@dataclass(frozen=True, slots=True)
class RegistrySecret:
    """What the webhook knows of one registry secret: never its credentials."""

    namespace: str
    name: str
    type: str
    keys: tuple[RegistryKey, ...]
    error: str | None = None  # the kubelet could not parse it: never inject
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)  # ours only
    # The object's metadata.resourceVersion ("" from a manifest): a re-list reuses this
    # value for an object whose version it already holds (cluster/secret_views.py). Not
    # part of equality: two versions that reduce to the same secret are the same to us.
    resource_version: str = field(default="", compare=False)

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.keys)


def _same(value: str) -> str:
    return value


def registry_secret(
    namespace: str,
    name: str,
    secret_type: str,
    parsed: ParsedDockerConfig,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    resource_version: str = "",
    share: Callable[[str], str] = _same,
) -> RegistrySecret:
    """Build a RegistrySecret keeping only the metadata the webhook needs.

    `share` maps namespace, name and type to the one string kept for each value (the
    watchers pass ``sys.intern``: 50,000 secrets name 10,000 namespaces, two types and,
    where a registry is copied into every namespace of a project, a handful of names;
    parsed JSON gives every value its own string).
    """
    ours = {k: v for k, v in (annotations or {}).items() if k.startswith(OUR_ANNOTATION_PREFIX)}
    return RegistrySecret(
        namespace=share(namespace),
        name=share(name),
        type=share(secret_type),
        keys=_shared_keys(parsed.keys),
        error=parsed.error,
        labels=_shared_map(frozenset((labels or {}).items())),
        annotations=_shared_map(frozenset(ours.items())),
        resource_version=resource_version,
    )


# A large cluster holds many secrets with equal keys and labels (a registry copied into
# every namespace of a project): equal values share one immutable object, which keeps
# the store of 50,000 secrets several times smaller. Bounded; immutable values only.
@lru_cache(maxsize=16384)
def _shared_keys(keys: tuple[RegistryKey, ...]) -> tuple[RegistryKey, ...]:
    return keys


@lru_cache(maxsize=16384)
def _shared_map(items: frozenset[tuple[str, str]]) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def is_registry_type(secret_type: Any) -> bool:
    return secret_type in REGISTRY_SECRET_TYPES


def string_map(value: Any) -> dict[str, str]:
    """The str-valued entries of a mapping (labels, annotations); {} for anything else."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


ParseConfig = Callable[
    [str, Mapping[str, str] | None, Mapping[str, str] | None], ParsedDockerConfig
]


def secret_from_object(
    obj: Mapping[str, Any],
    parse: ParseConfig = parse_docker_config,
    share: Callable[[str], str] = _same,
) -> RegistrySecret | None:
    """A Secret object (API JSON or manifest) -> RegistrySecret; None if not a registry type.

    Only the metadata the webhook needs survives: the data is parsed (by `parse`, which a
    caller may memoise) for its registry keys and dropped (kubectl's
    last-applied-configuration annotation, which repeats the whole secret, is never kept).
    """
    secret_type = obj.get("type")
    if not is_registry_type(secret_type):
        return None
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    data = obj.get("data")
    string_data = obj.get("stringData")
    parsed = parse(
        str(secret_type),
        data if isinstance(data, Mapping) else None,
        string_data if isinstance(string_data, Mapping) else None,
    )
    return registry_secret(
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        str(secret_type),
        parsed,
        labels=string_map(meta.get("labels")),
        annotations=string_map(meta.get("annotations")),
        resource_version=resource_version_of(meta),
        share=share,
    )


def resource_version_of(meta: Mapping[str, Any]) -> str:
    """metadata.resourceVersion as a string ("" when absent or not a string)."""
    rv = meta.get("resourceVersion")
    return rv if isinstance(rv, str) else ""
