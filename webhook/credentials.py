"""Docker config parsing and kubelet-compatible credential matching.

Pure: no I/O, standard library only. A port, to the letter, of what the kubelet does
with a pod's ``imagePullSecrets`` (kubernetes ``pkg/credentialprovider``):

* ``secrets/secrets.go`` ``MakeDockerKeyring``: a ``kubernetes.io/dockerconfigjson``
  secret is read from data key ``.dockerconfigjson`` (``{"auths": {...}}``), a
  ``kubernetes.io/dockercfg`` secret from ``.dockercfg`` (the legacy bare map). Any
  other type, a missing key or an empty value is skipped silently
  (:attr:`ParsedDockerConfig.ignored`). A ``json.Unmarshal`` error fails the *whole*
  keyring, so every pull of the pod fails (:attr:`ParsedDockerConfig.error`).
* ``config.go``: ``DockerConfigJSON``, ``DockerConfig``, ``DockerConfigEntry.UnmarshalJSON``
  and ``decodeDockerConfigFieldAuth`` (``auth`` is base64 of ``username:password``,
  padded or unpadded; a decoding error or a missing ``:`` is an unmarshal error).
  Decoding follows Go's ``encoding/json``: object keys match struct fields
  case-insensitively (``"Auths"``; also U+017F for ``s``, U+212A for ``k``), unknown
  fields are ignored, a value of the wrong JSON type is an error, ``null`` leaves a
  string unchanged and resets a map, a repeated ``auths`` merges into the same map,
  invalid UTF-8 and lone surrogates become U+FFFD, nesting deeper than 10000 is an
  error, ``NaN``/``Infinity`` are not JSON.
* ``keyring.go`` ``BasicDockerKeyring.Add``: a location without a ``https://`` or
  ``http://`` prefix (lower case only) gets ``https://``; it is parsed with Go's
  ``url.Parse`` and skipped on error (bad port, bad ``%`` escape, control character,
  ``[`` anywhere but at the start of the host, a bracketed host that is not an IPv6
  address: the rules of current Go, since the October 2025 security releases; a host
  with several colons is judged by the last one, as Go does unless
  ``GODEBUG=urlstrictcolons=1``). Query, fragment and
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

Reasons never contain credential material: no values, no decoded data; a registry
location is shown with any ``user@`` part replaced.
"""

from __future__ import annotations

import binascii
import codecs
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "DEFAULT_REGISTRY_HOST",
    "DOCKER_CONFIG_JSON_KEY",
    "DOCKER_CONFIG_KEY",
    "REGISTRY_SECRET_TYPES",
    "SECRET_TYPE_DOCKERCFG",
    "SECRET_TYPE_DOCKERCONFIGJSON",
    "KeyringMatch",
    "ParsedDockerConfig",
    "RegistryKey",
    "is_default_registry_match",
    "key_matches",
    "keyring_lookup",
    "parse_docker_config",
]

SECRET_TYPE_DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"  # noqa: S105 (a type name)
SECRET_TYPE_DOCKERCFG = "kubernetes.io/dockercfg"  # noqa: S105 (a type name)
REGISTRY_SECRET_TYPES = (SECRET_TYPE_DOCKERCONFIGJSON, SECRET_TYPE_DOCKERCFG)

#: Data keys the kubelet reads (v1.DockerConfigJsonKey, v1.DockerConfigKey).
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockercfg"
_DATA_KEY_FOR_TYPE = {
    SECRET_TYPE_DOCKERCONFIGJSON: DOCKER_CONFIG_JSON_KEY,
    SECRET_TYPE_DOCKERCFG: DOCKER_CONFIG_KEY,
}

#: keyring.go defaultRegistryHost: the key ``https://index.docker.io/v1/`` is stored as.
DEFAULT_REGISTRY_HOST = "index.docker.io"
_DEFAULT_REGISTRY_RAW = DEFAULT_REGISTRY_HOST.encode()

# encoding/json scanner.go maxNestingDepth.
_MAX_JSON_DEPTH = 10000
# Longest registry location quoted in a reason.
_MAX_SHOWN = 80
_INTERNAL_ERROR = "internal error while parsing the secret"


