"""The kubelet's credential keyring: which registry keys serve which image.

Pure: no I/O, standard library only. A port, to the letter, of kubernetes
``pkg/credentialprovider/keyring.go`` (Go's standard library semantics it relies on live
in :mod:`webhook.kubelet._go`):

* ``keyring.go`` ``BasicDockerKeyring.Add``: a location without a ``https://`` or
  ``http://`` prefix (lower case only) gets ``https://``; it is parsed with Go's
  ``url.Parse`` and skipped on error (bad port, bad ``%`` escape, control character,
  ``[`` anywhere but at the start of the host, a bracketed host that is not an IPv6
  address: the rules of current Go, since the October 2025 security releases; a host
  with several colons is judged by the last one, as Go does unless
  ``GODEBUG=urlstrictcolons=1``). Kubelets built with an older Go (every release up to
  late 2025; the kit's v1.28.7: go1.21.13) accept those bracket forms too
  (``reg[0-9].example.com``, a ``filepath.Match`` class; ``[registry]:5000``): such a
  key is kept, marked :attr:`RegistryKey.legacy`, and ``keyring_lookup`` answers for both
  kinds of kubelet at once (below). Query, fragment and
  user info are dropped; a leading ``/v1/`` or ``/v2/`` of the (decoded) path is cut
  to ``/``; the key is ``host`` plus the path unless that is empty or ``/``.
* ``keyring.go`` ``Lookup`` / ``URLsMatchStr``: both key and image are parsed as
  ``https://`` + text. A key serves an image when the ports are equal (no port is
  not ``:443``), the hosts have the same number of dot-separated labels, each key label
  matches its image label with Go's ``filepath.Match`` (case-sensitive; ``*`` never
  crosses a dot) and the key path is a **plain string prefix** of the image path:
  ``registry.example.com/team`` serves ``registry.example.com/teamwork/app`` too.
  Upstream checks ``strings.HasPrefix(targetURL.Path, globURL.Path)`` and its own
  test expects ``bar.example.com/pong`` to serve ``bar.example.com/pongz``; this module
  follows upstream, not a whole-segment reading. Every matching key contributes, the
  keys taken in reverse byte order (``quay.io/coreos`` before ``quay.io``). Only when
  no key of the whole keyring matches does ``Lookup`` fall back to the Docker Hub key
  ``index.docker.io`` (written e.g. ``https://index.docker.io/v1/``) for an image that
  ``isDefaultRegistryMatch``.
* Two kinds of kubelet, one answer: a cluster's nodes may run kubelets built with either
  Go. Where a legacy key, or an image only the older Go parses (``[00001::1]:5000/x``),
  makes the two Lookups differ, the result is every secret either would hand the
  runtime: a secret one kind of kubelet does not use costs nothing, a missing one fails
  the pull. Without brackets the two are one and the same Lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from webhook.kubelet._go import display, filepath_match, split_host_port, url_parse

__all__ = [
    "DEFAULT_REGISTRY_HOST",
    "KeyringMatch",
    "RegistryKey",
    "add_key",
    "is_default_registry_match",
    "key_matches",
    "keyring_lookup",
]

#: keyring.go defaultRegistryHost: the key ``https://index.docker.io/v1/`` is stored as.
DEFAULT_REGISTRY_HOST = "index.docker.io"
_DEFAULT_REGISTRY_RAW = DEFAULT_REGISTRY_HOST.encode()


class _Label(NamedTuple):
    """One host label of a key, compiled once: how it is matched against a label."""

    kind: int  # _ANY ("*"), _LITERAL (no glob metacharacter) or _GLOB
    pattern: bytes


_ANY, _LITERAL, _GLOB = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RegistryKey:
    """One keyring key as the kubelet's BasicDockerKeyring.Add stores it (host[:port][/path]).

    ``key`` is the stored text (bytes that are not UTF-8, which only ``%``-escapes can
    produce, are shown as ``%XX``). The other fields are derived once, when the key is
    made, so that matching on the admission path parses only the image:
    ``matchable`` is False when ``URLsMatchStr`` cannot parse the key (it then serves
    no image), ``host_labels``/``port``/``path`` are ``ParseSchemelessURL(key)`` split
    as ``URLsMatch`` splits it. ``legacy`` is True when only kubelets built with Go
    before its October 2025 security releases parse the key (they alone match with it).
    Equality and hashing use ``key`` alone.
    """

    key: str
    matchable: bool = field(init=False, repr=False, compare=False)
    legacy: bool = field(init=False, repr=False, compare=False)
    host_labels: tuple[str, ...] = field(init=False, repr=False, compare=False)
    port: str = field(init=False, repr=False, compare=False)
    path: str = field(init=False, repr=False, compare=False)
    _raw: bytes = field(init=False, repr=False, compare=False)
    _labels: tuple[_Label, ...] = field(init=False, repr=False, compare=False)
    _port: bytes = field(init=False, repr=False, compare=False)
    _path: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str):
            raise TypeError(f"RegistryKey.key must be a str, not {type(self.key).__name__}")
        _init_key(self, self.key.encode("utf-8", "surrogatepass"))

    @property
    def raw(self) -> bytes:
        """The key exactly as Go stores it (its identity in the keyring)."""
        return self._raw

    @classmethod
    def _from_raw(cls, raw: bytes) -> RegistryKey:
        """The key exactly as Go stores it (raw bytes); ``key`` is its display text."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "key", display(raw))
        _init_key(obj, raw)
        return obj


