"""Parse and normalise container image references as the container runtime does.

Pure: no I/O. Follows github.com/distribution/reference (ParseNormalizedNamed).

This is a port of ``ParseNormalizedNamed`` from github.com/distribution/reference
v0.6.0 (``regexp.go``, ``normalize.go``, ``reference.go``) together with the digest
validation of github.com/opencontainers/go-digest v1.0.0 that ``Parse`` calls. The
kubelet looks pull credentials up with ``ParseNormalizedNamed(image).Name()``; that
is :attr:`ImageRef.name` here, to the letter.

Which version: kubelets up to v1.28 parse with github.com/docker/distribution v2.8
(kubernetes' go.mod; the kit's v1.28.7 kubelet too), v1.29 and later with
distribution/reference. v0.6.0 accepts everything v2.8 accepts, giving the same name, and
three things more: a first component with an uppercase letter is a domain (v2.8 takes it
for a docker.io path and refuses the uppercase), bracketed IPv6 hosts, and names over 255
characters with their domain (v0.6.0 counts the path only). The newest rules are the ones
followed: the webhook never misses a secret a newer kubelet would use, and on an older
node such an image ends in InvalidImageName whatever the webhook added (the secret goes
unused, and no "not a valid reference" warning is given). Compared against the real v2.8.2
parser (Go, Debian's golang-github-docker-distribution-dev) on ~900,000 fuzzed strings:
no other difference.

Grammar (from reference.go)::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] remote-name
    domain           := host [':' port-number]
    host             := domain-name | IPv4address | \\[ IPv6address \\]
    domain-name      := domain-component ['.' domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := alpha-numeric [separator alpha-numeric]*
    path             := path-component ['/' path-component]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := digest-algorithm ":" digest-hex
    identifier       := /[a-f0-9]{64}/

Normalisation (``splitDockerDomain``): the text before the first ``/`` is the domain
when it is ``localhost``, contains ``.`` or ``:``, or is not all lowercase; otherwise
the domain is ``docker.io``. ``index.docker.io`` becomes ``docker.io``, and a
one-component path on ``docker.io`` gets the ``library/`` prefix. Nothing else is
aliased: ``registry-1.docker.io`` stays as written (see :attr:`ImageRef.registry_host`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "REPOSITORY_NAME_TOTAL_LENGTH_MAX",
    "ImageRef",
    "InvalidImage",
    "parse_image",
]

# --- grammar (regexp.go), compiled once --------------------------------------------
# Go's RE2 and Python's re both use leftmost-first submatch semantics, so the capture
# groups agree. Differences handled here: Go's `\w` is ASCII-only (re.ASCII), Go's `$`
# never matches before a trailing newline (we use fullmatch), `[[:xdigit:]]` is spelt
# out.

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_IDENTIFIER = r"([a-f0-9]{64})"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6_ADDRESS + r")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

# Use these with .fullmatch() only: that is Go's `^...$` anchoring.
_DOMAIN_AND_PORT_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_ANCHORED_NAME_RE = re.compile(
    r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII
)
_REFERENCE_RE = re.compile(
    r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?",
    re.ASCII,
)
_IDENTIFIER_RE = re.compile(_IDENTIFIER, re.ASCII)

# --- constants (normalize.go, reference.go) -----------------------------------------

#: Maximum length of the repository *path* (v0.6.0 no longer counts the domain).
REPOSITORY_NAME_TOTAL_LENGTH_MAX = 255

_LEGACY_DEFAULT_DOMAIN = "index.docker.io"
_DEFAULT_DOMAIN = "docker.io"
_OFFICIAL_REPO_PREFIX = "library/"
_LOCALHOST = "localhost"

# Hosts that serve Docker Hub; only used by ImageRef.registry_host (display/policy).
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# --- error strings, verbatim from upstream ------------------------------------------

_ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
_ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
_ERR_NAME_TOO_LONG = (
    f"repository name must not be more than {REPOSITORY_NAME_TOTAL_LENGTH_MAX} characters"
)
# go-digest v1.0.0
_ERR_DIGEST_INVALID_FORMAT = "invalid checksum digest format"
_ERR_DIGEST_INVALID_LENGTH = "invalid checksum digest length"
_ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"

# go-digest: algorithms whose hash is linked into the kubelet / container runtime
# (crypto/sha256, crypto/sha512), mapped to the hex length they require. Only
# lowercase hex is accepted for them.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)
# go-digest DigestRegexpAnchored (used to tell "unsupported" from "invalid format").
_GO_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)

# Inputs longer than this are parsed but not cached (bounds the cache's memory).
_CACHE_MAX_INPUT = 1024


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed, normalised image reference.

    ``domain`` and ``path`` are exactly ``reference.Domain()`` / ``reference.Path()`` of
    ``ParseNormalizedNamed``: ``nginx`` gives ``docker.io`` + ``library/nginx`` and
    ``index.docker.io/foo`` gives ``docker.io`` + ``library/foo``, but
    ``registry-1.docker.io/foo`` keeps its domain and gets no ``library/`` prefix,
    because upstream does not alias it. ``domain`` keeps its case (``Foo.com``).

    ``domain`` is ``""`` in one upstream corner: a first component that
    ``splitDockerDomain`` takes as a domain (it contains ``.``) but that the grammar
    only accepts as a path component, e.g. ``foo_bar.com/app``. Upstream then has an
    empty domain and ``Name()`` is the bare path; :attr:`name` does the same.
    """

    original: str
    domain: str  # "docker.io", "registry.example.com:5000", "[::1]:5000", "localhost"
    path: str  # "library/nginx", "team/app"
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The repository name the kubelet looks credentials up with: domain/path.

        This is ``ParseNormalizedNamed(original).Name()``; for an empty ``domain``
        (see the class docstring) it is ``path`` alone, as in upstream.
        """
        if not self.domain:
            return self.path
        return f"{self.domain}/{self.path}"

    @property
    def canonical(self) -> str:
        """The normalised reference as upstream's ``String()``: name[:tag][@digest]."""
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    @property
    def registry_host(self) -> str:
        """The registry host[:port], for display and policy only, not for matching.

        ``domain`` lowercased (host names are case-insensitive), with the Docker Hub
        aliases ``index.docker.io`` and ``registry-1.docker.io`` folded into
        ``docker.io``. Upstream (and so the kubelet's keyring lookup, :attr:`name`)
        does not alias ``registry-1.docker.io``. Empty when ``domain`` is empty.
        """
        host = self.domain.lower()
        if host in _DOCKER_HUB_HOSTS:
            return _DEFAULT_DOMAIN
        return host