# --------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------


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
    as ``URLsMatch`` splits it. Equality and hashing use ``key`` alone.
    """

    key: str
    matchable: bool = field(init=False, repr=False, compare=False)
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

    @classmethod
    def _from_raw(cls, raw: bytes) -> RegistryKey:
        """The key exactly as Go stores it (raw bytes); ``key`` is its display text."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "key", _display(raw))
        _init_key(obj, raw)
        return obj


def _init_key(obj: RegistryKey, raw: bytes) -> None:
    setattr_ = object.__setattr__
    setattr_(obj, "_raw", raw)
    target = _parse_schemeless(raw)
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
    setattr_(obj, "host_labels", tuple(_display(x.pattern) for x in obj._labels))
    setattr_(obj, "port", _display(obj._port))
    setattr_(obj, "path", _display(obj._path))


@dataclass(frozen=True, slots=True)
class ParsedDockerConfig:
    """The registry keys a secret serves, or why the kubelet cannot use it.

    error is None when the kubelet parses it. When error is set, keys is empty and the
    secret must never be injected (the kubelet would fail every pull of the pod).
    ignored is True when the kubelet silently skips the secret (wrong type, empty data).
    """

    keys: tuple[RegistryKey, ...]
    error: str | None = None
    ignored: bool = False


@dataclass(frozen=True, slots=True)
class KeyringMatch:
    """Which secrets the kubelet's keyring would hand the runtime for one image."""

    secrets: tuple[str, ...]  # secret names, in keyring order, no duplicates
    via_default_registry: bool  # True when matched only through the Docker Hub fallback


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def parse_docker_config(
    secret_type: str,
    data: Mapping[str, str] | None,
    string_data: Mapping[str, str] | None = None,
) -> ParsedDockerConfig:
    """Parse a Secret's data (base64 values) / stringData (plain) into registry keys.

    ``stringData`` values override ``data`` values of the same key, as the API server
    does. Never raises: anything malformed is an ``error`` with a reason that names
    the problem but never a value.
    """
    try:
        return _parse_secret(secret_type, data, string_data)
    except _ConfigError as exc:
        return ParsedDockerConfig((), error=exc.reason)
    except Exception as exc:  # never raise on hostile input; treat it as unusable
        return ParsedDockerConfig((), error=f"{_INTERNAL_ERROR} ({type(exc).__name__})")