def _init_key(obj: RegistryKey, raw: bytes) -> None:
    setattr_ = object.__setattr__
    setattr_(obj, "_raw", raw)
    target = _parse_schemeless(raw)
    legacy = False
    if target is None:  # a key only an older Go parses, if it parses
        target = _parse_schemeless(raw, legacy=True)
        legacy = target is not None
    setattr_(obj, "legacy", legacy)
    if target is None:
        setattr_(obj, "matchable", False)
        setattr_(obj, "_labels", ())
        setattr_(obj, "_port", b"")
        setattr_(obj, "_path", b"")
    else:
        setattr_(obj, "matchable", True)
        setattr_(obj, "_labels", tuple(_compile_label(x) for x in target.labels))
        setattr_(obj, "_port", target.port)
        setattr_(obj, "_path", target.path)
    setattr_(obj, "host_labels", tuple(display(x.pattern) for x in obj._labels))
    setattr_(obj, "port", display(obj._port))
    setattr_(obj, "path", display(obj._path))


@dataclass(frozen=True, slots=True)
class KeyringMatch:
    """Which secrets the kubelet's keyring would hand the runtime for one image."""

    secrets: tuple[str, ...]  # secret names, in keyring order, no duplicates
    via_default_registry: bool  # True when matched only through the Docker Hub fallback


def key_matches(key: RegistryKey, image_name: str) -> bool:
    """URLsMatchStr(key, image_name): would this key serve this repository name?

    The Docker Hub fallback of ``Lookup`` is not part of this; see keyring_lookup. True
    when either kind of kubelet (current Go, or older Go: see the module) would.
    """
    if not isinstance(key, RegistryKey):
        return False
    target = _parse_image_name(image_name) or _parse_image_name(image_name, True)
    return target is not None and _matches(key, target)


def is_default_registry_match(image_name: str) -> bool:
    """The kubelet's isDefaultRegistryMatch."""
    if not isinstance(image_name, str):
        return False
    first, sep, _ = image_name.partition("/")
    if not first:
        return False
    if not sep:
        return True  # e.g. library/ubuntu
    if first in ("docker.io", "index.docker.io"):
        return True
    return "." not in first and ":" not in first