@dataclass(frozen=True, slots=True)
class InvalidImage:
    """An image string that is not a valid reference, and why."""

    original: str
    reason: str


def parse_image(reference: str) -> ImageRef | InvalidImage:
    """Parse and normalise one image reference; never raises.

    Mirrors ``ParseNormalizedNamed`` of github.com/distribution/reference v0.6.0;
    ``reason`` is the upstream error text. A value that is not a ``str`` (for
    example ``None`` from a malformed pod) is reported as invalid, not raised.
    """
    if type(reference) is not str:
        if not isinstance(reference, str):
            return InvalidImage(_safe_repr(reference), _not_a_string(reference))
        # A str subclass may override __hash__/__eq__/__str__; use its plain value.
        reference = str.__str__(reference)
    if len(reference) > _CACHE_MAX_INPUT:
        return _parse_normalized_named(reference)
    return _parse_cached(reference)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)[:256]
    except Exception:  # a hostile __repr__ must not escape
        return f"<unprintable {type(value).__name__}>"


def _not_a_string(value: object) -> str:
    return f"{_ERR_REFERENCE_INVALID_FORMAT}: image must be a string, not {type(value).__name__}"


@lru_cache(maxsize=4096)
def _parse_cached(s: str) -> ImageRef | InvalidImage:
    return _parse_normalized_named(s)