def key_matches(key: RegistryKey, image_name: str) -> bool:
    """URLsMatchStr(key, image_name): would this key serve this repository name?

    The Docker Hub fallback of ``Lookup`` is not part of this; see keyring_lookup.
    """
    if not isinstance(key, RegistryKey):
        return False
    target = _parse_image_name(image_name)
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
    order, each key's secrets in keyring order), without duplicates.
    """
    target = _parse_image_name(image_name)
    matched: dict[bytes, list[str]] = {}
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
            raw = key._raw
            if raw == _DEFAULT_REGISTRY_RAW:
                hub.append(name)
            if target is not None and _matches(key, target):
                matched.setdefault(raw, []).append(name)
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


def _parse_image_name(image_name: object) -> _Target | None:
    if not isinstance(image_name, str):
        return None
    return _parse_schemeless(image_name.encode("utf-8", "surrogatepass"))


def _parse_schemeless(text: bytes) -> _Target | None:
    """ParseSchemelessURL then SplitURL; None when url.Parse fails."""
    parsed = _url_parse(b"https://" + text)
    if parsed is None:
        return None
    host, path = parsed
    split = _split_host_port(host)
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
        elif not _go_match(pattern, label):
            return False
    return True


# --- path/filepath.Match on bytes (Separator '/'; ErrBadPattern counts as no match) ---


def _go_match(pattern: bytes, name: bytes) -> bool:
    """Go's filepath.Match(pattern, name); a malformed pattern never matches."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return b"/" not in name  # trailing * matches the rest unless it has a /
        rest, ok, bad = _match_chunk(chunk, name)
        if ok and (not rest or pattern):
            name = rest
            continue
        if bad:
            return False
        if not star:
            return False
        found = False
        for i in range(len(name)):
            if name[i] == 0x2F:  # a star cannot skip '/'
                break
            rest, ok, bad = _match_chunk(chunk, name[i + 1 :])
            if ok:
                if not pattern and rest:
                    continue  # the last chunk must exhaust the name
                name = rest
                found = True
                break
            if bad:
                return False
        if not found:
            return False
    return not name


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    stripped = pattern.lstrip(b"*")
    star = len(stripped) != len(pattern)
    in_range = False
    i = 0
    while i < len(stripped):
        c = stripped[i]
        if c == 0x5C:  # '\\': escape (the error is reported by _match_chunk)
            if i + 1 < len(stripped):
                i += 1
        elif c == 0x5B:  # '['
            in_range = True
        elif c == 0x5D:  # ']'
            in_range = False
        elif c == 0x2A and not in_range:  # '*'
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _match_chunk(chunk: bytes, s: bytes) -> tuple[bytes, bool, bool]:
    """matchChunk: (rest, ok, bad pattern). Checks the whole chunk even after a miss."""
    failed = False
    ci = si = 0
    while ci < len(chunk):
        if not failed and si >= len(s):
            failed = True
        c = chunk[ci]
        if c == 0x5B:  # '[' character class
            r = 0
            if not failed:
                r, n = _decode_rune(s, si)
                si += n
            ci += 1
            negated = ci < len(chunk) and chunk[ci] == 0x5E  # '^'
            if negated:
                ci += 1
            match = False
            nrange = 0
            while True:
                if ci < len(chunk) and chunk[ci] == 0x5D and nrange > 0:
                    ci += 1
                    break
                lo, ci, bad = _get_esc(chunk, ci)
                if bad:
                    return b"", False, True
                hi = lo
                if chunk[ci] == 0x2D:  # '-'
                    hi, ci, bad = _get_esc(chunk, ci + 1)
                    if bad:
                        return b"", False, True
                if lo <= r <= hi:
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == 0x3F:  # '?'
            if not failed:
                if s[si] == 0x2F:
                    failed = True
                _, n = _decode_rune(s, si)
                si += n
            ci += 1
        else:
            if c == 0x5C:  # '\\' escapes the next byte
                ci += 1
                if ci >= len(chunk):
                    return b"", False, True
            if not failed:
                if chunk[ci] != s[si]:
                    failed = True
                si += 1
            ci += 1
    if failed:
        return b"", False, False
    return s[si:], True, False


def _get_esc(chunk: bytes, ci: int) -> tuple[int, int, bool]:
    """getEsc: (rune, next index, bad pattern)."""
    if ci >= len(chunk) or chunk[ci] in (0x2D, 0x5D):  # '-' or ']'
        return 0, ci, True
    if chunk[ci] == 0x5C:
        ci += 1
        if ci >= len(chunk):
            return 0, ci, True
    r, n = _decode_rune(chunk, ci)
    ci += n
    return r, ci, (r == 0xFFFD and n == 1) or ci >= len(chunk)


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """utf8.DecodeRune: (RuneError, 1) for an invalid or short sequence."""
    if i >= len(b):
        return 0xFFFD, 0
    c = b[i]
    if c < 0x80:
        return c, 1
    if 0xC2 <= c <= 0xDF:
        n = 2
    elif 0xE0 <= c <= 0xEF:
        n = 3
    elif 0xF0 <= c <= 0xF4:
        n = 4
    else:
        return 0xFFFD, 1
    seq = b[i : i + n]
    if len(seq) == n:
        try:
            return ord(seq.decode("utf-8")), n
        except UnicodeDecodeError:
            pass
    return 0xFFFD, 1


# --- net.SplitHostPort ------------------------------------------------------------------


def _split_host_port(hostport: bytes) -> tuple[bytes, bytes] | None:
    i = hostport.rfind(b":")
    if i < 0:
        return None  # missing port
    j = k = 0
    if hostport[:1] == b"[":
        end = hostport.find(b"]")
        if end < 0 or end + 1 != i:
            return None  # missing ']', missing port or too many colons
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if b":" in host:
            return None  # too many colons
    if b"[" in hostport[j:] or b"]" in hostport[k:]:
        return None
    return host, hostport[i + 1 :]


# --- net/url.Parse (the parts the kubelet uses: Host and the decoded Path) --------------