def keyring_lookup(
    keyring: Sequence[tuple[str, Sequence[RegistryKey]]], image_name: str
) -> KeyringMatch:
    """BasicDockerKeyring.Lookup over the given (secret name, keys) pairs for image_name.

    All secrets are Added into one keyring, in the given order. The result lists the
    secrets whose credentials Lookup returns, in Lookup order (keys in reverse byte
    order, each key's secrets in keyring order), without duplicates. Where a kubelet
    built with an older Go would get other secrets (a legacy key, an image only it
    parses; see the module), its secrets follow, so that either kind of node can pull.
    """
    target = _parse_image_name(image_name)
    # The older Go parses whatever the current one does, to the same host and path.
    legacy_target = target if target is not None else _parse_image_name(image_name, True)
    matched: dict[bytes, list[str]] = {}
    legacy_only: dict[bytes, list[str]] = {}  # what only an older-Go kubelet matches
    hub: list[str] = []
    for entry in keyring:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            continue
        name, keys = entry
        if not isinstance(name, str) or not isinstance(keys, (tuple, list, Sequence)):
            continue
        for key in keys:
            if not isinstance(key, RegistryKey):
                continue
            raw = key.raw
            if raw == _DEFAULT_REGISTRY_RAW:
                hub.append(name)
            if key.legacy or target is None:
                if legacy_target is not None and _matches(key, legacy_target):
                    legacy_only.setdefault(raw, []).append(name)
            elif _matches(key, target):
                matched.setdefault(raw, []).append(name)
    current = _resolve(matched, hub, image_name)
    if not legacy_only:
        return current
    older = _resolve({**matched, **legacy_only}, hub, image_name)
    answered = [m for m in (current, older) if m.secrets]
    return KeyringMatch(
        _unique([*current.secrets, *older.secrets]),
        via_default_registry=all(m.via_default_registry for m in answered),
    )


def _resolve(matched: dict[bytes, list[str]], hub: list[str], image_name: str) -> KeyringMatch:
    """Lookup's answer from its matches: keys in reverse byte order, else the fallback."""
    if matched:
        ordered = [name for raw in sorted(matched, reverse=True) for name in matched[raw]]
        return KeyringMatch(_unique(ordered), via_default_registry=False)
    if hub and is_default_registry_match(image_name):
        return KeyringMatch(_unique(hub), via_default_registry=True)
    return KeyringMatch((), via_default_registry=False)


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------------------
# Matching (keyring.go: ParseSchemelessURL, SplitURL, URLsMatch)
# --------------------------------------------------------------------------------------


class _Target(NamedTuple):
    labels: tuple[bytes, ...]
    port: bytes
    path: bytes


def _parse_image_name(image_name: object, legacy: bool = False) -> _Target | None:
    if not isinstance(image_name, str):
        return None
    return _parse_schemeless(image_name.encode("utf-8", "surrogatepass"), legacy)


def _parse_schemeless(text: bytes, legacy: bool = False) -> _Target | None:
    """ParseSchemelessURL then SplitURL; None when url.Parse fails."""
    parsed = url_parse(b"https://" + text, legacy)
    if parsed is None:
        return None
    host, path = parsed
    split = split_host_port(host)
    hostname, port = (host, b"") if split is None else split
    return _Target(tuple(hostname.split(b".")), port, path)


def _compile_label(label: bytes) -> _Label:
    if label == b"*":
        return _Label(_ANY, label)
    if any(c in label for c in b"*?[\\"):
        return _Label(_GLOB, label)
    return _Label(_LITERAL, label)


def _matches(key: RegistryKey, target: _Target) -> bool:
    """URLsMatch(key, target) with the key parsed in advance."""
    if not key.matchable or key._port != target.port:
        return False
    labels = key._labels
    if len(labels) != len(target.labels) or not target.path.startswith(key._path):
        return False
    for (kind, pattern), label in zip(labels, target.labels, strict=True):
        if kind == _LITERAL:
            if pattern != label:
                return False
        elif kind == _ANY:
            if b"/" in label:
                return False
        elif not filepath_match(pattern, label):
            return False
    return True


# --------------------------------------------------------------------------------------
# BasicDockerKeyring.Add
# --------------------------------------------------------------------------------------


def add_key(location: str) -> RegistryKey | None:
    """The key Add stores for one location; None when Add skips it (url.Parse error)."""
    value = location.encode("utf-8")
    if not value.startswith((b"https://", b"http://")):
        value = b"https://" + value
    parsed = url_parse(value) or url_parse(value, legacy=True)  # a legacy key: see above
    if parsed is None:
        return None  # "Entry %q in dockercfg invalid (%v), ignoring"
    host, path = parsed
    if path.startswith((b"/v2/", b"/v1/")):
        path = path[3:]
    key = host + path if path and path != b"/" else host
    return RegistryKey._from_raw(key)