def _parse_normalized_named(s: str) -> ImageRef | InvalidImage:
    """``ParseNormalizedNamed`` (normalize.go)."""
    if _IDENTIFIER_RE.fullmatch(s):
        return InvalidImage(
            s, f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(s)
    tag_sep = remainder.find(":")
    remote = remainder[:tag_sep] if tag_sep > -1 else remainder
    if _go_to_lower(remote) != remote:
        return InvalidImage(
            s, f"{_ERR_REFERENCE_INVALID_FORMAT}: repository name ({remote}) must be lowercase"
        )
    return _parse(s, domain + "/" + remainder)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """``splitDockerDomain`` (normalize.go, v0.6.0)."""
    maybe_domain, sep, maybe_remote_name = name.partition("/")
    if not sep:
        # Familiar single-element name ("ubuntu", "ubuntu:latest", even "localhost"
        # or "example.com"): always docker.io/library/<name>.
        return _DEFAULT_DOMAIN, _OFFICIAL_REPO_PREFIX + name

    if maybe_domain == _LOCALHOST:
        domain, remote_name = maybe_domain, maybe_remote_name
    elif maybe_domain == _LEGACY_DEFAULT_DOMAIN:
        domain, remote_name = _DEFAULT_DOMAIN, maybe_remote_name
    elif "." in maybe_domain or ":" in maybe_domain:
        domain, remote_name = maybe_domain, maybe_remote_name
    elif _go_to_lower(maybe_domain) != maybe_domain:
        # Uppercase namespaces are not allowed, so a first element that is not
        # lowercase is taken to be a domain name.
        domain, remote_name = maybe_domain, maybe_remote_name
    else:
        domain, remote_name = _DEFAULT_DOMAIN, name

    if domain == _DEFAULT_DOMAIN and "/" not in remote_name:
        remote_name = _OFFICIAL_REPO_PREFIX + remote_name
    return domain, remote_name


def _parse(original: str, s: str) -> ImageRef | InvalidImage:
    """``Parse`` (reference.go, v0.6.0) of the normalised string ``s``.

    ``s`` is never empty here (it is ``domain + "/" + remainder``), so upstream's
    ``ErrNameEmpty`` and "has no name" branches cannot occur.
    """
    matches = _REFERENCE_RE.fullmatch(s)
    if matches is None:
        lowered = _go_to_lower(s)
        if lowered != s and _REFERENCE_RE.fullmatch(lowered) is not None:
            return InvalidImage(original, _ERR_NAME_CONTAINS_UPPERCASE)
        return InvalidImage(original, _ERR_REFERENCE_INVALID_FORMAT)

    name, tag, digest = matches.group(1, 2, 3)
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    if name_match is not None:
        domain, path = name_match.group(1) or "", name_match.group(2)
    else:  # unreachable: name matched the same grammar; kept as upstream has it
        domain, path = "", name

    if len(path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
        return InvalidImage(original, _ERR_NAME_TOO_LONG)

    if digest is not None:
        err = _validate_digest(digest)
        if err is not None:
            return InvalidImage(original, err)

    return ImageRef(original=original, domain=domain, path=path, tag=tag, digest=digest)


def _validate_digest(d: str) -> str | None:
    """``digest.Parse`` / ``Digest.Validate`` of go-digest v1.0.0; None when valid."""
    i = d.find(":")
    if i <= 0 or i + 1 == len(d):
        return _ERR_DIGEST_INVALID_FORMAT
    algorithm, encoded = d[:i], d[i + 1 :]
    size = _DIGEST_HEX_LENGTH.get(algorithm)
    if size is None:
        if _GO_DIGEST_RE.fullmatch(d) is None:
            return _ERR_DIGEST_INVALID_FORMAT
        return _ERR_DIGEST_UNSUPPORTED
    if len(encoded) != size:
        return _ERR_DIGEST_INVALID_LENGTH
    if _LOWER_HEX_RE.fullmatch(encoded) is None:
        return _ERR_DIGEST_INVALID_FORMAT
    return None


def _go_to_lower(s: str) -> str:
    """Go's ``strings.ToLower``: per code point, simple case mapping.

    Python's ``str.lower`` uses full, context-dependent mapping (U+0130, final sigma),
    so non-ASCII text is lowered one code point at a time. Only the wording of an
    error could ever depend on this: the grammar accepts ASCII alone.
    """
    if s.isascii():
        return s.lower()
    return "".join(_go_lower_rune(c) for c in s)


def _go_lower_rune(c: str) -> str:
    """Go's ``unicode.ToLower`` (simple case mapping) for one code point."""
    lowered = c.lower()
    if len(lowered) == 1:
        return lowered
    # Only U+0130 (LATIN CAPITAL LETTER I WITH DOT ABOVE) has a multi-code-point full
    # lowercase mapping; its simple mapping (Go's) is U+0069.
    return "i" if c == "\u0130" else c