_PATH, _HOST, _ZONE, _USERINFO, _FRAGMENT = range(5)
_CTL_RE = re.compile(rb"[\x00-\x1f\x7f]")
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
# Bytes a host may hold unescaped (shouldEscape(c, encodeHost) is false), plus non-ASCII.
_HOST_BYTES_RE = re.compile(rb"[A-Za-z0-9\-_.~!$&'()*+,;=:\[\]<>\"%\x80-\xff]*")
_USERINFO_RE = re.compile(rb"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*")
_HOST_ASCII = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!$&'()*+,;=:[]<>\""
)


def _url_parse(raw: bytes) -> tuple[bytes, bytes] | None:
    """url.Parse(raw) -> (Host, Path), or None where Go returns an error."""
    u, _, frag = raw.partition(b"#")
    if _CTL_RE.search(u):
        return None  # net/url: invalid control character in URL
    scheme, rest = _get_scheme(u)
    if scheme is None:
        return None
    rest = rest.partition(b"?")[0]
    host = b""
    if not rest.startswith(b"/"):
        if scheme:
            rest = b""  # opaque: no host, no path
        elif b":" in rest.partition(b"/")[0]:
            return None  # first path segment in URL cannot contain colon
    if rest.startswith(b"//") and (scheme or not rest.startswith(b"///")):
        authority, slash, tail = rest[2:].partition(b"/")
        rest = slash + tail
        parsed_host = _parse_authority(authority)
        if parsed_host is None:
            return None
        host = parsed_host
    path = _unescape(rest, _PATH)
    if path is None:
        return None
    if frag and _unescape(frag, _FRAGMENT) is None:
        return None
    return host, path


def _get_scheme(raw: bytes) -> tuple[bytes | None, bytes]:
    for i, c in enumerate(raw):
        if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
            continue
        if 0x30 <= c <= 0x39 or c in b"+-.":
            if i == 0:
                return b"", raw
        elif c == 0x3A:  # ':'
            if i == 0:
                return None, raw  # missing protocol scheme
            return raw[:i].lower(), raw[i + 1 :]
        else:
            return b"", raw
    return b"", raw


def _parse_authority(authority: bytes) -> bytes | None:
    at = authority.rfind(b"@")
    host = _parse_host(authority[at + 1 :])
    if host is None or at < 0:
        return host
    userinfo = authority[:at]
    if not _USERINFO_RE.fullmatch(userinfo):
        return None  # net/url: invalid userinfo
    for part in userinfo.split(b":", 1):
        if _unescape(part, _USERINFO) is None:
            return None
    return host


def _parse_host(host: bytes) -> bytes | None:
    """parseHost of current Go (brackets: IPv6 only, at the start); the last colon counts."""
    open_bracket = host.rfind(b"[")
    if open_bracket > 0:
        return None  # invalid IP-literal
    if open_bracket == 0:
        close = host.rfind(b"]")
        if close < 0:
            return None  # missing ']' in host
        colon_port = host[close + 1 :]
        if not _valid_optional_port(colon_port):
            return None
        hostname = host[1:close]
        zone = hostname.find(b"%25")
        if zone >= 0:
            part = _unescape(hostname[:zone], _HOST)
            zone_part = _unescape(hostname[zone:], _ZONE)
            if part is None or zone_part is None:
                return None
            unescaped = part + zone_part
        else:
            maybe = _unescape(hostname, _HOST)
            if maybe is None:
                return None
            unescaped = maybe
        # Only an IPv6 address may be enclosed in brackets (not an IPv4 one).
        if not _is_ipv6(unescaped):
            return None
        return b"[" + unescaped + b"]" + colon_port
    colon = host.rfind(b":")
    if colon != -1 and not _valid_optional_port(host[colon:]):
        return None  # invalid port after host
    return _unescape(host, _HOST)


def _valid_optional_port(port: bytes) -> bool:
    return port == b"" or (port[:1] == b":" and (len(port) == 1 or port[1:].isdigit()))


def _unescape(s: bytes, mode: int) -> bytes | None:
    """net/url unescape: None for a malformed or (in a host) disallowed escape."""
    if mode in (_HOST, _ZONE) and not _HOST_BYTES_RE.fullmatch(s):
        return None  # invalid character in host name
    if b"%" not in s:
        return s
    if _BAD_ESCAPE_RE.search(s):
        return None  # invalid URL escape
    if mode in (_HOST, _ZONE):
        for m in _ESCAPE_RE.finditer(s):
            escape = m.group()
            value = int(m.group(1), 16)
            if escape == b"%25":
                continue
            if mode == _HOST and value < 0x80:
                return None  # a host may %-encode only non-ASCII bytes
            if mode == _ZONE and value != 0x20 and value not in _HOST_ASCII:
                return None
    return _ESCAPE_RE.sub(lambda m: bytes((int(m.group(1), 16),)), s)


def _is_ipv6(addr: bytes) -> bool:
    """netip.ParseAddr(addr) succeeds and is not IPv4 (Is4)."""
    for c in addr:
        if c in b".%":  # '.': IPv4 (not allowed in brackets), '%': no address
            return False
        if c == 0x3A:
            return _parse_ipv6(addr)
    return False


def _parse_ipv6(s: bytes) -> bool:
    """netip parseIPv6 (with the 4-digit group limit of current Go)."""
    s, pct, zone = s.partition(b"%")
    if pct and not zone:
        return False  # zone must be a non-empty string
    ellipsis = -1
    if s.startswith(b"::"):
        ellipsis = 0
        s = s[2:]
        if not s:
            return True
    i = 0
    while i < 16:
        off = 0
        while off < len(s) and s[off] in b"0123456789abcdefABCDEF":
            off += 1
            if off > 4:
                return False  # each group must have 4 or less digits
        if off == 0:
            return False
        if off < len(s) and s[off] == 0x2E:  # trailing IPv4
            if (ellipsis < 0 and i != 12) or i + 4 > 16:
                return False
            if not _is_ipv4(s):
                return False
            s = b""
            i += 4
            break
        i += 2
        s = s[off:]
        if not s:
            break
        if s[0] != 0x3A or len(s) == 1:
            return False
        s = s[1:]
        if s[0] == 0x3A:
            if ellipsis >= 0:
                return False  # multiple ::
            ellipsis = i
            s = s[1:]
            if not s:
                break
    if s:
        return False  # trailing garbage
    if i < 16:
        return ellipsis >= 0
    return ellipsis < 0  # :: must expand to at least one group


def _is_ipv4(s: bytes) -> bool:
    """netip parseIPv4."""
    fields = s.split(b".")
    if len(fields) != 4:
        return False
    for f in fields:
        if not f or not f.isdigit() or (len(f) > 1 and f[:1] == b"0") or int(f) > 255:
            return False
    return True


# --------------------------------------------------------------------------------------
# BasicDockerKeyring.Add
# --------------------------------------------------------------------------------------


def _add_key(location: str) -> RegistryKey | None:
    """The key Add stores for one location; None when Add skips it (url.Parse error)."""
    value = location.encode("utf-8")
    if not value.startswith((b"https://", b"http://")):
        value = b"https://" + value
    parsed = _url_parse(value)
    if parsed is None:
        return None  # "Entry %q in dockercfg invalid (%v), ignoring"
    host, path = parsed
    if path.startswith((b"/v2/", b"/v1/")):
        path = path[3:]
    key = host + path if path and path != b"/" else host
    return RegistryKey._from_raw(key)


# --------------------------------------------------------------------------------------
# Secret -> docker config (secrets.go, config.go, Go encoding/json)
# --------------------------------------------------------------------------------------


class _ConfigError(Exception):
    """The kubelet cannot use the secret; reason is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_secret(secret_type: object, data: object, string_data: object) -> ParsedDockerConfig:
    if not isinstance(secret_type, str) or secret_type not in _DATA_KEY_FOR_TYPE:
        return ParsedDockerConfig((), ignored=True)
    data_key = _DATA_KEY_FOR_TYPE[secret_type]
    merged = _decode_data(data)
    merged.update(_encode_string_data(string_data))
    blob = merged.get(data_key)
    if not blob:
        return ParsedDockerConfig((), ignored=True)
    doc = _go_json_loads(blob, data_key)
    if secret_type == SECRET_TYPE_DOCKERCONFIGJSON:
        locations = _config_json_locations(doc, data_key)
    else:
        locations = _config_locations(doc, data_key)
    keys: dict[bytes, RegistryKey] = {}
    for location in locations:
        key = _add_key(location)
        if key is not None:
            keys.setdefault(key._raw, key)
    return ParsedDockerConfig(tuple(keys.values()))


def _decode_data(data: object) -> dict[str, bytes]:
    """Secret.data: base64 values, as the API server decodes them (Go StdEncoding)."""
    out: dict[str, bytes] = {}
    if data is None:
        return out
    if not isinstance(data, Mapping):
        raise _ConfigError(f"data must be a mapping, not {type(data).__name__}")
    for name, value in data.items():
        if not isinstance(name, str):
            raise _ConfigError(f"data has a key that is not a string ({type(name).__name__})")
        if value is None:  # JSON null for a []byte is an empty value
            out[name] = b""
            continue
        if not isinstance(value, str):
            raise _ConfigError(
                f"data[{_shown_data_key(name)}] must be a base64 string, not {type(value).__name__}"
            )
        decoded = _b64_std(value)
        if decoded is None:
            raise _ConfigError(f"data[{_shown_data_key(name)}] is not valid base64")
        out[name] = decoded
    return out


def _encode_string_data(string_data: object) -> dict[str, bytes]:
    """Secret.stringData: plain text values, which override data on write."""
    out: dict[str, bytes] = {}
    if string_data is None:
        return out
    if not isinstance(string_data, Mapping):
        raise _ConfigError(f"stringData must be a mapping, not {type(string_data).__name__}")
    for name, value in string_data.items():
        if not isinstance(name, str):
            raise _ConfigError(f"stringData has a key that is not a string ({type(name).__name__})")
        if value is None:
            out[name] = b""
        elif isinstance(value, str):
            out[name] = _fix_surrogates(value).encode("utf-8")
        else:
            raise _ConfigError(
                f"stringData[{_shown_data_key(name)}] must be a string, not {type(value).__name__}"
            )
    return out


# --- Go encoding/json -------------------------------------------------------------------


class _Object:
    """A JSON object as its (key, value) pairs in document order (duplicates kept)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


class _Number:
    """A JSON number; its value never matters (no field of these types is numeric)."""

    __slots__ = ()


_NUMBER = _Number()


def _number(_text: str) -> _Number:
    return _NUMBER


def _no_constant(_name: str) -> object:
    raise _JSONSyntaxError("NaN and Infinity are not JSON")


class _JSONSyntaxError(ValueError):
    pass


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_int=_number,
    parse_float=_number,
    parse_constant=_no_constant,
)


def _go_json_loads(blob: bytes, data_key: str) -> object:
    """json.Unmarshal's view of blob, or _ConfigError where Go reports a syntax error."""
    text = _go_utf8(blob)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        pass  # deeper than Python's C scanner goes; Go allows 10000 levels
    except _JSONSyntaxError as exc:
        raise _ConfigError(f"{data_key} is not valid JSON ({exc})") from None
    except json.JSONDecodeError as exc:
        message = exc.msg.partition(":")[0]  # never quote the document
        raise _ConfigError(
            f"{data_key} is not valid JSON ({message} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise _ConfigError(f"{data_key} is not valid JSON ({type(exc).__name__})") from None
    try:
        return _parse_json_iterative(text)
    except _JSONSyntaxError as exc:
        raise _ConfigError(f"{data_key} is not valid JSON ({exc})") from None


def _go_utf8(data: bytes) -> str:
    """Decode as Go does: each byte of an invalid sequence becomes U+FFFD."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    parts: list[str] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        try:
            parts.append(codecs.utf_8_decode(view[pos:], "strict", True)[0])
            break
        except UnicodeDecodeError as exc:
            parts.append(codecs.utf_8_decode(view[pos : pos + exc.start], "strict", True)[0])
            parts.append("\ufffd")
            pos += exc.start + 1
    return "".join(parts)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _fix_surrogates(s: str) -> str:
    """Go decodes a lone surrogate escape (\\ud800) to U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", s)


_WS_RE = re.compile(r"[ \t\n\r]*")
_STRING_RE = re.compile(r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"')
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS: dict[str, object] = {"true": True, "false": False, "null": None}


def _skip_ws(text: str, pos: int) -> int:
    m = _WS_RE.match(text, pos)
    return pos if m is None else m.end()


def _parse_json_iterative(text: str) -> object:
    """The same result as _DECODER.decode, without recursion, and Go's depth limit."""
    stack: list[_Object | list[object]] = []
    keys: list[str] = []  # the pending key of each open object
    pos = _skip_ws(text, 0)
    while True:
        # A value starts at pos: open a container (and go read its first value) or
        # read a scalar.
        if text.startswith(("{", "["), pos):
            if len(stack) >= _MAX_JSON_DEPTH:
                raise _JSONSyntaxError(f"nested deeper than {_MAX_JSON_DEPTH} levels")
            container: _Object | list[object] = _Object([]) if text[pos] == "{" else []
            pos = _skip_ws(text, pos + 1)
            if not text.startswith("}" if isinstance(container, _Object) else "]", pos):
                stack.append(container)
                if isinstance(container, _Object):
                    key, pos = _read_key(text, pos)
                    keys.append(key)
                continue
            value: object = container
            pos += 1
        else:
            value, pos = _read_scalar(text, pos)
        # Store the value, then close as many containers as the text closes.
        while True:
            pos = _skip_ws(text, pos)
            if not stack:
                if pos != len(text):
                    raise _JSONSyntaxError(f"extra data at offset {pos}")
                return value
            top = stack[-1]
            if isinstance(top, _Object):
                top.pairs.append((keys[-1], value))
            else:
                top.append(value)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
                if isinstance(top, _Object):
                    keys[-1], pos = _read_key(text, pos)
                break
            if not text.startswith("}" if isinstance(top, _Object) else "]", pos):
                raise _JSONSyntaxError(f"invalid character or end of input at offset {pos}")
            pos += 1
            value = stack.pop()
            if isinstance(value, _Object):
                keys.pop()


def _read_scalar(text: str, pos: int) -> tuple[object, int]:
    """A string, number or literal at pos, and the position after it."""
    c = text[pos : pos + 1]
    if c == '"':
        m = _STRING_RE.match(text, pos)
        if m is None:
            raise _JSONSyntaxError(f"invalid string at offset {pos}")
        return json.loads(m.group()), m.end()
    if c and c in "-0123456789":
        m = _NUMBER_RE.match(text, pos)
        if m is None:
            raise _JSONSyntaxError(f"invalid number at offset {pos}")
        return _NUMBER, m.end()
    for literal, value in _LITERALS.items():
        if text.startswith(literal, pos):
            return value, pos + len(literal)
    raise _JSONSyntaxError(f"invalid character or end of input at offset {pos}")


def _read_key(text: str, pos: int) -> tuple[str, int]:
    """An object key and the ':' after it; returns the position of the value."""
    m = _STRING_RE.match(text, pos)
    if m is None:
        raise _JSONSyntaxError(f"expected a string key at offset {pos}")
    key = json.loads(m.group())
    pos = _skip_ws(text, m.end())
    if not text.startswith(":", pos):
        raise _JSONSyntaxError(f"expected ':' at offset {pos}")
    pos = _skip_ws(text, pos + 1)
    return key, pos


_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})  # long s, Kelvin sign


def _is_field(name: str, field_name: str) -> bool:
    """Does JSON key `name` select the struct field `field_name` (lower-case ASCII)?

    encoding/json prefers an exact match and accepts a Unicode case-fold match; for
    an ASCII field name the only non-ASCII folds are U+017F (s) and U+212A (k).
    """
    if len(name) != len(field_name):
        return False
    folded = name.translate(_FOLD)
    return folded.isascii() and folded.lower() == field_name


def _kind(value: object) -> str:
    if isinstance(value, _Object):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _config_json_locations(doc: object, data_key: str) -> list[str]:
    """json.Unmarshal into DockerConfigJSON; the locations of the final Auths map."""
    if doc is None:
        return []
    if not isinstance(doc, _Object):
        raise _ConfigError(f"{data_key} must hold a JSON object, not {_kind(doc)}")
    auths: dict[str, None] | None = None
    for name, value in doc.pairs:
        if _is_field(name, "auths"):
            if value is None:
                auths = None  # null resets a map
            elif isinstance(value, _Object):
                if auths is None:
                    auths = {}
                auths.update(_config_entries(value, data_key))  # a repeat merges
            else:
                raise _ConfigError(f'{data_key}: "auths" must be a JSON object, not {_kind(value)}')
        elif _is_field(name, "httpheaders"):
            if value is None:
                continue
            if not isinstance(value, _Object):
                raise _ConfigError(
                    f'{data_key}: "HttpHeaders" must be a JSON object, not {_kind(value)}'
                )
            for _header, header_value in value.pairs:
                if header_value is not None and not isinstance(header_value, str):
                    raise _ConfigError(
                        f'{data_key}: "HttpHeaders" values must be strings,'
                        f" not {_kind(header_value)}"
                    )
    return list(auths or ())


def _config_locations(doc: object, data_key: str) -> list[str]:
    """json.Unmarshal into the legacy DockerConfig (a bare map of entries)."""
    if doc is None:
        return []
    if not isinstance(doc, _Object):
        raise _ConfigError(f"{data_key} must hold a JSON object, not {_kind(doc)}")
    return list(_config_entries(doc, data_key))


def _config_entries(entries: _Object, data_key: str) -> dict[str, None]:
    """A DockerConfig map: every entry must pass DockerConfigEntry.UnmarshalJSON."""
    out: dict[str, None] = {}
    for location, entry in entries.pairs:
        _check_entry(entry, data_key, location)
        out[_fix_surrogates(location)] = None
    return out


_ENTRY_FIELDS = ("username", "password", "email", "auth")


def _check_entry(entry: object, data_key: str, location: str) -> None:
    """DockerConfigEntry.UnmarshalJSON: raise _ConfigError where it returns an error."""
    if entry is None:
        return
    where = f"{data_key}: the entry for registry {_shown_location(location)}"
    if not isinstance(entry, _Object):
        raise _ConfigError(f"{where} must be a JSON object, not {_kind(entry)}")
    auth = ""
    for name, value in entry.pairs:
        for field_name in _ENTRY_FIELDS:
            if _is_field(name, field_name):
                if isinstance(value, str):
                    if field_name == "auth":
                        auth = value
                elif value is not None:  # null leaves a string field unchanged
                    raise _ConfigError(
                        f'{where}: "{field_name}" must be a string, not {_kind(value)}'
                    )
                break
    if auth:
        _check_auth(_fix_surrogates(auth), where)


# strings.TrimSpace / unicode.IsSpace
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _check_auth(auth: str, where: str) -> None:
    """decodeDockerConfigFieldAuth: base64 (padded when it ends in '=') of user:password."""
    padded = auth.rstrip(_GO_SPACE).endswith("=")
    decoded = _b64_std(auth) if padded else _b64_raw(auth)
    if decoded is None:
        raise _ConfigError(f'{where}: "auth" is not valid base64')
    if b":" not in decoded:
        raise _ConfigError(f'{where}: "auth" must be base64 of username:password (no ":")')


# --- Go encoding/base64 (StdEncoding / RawStdEncoding; '\r' and '\n' are ignored) -------

_B64_ALPHABET_RE = re.compile(r"[A-Za-z0-9+/]*")


def _b64_std(text: str) -> bytes | None:
    s = text.replace("\r", "").replace("\n", "")
    body = s.rstrip("=")
    if len(s) % 4 or len(s) - len(body) > 2 or not _B64_ALPHABET_RE.fullmatch(body):
        return None
    try:
        return binascii.a2b_base64(s)
    except (binascii.Error, ValueError):
        return None


def _b64_raw(text: str) -> bytes | None:
    s = text.replace("\r", "").replace("\n", "")
    if len(s) % 4 == 1 or not _B64_ALPHABET_RE.fullmatch(s):
        return None
    try:
        return binascii.a2b_base64(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError):
        return None


# --- display ----------------------------------------------------------------------------


def _display(raw: bytes) -> str:
    """Text for bytes; a byte that is not part of valid UTF-8 is shown as %XX."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return "".join(
        f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch
        for ch in raw.decode("utf-8", "surrogateescape")
    )


def _shown(name: str) -> str:
    """A text, quoted and bounded, for a reason."""
    if len(name) > _MAX_SHOWN:
        name = name[: _MAX_SHOWN - 3] + "..."
    return repr(name)


def _shown_data_key(name: str) -> str:
    """A data key for a reason: only the two the kubelet reads are named."""
    return _shown(name) if name in _DATA_KEY_FOR_TYPE.values() else "<another key>"


def _shown_location(location: str) -> str:
    """A registry location for a reason, without any user[:password]@ part."""
    at = location.rfind("@")
    if at >= 0:
        location = "<user>@" + location[at + 1 :]
    return _shown(location)
