"""Tests for webhook.kubelet.reference: a port of github.com/distribution/reference's tables.

Upstream tables ported (github.com/distribution/reference, v0.6.0 era):
  regexp_test.go     TestDomainRegexp, TestFullNameRegexp, TestReferenceRegexp,
                     TestIdentifierRegexp (against the module's compiled patterns)
  normalize_test.go  TestValidateReferenceName, TestValidateRemoteName,
                     TestParseRepositoryInfo, TestParseReferenceWithTagAndDigest,
                     TestInvalidReferenceComponents, TestParseAnyReference (named
                     cases), TestNormalizedSplitHostname, TestParseDockerRef
  reference_test.go  TestReferenceParse (re-derived for ParseNormalizedNamed, which
                     is what the kubelet calls, see the comments there),
                     TestSerialization, TestParseNamed
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from webhook.kubelet.reference import (
    _ANCHORED_NAME_RE,
    _DOMAIN_AND_PORT_RE,
    _IDENTIFIER_RE,
    _REFERENCE_RE,
    REPOSITORY_NAME_TOTAL_LENGTH_MAX,
    ImageRef,
    InvalidImage,
    _parse_normalized_named,
    parse_image,
)

SHA256_F = "sha256:" + "f" * 64
SHA512_F = "sha512:" + "f" * 128
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

INVALID_FORMAT = "invalid reference format"
UPPERCASE = "repository name must be lowercase"
TOO_LONG = "repository name must not be more than 255 characters"
DIGEST_LENGTH = "invalid checksum digest length"
DIGEST_FORMAT = "invalid checksum digest format"
DIGEST_UNSUPPORTED = "unsupported digest algorithm"


def _id(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ok(reference: str) -> ImageRef:
    result = parse_image(reference)
    assert isinstance(result, ImageRef), f"{reference!r} should be valid, got {result!r}"
    assert result.original == reference
    return result


def _bad(reference: str) -> InvalidImage:
    result = parse_image(reference)
    assert isinstance(result, InvalidImage), f"{reference!r} should be invalid, got {result!r}"
    assert result.original == reference
    assert result.reason
    return result


# --------------------------------------------------------------------------------------
# regexp_test.go
# --------------------------------------------------------------------------------------

# TestDomainRegexp
DOMAIN_REGEXP_CASES = [
    ("test.com", True),
    ("test.com:10304", True),
    ("test.com:http", False),
    ("localhost", True),
    ("localhost:8080", True),
    ("a", True),
    ("a.b", True),
    ("ab.cd.com", True),
    ("a-b.com", True),
    ("-ab.com", False),
    ("ab-.com", False),
    ("ab.c-om", True),
    ("ab.-com", False),
    ("ab.com-", False),
    ("0101.com", True),
    ("001a.com", True),
    ("b.gbc.io:443", True),
    ("b.gbc.io", True),
    ("xn--n3h.com", True),
    ("Asdf.com", True),
    ("192.168.1.1:75050", True),
    ("192.168.1.1:750050", True),
    ("[fd00:1:2::3]:75050", True),
    ("[fd00:1:2::3]75050", False),
    ("[fd00:1:2::3]::75050", False),
    ("[fd00:1:2::3%eth0]:75050", False),
    ("[fd00123123123]:75050", True),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050", True),
    ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505", True),
    ("fd00:1:2::3:75050", False),
]


@pytest.mark.parametrize(("text", "match"), DOMAIN_REGEXP_CASES, ids=_id)
def test_domain_regexp(text: str, match: bool) -> None:
    assert (_DOMAIN_AND_PORT_RE.fullmatch(text) is not None) is match


# TestFullNameRegexp: (input, None) for no match, else (input, (domain, path)).
FULL_NAME_CASES: list[tuple[str, tuple[str, str] | None]] = [
    ("", None),
    ("short", ("", "short")),
    ("simple/name", ("simple", "name")),
    ("library/ubuntu", ("library", "ubuntu")),
    ("docker/stevvooe/app", ("docker", "stevvooe/app")),
    (
        "aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb",
        ("aa", "aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb"),
    ),
    ("aa/aa/bb/bb/bb", ("aa", "aa/bb/bb/bb")),
    ("a/a/a/a", ("a", "a/a/a")),
    ("a/a/a/a/", None),
    ("a//a/a", None),
    ("a", ("", "a")),
    ("a/aa", ("a", "aa")),
    ("a/aa/a", ("a", "aa/a")),
    ("foo.com", ("", "foo.com")),
    ("foo.com/", None),
    ("foo.com:8080/bar", ("foo.com:8080", "bar")),
    ("foo.com:http/bar", None),
    ("foo.com/bar", ("foo.com", "bar")),
    ("foo.com/bar/baz", ("foo.com", "bar/baz")),
    ("localhost:8080/bar", ("localhost:8080", "bar")),
    ("sub-dom1.foo.com/bar/baz/quux", ("sub-dom1.foo.com", "bar/baz/quux")),
    ("blog.foo.com/bar/baz", ("blog.foo.com", "bar/baz")),
    ("a^a", None),
    ("aa/asdf$$^/aa", None),
    ("asdf$$^/aa", None),
    ("aa-a/a", ("aa-a", "a")),
    ("a/" * 128 + "a", ("a", "a/" * 127 + "a")),
    ("a-/a/a/a", None),
    ("foo.com/a-/a/a", None),
    ("-foo/bar", None),
    ("foo/bar-", None),
    ("foo-/bar", None),
    ("foo/-bar", None),
    ("_foo/bar", None),
    ("foo_bar", ("", "foo_bar")),
    ("foo_bar.com", ("", "foo_bar.com")),
    ("foo_bar.com:8080", None),
    ("foo_bar.com:8080/app", None),
    ("foo.com/foo_bar", ("foo.com", "foo_bar")),
    ("____/____", None),
    ("_docker/_docker", None),
    ("docker_/docker_", None),
    ("b.gcr.io/test.example.com/my-app", ("b.gcr.io", "test.example.com/my-app")),
    ("xn--n3h.com/myimage", ("xn--n3h.com", "myimage")),
    ("xn--7o8h.com/myimage", ("xn--7o8h.com", "myimage")),
    ("example.com/xn--7o8h.com/myimage", ("example.com", "xn--7o8h.com/myimage")),
    (
        "example.com/some_separator__underscore/myimage",
        ("example.com", "some_separator__underscore/myimage"),
    ),
    ("example.com/__underscore/myimage", None),
    ("example.com/..dots/myimage", None),
    ("example.com/.dots/myimage", None),
    ("example.com/nodouble..dots/myimage", None),
    ("docker./docker", None),
    (".docker/docker", None),
    ("docker-/docker", None),
    ("-docker/docker", None),
    ("do..cker/docker", None),
    ("do__cker:8080/docker", None),
    ("do__cker/docker", ("", "do__cker/docker")),
    (
        "registry.io/foo/project--id.module--name.ver---sion--name",
        ("registry.io", "foo/project--id.module--name.ver---sion--name"),
    ),
    ("Asdf.com/foo/bar", ("Asdf.com", "foo/bar")),
    ("Foo/FarB", None),
]


@pytest.mark.parametrize(("text", "subs"), FULL_NAME_CASES, ids=_id)
def test_full_name_regexp(text: str, subs: tuple[str, str] | None) -> None:
    m = _ANCHORED_NAME_RE.fullmatch(text)
    if subs is None:
        assert m is None
    else:
        assert m is not None
        assert (m.group(1) or "", m.group(2)) == subs


DIGEST_BE = "sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912"

# TestReferenceRegexp: (input, None) for no match, else (input, (name, tag, digest)).
REFERENCE_REGEXP_CASES: list[tuple[str, tuple[str, str, str] | None]] = [
    ("registry.com:8080/myapp:tag", ("registry.com:8080/myapp", "tag", "")),
    (f"registry.com:8080/myapp@{DIGEST_BE}", ("registry.com:8080/myapp", "", DIGEST_BE)),
    (f"registry.com:8080/myapp:tag2@{DIGEST_BE}", ("registry.com:8080/myapp", "tag2", DIGEST_BE)),
    ("registry.com:8080/myapp@sha256:badbadbadbad", None),
    ("registry.com:8080/myapp:invalid~tag", None),
    ("bad_hostname.com:8080/myapp:tag", None),
    # localhost treated as name, missing tag with 8080 as tag
    (f"localhost:8080@{DIGEST_BE}", ("localhost", "8080", DIGEST_BE)),
    (f"localhost:8080/name@{DIGEST_BE}", ("localhost:8080/name", "", DIGEST_BE)),
    (f"localhost:http/name@{DIGEST_BE}", None),
    # localhost will be treated as an image name without a host
    (f"localhost@{DIGEST_BE}", ("localhost", "", DIGEST_BE)),
    ("registry.com:8080/myapp@bad", None),
    ("registry.com:8080/myapp@2bad", None),
]


@pytest.mark.parametrize(("text", "subs"), REFERENCE_REGEXP_CASES, ids=_id)
def test_reference_regexp(text: str, subs: tuple[str, str, str] | None) -> None:
    m = _REFERENCE_RE.fullmatch(text)
    if subs is None:
        assert m is None
    else:
        assert m is not None
        assert tuple(g or "" for g in m.groups()) == subs


# TestIdentifierRegexp
IDENTIFIER_CASES = [
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821", True),
    ("7EC43B381E5AEFE6E04EFB0B3F0693FF2A4A50652D64AEC573905F2DB5889A1C", False),
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf", False),
    ("sha256:da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821", False),
    ("da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf98218482", False),
]


@pytest.mark.parametrize(("text", "match"), IDENTIFIER_CASES, ids=_id)
def test_identifier_regexp(text: str, match: bool) -> None:
    assert (_IDENTIFIER_RE.fullmatch(text) is not None) is match


def test_regexps_do_not_match_before_a_trailing_newline() -> None:
    # Go's `$` is end-of-text; Python's would also match before a final "\n".
    assert _REFERENCE_RE.fullmatch("nginx\n") is None
    assert _IDENTIFIER_RE.fullmatch("f" * 64 + "\n") is None


def test_tag_word_class_is_ascii_only() -> None:
    # Go's \w is [0-9A-Za-z_]; Python's would take any Unicode letter.
    assert _REFERENCE_RE.fullmatch("nginx:é") is None
    _bad("nginx:é")
    _bad("nginx:١٢٣")  # Arabic-Indic digits are \d/\w in Unicode mode


# --------------------------------------------------------------------------------------
# normalize_test.go
# --------------------------------------------------------------------------------------

# TestValidateReferenceName
VALID_REPO_NAMES = [
    "docker/docker",
    "library/debian",
    "debian",
    "docker.io/docker/docker",
    "docker.io/library/debian",
    "docker.io/debian",
    "index.docker.io/docker/docker",
    "index.docker.io/library/debian",
    "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian",
    "192.168.0.1",
    "192.168.0.1:80",
    "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    # valid with a hostname: no ambiguity with an identifier
    "docker.io/" + HEX64,
    "Docker/docker",
    "DOCKER/docker",
]
INVALID_REPO_NAMES = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "[fc00::1]",
    "[fc00::1]:5000",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    HEX64,
]

# TestValidateRemoteName
VALID_REMOTE_NAMES = [
    "docker/docker",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "docker-rules/docker",
    "docker---rules/docker",
    "doc/docker",
    "d/docker",
    "jess/t",
    "dock__er/docker",
]
INVALID_REMOTE_NAMES = [
    "docker/Docker",
    "docker///docker",
    HEX64,
    "-docker/docker",
    "docker-/docker",
    "-docker-/docker",
    "____/____",
    "_docker/_docker",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_"
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
]


@pytest.mark.parametrize("reference", VALID_REPO_NAMES + VALID_REMOTE_NAMES, ids=_id)
def test_valid_names(reference: str) -> None:
    _ok(reference)


@pytest.mark.parametrize("reference", INVALID_REPO_NAMES + INVALID_REMOTE_NAMES, ids=_id)
def test_invalid_names(reference: str) -> None:
    _bad(reference)


# TestParseRepositoryInfo: (remote name, familiar, full, ambiguous, domain)
REPOSITORY_INFO = [
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "", "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", "", "docker.io"),
    (
        "private/moonbase",
        "127.0.0.1:8000/private/moonbase",
        "127.0.0.1:8000/private/moonbase",
        "",
        "127.0.0.1:8000",
    ),
    (
        "privatebase",
        "127.0.0.1:8000/privatebase",
        "127.0.0.1:8000/privatebase",
        "",
        "127.0.0.1:8000",
    ),
    (
        "private/moonbase",
        "example.com/private/moonbase",
        "example.com/private/moonbase",
        "",
        "example.com",
    ),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", "", "example.com"),
    (
        "private/moonbase",
        "example.com:8000/private/moonbase",
        "example.com:8000/private/moonbase",
        "",
        "example.com:8000",
    ),
    (
        "privatebasee",
        "example.com:8000/privatebasee",
        "example.com:8000/privatebasee",
        "",
        "example.com:8000",
    ),
    (
        "library/ubuntu-12.04-base",
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base",
        "index.docker.io/library/ubuntu-12.04-base",
        "docker.io",
    ),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", "", "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", "", "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", "", "Foo"),
    ("bar", "FOO/bar", "FOO/bar", "", "FOO"),
]
REPOSITORY_INFO_CASES = [
    (ref, remote, full, domain)
    for remote, familiar, full, ambiguous, domain in REPOSITORY_INFO
    for ref in (familiar, full, ambiguous)
    if ref
]


@pytest.mark.parametrize(("reference", "path", "name", "domain"), REPOSITORY_INFO_CASES, ids=_id)
def test_parse_repository_info(reference: str, path: str, name: str, domain: str) -> None:
    ref = _ok(reference)
    assert ref.name == name
    assert ref.canonical == name
    assert ref.domain == domain
    assert ref.path == path
    assert ref.tag is None
    assert ref.digest is None


def test_parse_reference_with_tag_and_digest() -> None:
    digest = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    short = f"busybox:latest@{digest}"
    ref = _ok(short)
    assert ref.canonical == "docker.io/library/" + short
    assert ref.tag == "latest"
    assert ref.digest == digest


def test_invalid_reference_components() -> None:
    _bad("-foo")


# TestParseAnyReference, the cases that are names (ParseAnyReference returns a bare
# digest for the others; ParseNormalizedNamed, which the kubelet uses, does not).
DIGEST_DB = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
PARSE_ANY_REFERENCE_CASES = [
    ("redis", "docker.io/library/redis"),
    ("redis:latest", "docker.io/library/redis:latest"),
    ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
    (f"redis@{DIGEST_DB}", f"docker.io/library/redis@{DIGEST_DB}"),
    (f"docker.io/library/redis@{DIGEST_DB}", f"docker.io/library/redis@{DIGEST_DB}"),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp"),
    ("dmcgowan/myapp:latest", "docker.io/dmcgowan/myapp:latest"),
    ("docker.io/mcgowan/myapp:latest", "docker.io/mcgowan/myapp:latest"),
    (f"dmcgowan/myapp@{DIGEST_DB}", f"docker.io/dmcgowan/myapp@{DIGEST_DB}"),
    (f"docker.io/dmcgowan/myapp@{DIGEST_DB}", f"docker.io/dmcgowan/myapp@{DIGEST_DB}"),
    (
        "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
        "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
    ),
    ("dbcc1", "docker.io/library/dbcc1"),
]


@pytest.mark.parametrize(("reference", "canonical"), PARSE_ANY_REFERENCE_CASES, ids=_id)
def test_parse_any_reference_named(reference: str, canonical: str) -> None:
    assert _ok(reference).canonical == canonical


def test_bare_identifier_is_not_a_name() -> None:
    identifier = DIGEST_DB.removeprefix("sha256:")
    bad = _bad(identifier)
    assert bad.reason == (
        f"invalid repository name ({identifier}), cannot specify 64-byte hexadecimal strings"
    )


def test_bare_digest_parses_as_an_image_named_sha256() -> None:
    # ParseAnyReference would return a digest; ParseNormalizedNamed reads "sha256" as
    # a repository on Docker Hub and the 64 hex digits as its tag (a valid tag).
    ref = _ok(DIGEST_DB)
    assert ref.name == "docker.io/library/sha256"
    assert ref.tag == DIGEST_DB.removeprefix("sha256:")
    assert ref.digest is None


# TestNormalizedSplitHostname
SPLIT_HOSTNAME_CASES = [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "docker.io", "test_com/foo"),
    ("docker/migrator", "docker.io", "docker/migrator"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("foo", "docker.io", "library/foo"),
    ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
]


@pytest.mark.parametrize(("reference", "domain", "path"), SPLIT_HOSTNAME_CASES, ids=_id)
def test_normalized_split_hostname(reference: str, domain: str, path: str) -> None:
    ref = _ok(reference)
    assert (ref.domain, ref.path) == (domain, path)
    assert ref.name == f"{domain}/{path}"


# TestParseDockerRef: ParseDockerRef(input) == expected. ParseDockerRef adds ":latest"
# and drops the tag of a tag+digest reference; the repository and digest it keeps must
# be what parse_image finds.
DIGEST_E6 = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582"
PARSE_DOCKER_REF_CASES = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:latest", "docker.io/library/busybox:latest"),
    (f"busybox@{DIGEST_E6}", f"docker.io/library/busybox@{DIGEST_E6}"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox:latest", "docker.io/library/busybox:latest"),
    ("library/busybox:latest", "docker.io/library/busybox:latest"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
    ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
    (f"gcr.io/library/busybox:latest@{DIGEST_E6}", f"gcr.io/library/busybox@{DIGEST_E6}"),
]


@pytest.mark.parametrize(("reference", "docker_ref"), PARSE_DOCKER_REF_CASES, ids=_id)
def test_parse_docker_ref(reference: str, docker_ref: str) -> None:
    ref = _ok(reference)
    expected = _ok(docker_ref)
    assert expected.canonical == docker_ref  # the expected value is itself canonical
    assert ref.name == expected.name
    assert ref.digest == expected.digest
    if ref.digest is None:
        assert (ref.tag or "latest") == expected.tag


# --------------------------------------------------------------------------------------
# reference_test.go, TestReferenceParse, through ParseNormalizedNamed.
#
# Upstream runs these through Parse (no normalisation). The kubelet calls
# ParseNormalizedNamed, so each expectation below is re-derived from splitDockerDomain:
# a first component is a domain only if it is "localhost", contains "." or ":", or is
# not lowercase; otherwise the image is on docker.io (with "library/" for one
# component). Where that changes upstream's Parse answer, the comment says so.
# Each case: (input, (domain, path, tag, digest)) or (input, error reason).
# --------------------------------------------------------------------------------------

Expected = tuple[str, str, str | None, str | None]

REFERENCE_PARSE_CASES: list[tuple[str, Expected | str]] = [
    ("test_com", ("docker.io", "library/test_com", None, None)),  # Parse: no domain
    ("test.com:tag", ("docker.io", "library/test.com", "tag", None)),
    ("test.com:5000", ("docker.io", "library/test.com", "5000", None)),  # a tag, not a port
    ("test.com/repo:tag", ("test.com", "repo", "tag", None)),
    ("test:5000/repo", ("test:5000", "repo", None, None)),
    ("test:5000/repo:tag", ("test:5000", "repo", "tag", None)),
    (f"test:5000/repo@{SHA256_F}", ("test:5000", "repo", None, SHA256_F)),
    (f"test:5000/repo:tag@{SHA256_F}", ("test:5000", "repo", "tag", SHA256_F)),
    ("", INVALID_FORMAT),  # Parse: ErrNameEmpty; normalised it is "docker.io/library/"
    (":justtag", INVALID_FORMAT),
    (f"@{SHA256_F}", INVALID_FORMAT),
    ("repo@sha256:" + "f" * 34, DIGEST_LENGTH),
    ("validname@invaliddigest:" + "f" * 64, DIGEST_UNSUPPORTED),
    ("Uppercase:tag", f"{INVALID_FORMAT}: repository name (library/Uppercase) must be lowercase"),
    # Upstream's FIXME ("Uppercase" taken as a domain) is the documented behaviour of
    # the newer splitDockerDomain: a first component that is not lowercase is a domain.
    ("Uppercase/lowercase:tag", ("Uppercase", "lowercase", "tag", None)),
    (
        "test:5000/Uppercase/lowercase:tag",
        f"{INVALID_FORMAT}: repository name (Uppercase/lowercase) must be lowercase",
    ),
    ("lowercase:Uppercase", ("docker.io", "library/lowercase", "Uppercase", None)),
    ("domain/" + "a" * 256 + ":tag", TOO_LONG),
    # Parse: domain "a"; normalised: "a" is lowercase without "." or ":", so docker.io,
    # and the 255-character path is still within the limit.
    (
        "a/" * 127 + "a:tag-puts-this-over-max",
        ("docker.io", "a/" * 127 + "a", "tag-puts-this-over-max", None),
    ),
    ("aa/asdf$$^/aa", INVALID_FORMAT),
    ("sub-dom1.foo.com/bar/baz/quux", ("sub-dom1.foo.com", "bar/baz/quux", None, None)),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None),
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        ("b.gcr.io", "test.example.com/my-app", "test.example.com", None),
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", ("xn--n3h.com", "myimage", "xn--n3h.com", None)),
    (
        f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512_F}",
        ("xn--7o8h.com", "myimage", "xn--7o8h.com", SHA512_F),
    ),
    ("foo_bar.com:8080", ("docker.io", "library/foo_bar.com", "8080", None)),
    # Parse: domain "foo"; normalised: "foo" is a Docker Hub namespace.
    ("foo/foo_bar.com:8080", ("docker.io", "foo/foo_bar.com", "8080", None)),
    ("192.168.1.1", ("docker.io", "library/192.168.1.1", None, None)),
    ("192.168.1.1:tag", ("docker.io", "library/192.168.1.1", "tag", None)),
    ("192.168.1.1:5000", ("docker.io", "library/192.168.1.1", "5000", None)),
    ("192.168.1.1/repo", ("192.168.1.1", "repo", None, None)),
    ("192.168.1.1:5000/repo", ("192.168.1.1:5000", "repo", None, None)),
    ("192.168.1.1:5000/repo:5050", ("192.168.1.1:5000", "repo", "5050", None)),
    ("[2001:db8::1]", INVALID_FORMAT),
    ("[2001:db8::1]:5000", INVALID_FORMAT),
    ("[2001:db8::1]:tag", INVALID_FORMAT),
    ("[2001:db8::1]/repo", ("[2001:db8::1]", "repo", None, None)),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", ("[2001:db8:1:2:3:4:5:6]", "repo", "tag", None)),
    ("[2001:db8::1]:5000/repo", ("[2001:db8::1]:5000", "repo", None, None)),
    ("[2001:db8::1]:5000/repo:tag", ("[2001:db8::1]:5000", "repo", "tag", None)),
    (f"[2001:db8::1]:5000/repo@{SHA256_F}", ("[2001:db8::1]:5000", "repo", None, SHA256_F)),
    (
        f"[2001:db8::1]:5000/repo:tag@{SHA256_F}",
        ("[2001:db8::1]:5000", "repo", "tag", SHA256_F),
    ),
    ("[2001:db8::]:5000/repo", ("[2001:db8::]:5000", "repo", None, None)),
    ("[::1]:5000/repo", ("[::1]:5000", "repo", None, None)),
    ("[fe80::1%eth0]:5000/repo", INVALID_FORMAT),
    ("[fe80::1%@invalidzone]:5000/repo", INVALID_FORMAT),
    # v0.6.0: only the path counts towards the 255 limit, not the domain.
    ("example.com/" + "a" * 255 + ":tag", ("example.com", "a" * 255, "tag", None)),
]


@pytest.mark.parametrize(("reference", "expected"), REFERENCE_PARSE_CASES, ids=_id)
def test_reference_parse_normalized(reference: str, expected: Expected | str) -> None:
    if isinstance(expected, str):
        assert _bad(reference).reason == expected
        return
    ref = _ok(reference)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == expected


# TestSerialization (the Field round trip is Parse; these are canonical already).
@pytest.mark.parametrize(
    ("reference", "name", "tag", "digest"),
    [
        ("example.com:8000/named", "example.com:8000/named", None, None),
        ("example.com:8000/named:tagged", "example.com:8000/named", "tagged", None),
        (
            "other.com/named@sha256:1234567890098765432112345667890098765432112345667890098765432112",
            "other.com/named",
            None,
            "sha256:1234567890098765432112345667890098765432112345667890098765432112",
        ),
    ],
    ids=_id,
)
def test_serialization_names(
    reference: str, name: str, tag: str | None, digest: str | None
) -> None:
    ref = _ok(reference)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert ref.canonical == reference


# TestParseNamed: ParseNamed(s) = ParseNormalizedNamed(s), and an error unless
# String() == s. (input, (domain, path)) when canonical, (input, None) when not.
PARSE_NAMED_CASES: list[tuple[str, tuple[str, str] | None]] = [
    ("test.com/foo", ("test.com", "foo")),
    ("test:8080/foo", ("test:8080", "foo")),
    ("test_com/foo", None),
    ("test.com", None),
    ("foo", None),
    ("library/foo", None),
    ("docker.io/library/foo", ("docker.io", "library/foo")),
    ("docker.io/foo", None),  # ambiguous: the parser adds "library/"
]


@pytest.mark.parametrize(("reference", "expected"), PARSE_NAMED_CASES, ids=_id)
def test_parse_named_canonical(reference: str, expected: tuple[str, str] | None) -> None:
    ref = _ok(reference)
    if expected is None:
        assert ref.canonical != reference
    else:
        assert ref.canonical == reference
        assert (ref.domain, ref.path) == expected


# --------------------------------------------------------------------------------------
# What the webhook relies on (the kubelet's keyring lookup key), digests, odd inputs
# --------------------------------------------------------------------------------------

KUBELET_NAME_CASES = [
    ("nginx", "docker.io", "library/nginx", None, None),
    ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
    ("index.docker.io/foo", "docker.io", "library/foo", None, None),
    ("index.docker.io/foo/bar:1", "docker.io", "foo/bar", "1", None),
    ("docker.io/foo", "docker.io", "library/foo", None, None),
    (
        f"registry.example.com:5000/team/app:v1@{SHA256_F}",
        "registry.example.com:5000",
        "team/app",
        "v1",
        SHA256_F,
    ),
    ("localhost/foo", "localhost", "foo", None, None),
    ("localhost:5000/foo", "localhost:5000", "foo", None, None),
    # A bare "localhost" (or "example.com") is a Docker Hub image (upstream FIXME).
    ("localhost", "docker.io", "library/localhost", None, None),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ("example.com", "docker.io", "library/example.com", None, None),
    ("docker.io", "docker.io", "library/docker.io", None, None),
    # registry-1.docker.io is NOT aliased upstream, and gets no "library/".
    ("registry-1.docker.io/foo", "registry-1.docker.io", "foo", None, None),
    # Only the exact legacy spelling is aliased; the domain keeps its case.
    ("INDEX.DOCKER.IO/foo", "INDEX.DOCKER.IO", "foo", None, None),
    ("Registry.Example.com/team", "Registry.Example.com", "team", None, None),
    ("gcr.io/project/app", "gcr.io", "project/app", None, None),
    (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "app",
        None,
        None,
    ),
    ("[::1]/repo", "[::1]", "repo", None, None),
    ("[::1]:5000/a/b/c:tag", "[::1]:5000", "a/b/c", "tag", None),
    ("[fd00123123123]:75050/repo", "[fd00123123123]:75050", "repo", None, None),
    ("host:000080/repo", "host:000080", "repo", None, None),
    ("quay.io/org/a--b__c.d/e", "quay.io", "org/a--b__c.d/e", None, None),
]


@pytest.mark.parametrize(
    ("reference", "domain", "path", "tag", "digest"), KUBELET_NAME_CASES, ids=_id
)
def test_kubelet_names(
    reference: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = _ok(reference)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.name == f"{domain}/{path}"


def test_domain_that_only_the_path_grammar_accepts_gives_an_empty_domain() -> None:
    # splitDockerDomain takes "foo_bar.com" as a domain (it has a "."), but "_" is not
    # allowed in a domain, so Parse reads the whole name as a path: Domain() is "" and
    # Name() is the bare path. This is what the kubelet looks credentials up with.
    ref = _ok("foo_bar.com/app:1")
    assert (ref.domain, ref.path, ref.tag) == ("", "foo_bar.com/app", "1")
    assert ref.name == "foo_bar.com/app"
    assert ref.canonical == "foo_bar.com/app:1"
    assert ref.registry_host == ""
    _bad("foo_bar.com:8080/app")  # the ":8080" then has nowhere to go


@pytest.mark.parametrize(
    ("reference", "host"),
    [
        ("nginx", "docker.io"),
        ("index.docker.io/foo", "docker.io"),
        ("registry-1.docker.io/foo", "docker.io"),
        ("Registry-1.Docker.IO/foo", "docker.io"),
        ("registry-1.docker.io:443/foo", "registry-1.docker.io:443"),
        ("Registry.Example.com:5000/team", "registry.example.com:5000"),
        ("[::1]:5000/repo", "[::1]:5000"),
        ("localhost/foo", "localhost"),
    ],
    ids=_id,
)
def test_registry_host(reference: str, host: str) -> None:
    assert _ok(reference).registry_host == host


def test_registry_host_does_not_change_name() -> None:
    ref = _ok("registry-1.docker.io/library/nginx")
    assert ref.registry_host == "docker.io"
    assert ref.name == "registry-1.docker.io/library/nginx"
    assert ref.domain == "registry-1.docker.io"


DIGEST_CASES: list[tuple[str, str | None]] = [
    (f"repo@{SHA256_F}", None),
    ("repo@sha384:" + "0" * 96, None),
    (f"repo@{SHA512_F}", None),
    ("repo@sha256:" + "f" * 63, DIGEST_LENGTH),
    ("repo@sha256:" + "f" * 65, DIGEST_LENGTH),
    ("repo@sha512:" + "f" * 64, DIGEST_LENGTH),
    ("repo@sha256:" + "F" * 64, DIGEST_FORMAT),  # go-digest: lowercase hex only
    ("repo@sha256:" + "f" * 31, INVALID_FORMAT),  # fewer than 32 hex: grammar
    ("repo@md5:" + "f" * 32, DIGEST_UNSUPPORTED),
    ("repo@sha256+b64:" + "f" * 64, DIGEST_UNSUPPORTED),
    # Grammar allows an uppercase algorithm, go-digest's own regexp does not.
    ("repo:tag@SHA256:" + "f" * 64, DIGEST_FORMAT),
    # Without a tag the "@SHA256" is inside what the lowercase check looks at.
    (
        "repo@SHA256:" + "f" * 64,
        f"{INVALID_FORMAT}: repository name (library/repo@SHA256) must be lowercase",
    ),
    ("repo@sha256:" + "g" * 64, INVALID_FORMAT),
    ("repo@sha256", INVALID_FORMAT),
    (f"repo@{SHA256_F}@{SHA256_F}", INVALID_FORMAT),
    (f"repo@{SHA256_F}:tag", INVALID_FORMAT),
]


@pytest.mark.parametrize(("reference", "error"), DIGEST_CASES, ids=_id)
def test_digests(reference: str, error: str | None) -> None:
    if error is None:
        ref = _ok(reference)
        assert ref.digest == reference.split("@", 1)[1]
        assert ref.name == "docker.io/library/repo"
    else:
        assert _bad(reference).reason == error


TAG_CASES: list[tuple[str, str | None]] = [
    ("a:" + "t" * 128, "t" * 128),
    ("a:" + "t" * 129, None),
    ("a:_x", "_x"),
    ("a:X.Y-Z_1", "X.Y-Z_1"),
    ("a:.x", None),
    ("a:-x", None),
    ("a:", None),
    ("a:x:y", None),
    ("a:x/y", None),
]


@pytest.mark.parametrize(("reference", "tag"), TAG_CASES, ids=_id)
def test_tags(reference: str, tag: str | None) -> None:
    if tag is None:
        assert _bad(reference).reason == INVALID_FORMAT
    else:
        assert _ok(reference).tag == tag


def test_path_length_limit_counts_library_prefix() -> None:
    limit = REPOSITORY_NAME_TOTAL_LENGTH_MAX
    assert limit == 255
    longest = "a" * (limit - len("library/"))
    assert _ok(longest).path == "library/" + longest
    assert _bad(longest + "a").reason == TOO_LONG
    # A long domain does not count.
    ref = _ok("x" * 300 + ".example.com/" + "p" * limit)
    assert len(ref.path) == limit
    assert _bad("example.com/" + "p" * (limit + 1)).reason == TOO_LONG


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("", INVALID_FORMAT),
        (" ", INVALID_FORMAT),
        (" nginx", INVALID_FORMAT),
        ("nginx ", INVALID_FORMAT),
        ("nginx\n", INVALID_FORMAT),
        ("\tnginx", INVALID_FORMAT),
        ("nginx\x00", INVALID_FORMAT),
        ("/nginx", INVALID_FORMAT),
        ("nginx/", INVALID_FORMAT),
        ("docker.io/", INVALID_FORMAT),
        ("https://registry.example.com/app", INVALID_FORMAT),
        ("registry.example.com//app", INVALID_FORMAT),
        ("host:x/y", INVALID_FORMAT),  # a domain (has ":"), but "x" is no port
        ("host:/y", INVALID_FORMAT),
        ("ngïnx", INVALID_FORMAT),
        ("\ud800", INVALID_FORMAT),
        ("NGINX", f"{INVALID_FORMAT}: repository name (library/NGINX) must be lowercase"),
        ("Foo_Bar/x", UPPERCASE),  # a domain by case, but "_" is not allowed there
        ("İ.com/x", UPPERCASE),  # Go lowers U+0130 to "i": the rest then matches
        ("library/Nginx", f"{INVALID_FORMAT}: repository name (library/Nginx) must be lowercase"),
    ],
    ids=_id,
)
def test_invalid_reasons(reference: str, reason: str) -> None:
    assert _bad(reference).reason == reason


@pytest.mark.parametrize(
    "value", [None, 1, 1.5, b"nginx", bytearray(b"nginx"), ["nginx"], {"image": "x"}, object()]
)
def test_non_string_is_invalid_not_raised(value: Any) -> None:
    result = parse_image(value)
    assert isinstance(result, InvalidImage)
    assert type(value).__name__ in result.reason
    assert isinstance(result.original, str)


def test_hostile_repr_is_contained() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    result = parse_image(Hostile())  # type: ignore[arg-type]
    assert isinstance(result, InvalidImage)
    assert "Hostile" in result.original


def test_str_subclass_with_hostile_hash() -> None:
    class Weird(str):
        def __hash__(self) -> int:
            raise RuntimeError("no hashing")

        def __str__(self) -> str:
            return "evil"

    result = parse_image(Weird("nginx:1"))
    assert isinstance(result, ImageRef)
    assert result.name == "docker.io/library/nginx"
    assert type(result.original) is str
    assert result.original == "nginx:1"


def test_results_are_immutable_and_cached() -> None:
    first = _ok("registry.example.com/team/app:v1")
    assert first is parse_image("registry.example.com/team/app:v1")
    with pytest.raises(AttributeError):
        first.tag = "v2"  # type: ignore[misc]


def test_long_input_is_not_cached_but_same_answer() -> None:
    long_ref = "registry.example.com/" + "/".join(["p"] * 120) + ":" + "t" * 128
    assert len(long_ref) > 300
    assert parse_image(long_ref) == _parse_normalized_named(long_ref)
    huge = "a" * 200_000 + "!"
    assert isinstance(parse_image(huge), InvalidImage)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

GRAMMAR_ALPHABET = "abcxyzABZ019._-:/@[]%+ é\n"


@settings(max_examples=400)
@given(st.one_of(st.text(), st.text(alphabet=GRAMMAR_ALPHABET, max_size=80)))
@example("")
@example(":")
@example("@")
@example("/")
@example("[")
@example("a@sha256:" + "f" * 64)
def test_never_raises_and_keeps_original(text: str) -> None:
    result = parse_image(text)
    assert isinstance(result, ImageRef | InvalidImage)
    assert result.original == text
    assert result == _parse_normalized_named(text)


_path_component = st.from_regex(
    re.compile(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,2}", re.ASCII), fullmatch=True
)
_path = st.lists(_path_component, min_size=1, max_size=4).map("/".join)
_dns_label = st.from_regex(
    re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", re.ASCII), fullmatch=True
)
_port = st.integers(min_value=0, max_value=99999).map(lambda p: f":{p}")
_dotted_host = st.lists(_dns_label, min_size=2, max_size=4).map(".".join)
# Needs a ":" to be taken as a domain: "[0]/x" is a (bad) Docker Hub path upstream.
_ipv6 = st.from_regex(
    re.compile(r"\[[a-fA-F0-9]{0,4}:[a-fA-F0-9:]{0,30}\]", re.ASCII), fullmatch=True
)
_explicit_domain = st.one_of(
    st.tuples(_dotted_host, st.one_of(st.just(""), _port)).map("".join),
    st.tuples(_dns_label, _port).map("".join),  # "host:port" without a dot
    st.tuples(_ipv6, st.one_of(st.just(""), _port)).map("".join),
    st.just("localhost"),
    st.tuples(st.just("localhost"), _port).map("".join),
).filter(lambda d: d not in {"index.docker.io", "docker.io"})
_tag = st.from_regex(re.compile(r"[\w][\w.-]{0,20}", re.ASCII), fullmatch=True)
_HEX = "0123456789abcdef"
_digest = st.sampled_from([("sha256", 64), ("sha384", 96), ("sha512", 128)]).flatmap(
    lambda alg: st.text(alphabet=_HEX, min_size=alg[1], max_size=alg[1]).map(
        lambda hexits: f"{alg[0]}:{hexits}"
    )
)


@settings(max_examples=300)
@given(
    domain=_explicit_domain,
    path=_path,
    tag=st.one_of(st.none(), _tag),
    digest=st.one_of(st.none(), _digest),
)
def test_round_trip_explicit_domain(
    domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    text = f"{domain}/{path}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    ref = _ok(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.name == f"{domain}/{path}"
    assert ref.canonical == text


@settings(max_examples=200)
@given(path=_path, tag=st.one_of(st.none(), _tag), digest=st.one_of(st.none(), _digest))
def test_round_trip_docker_hub(path: str, tag: str | None, digest: str | None) -> None:
    # A first component with "." is a domain; the path grammar allows it in a path.
    assume("." not in path.split("/", 1)[0] or "/" not in path)
    suffix = (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")
    assume(_IDENTIFIER_RE.fullmatch(path + suffix) is None)
    ref = _ok(path + suffix)
    expected_path = path if "/" in path else f"library/{path}"
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", expected_path, tag, digest)
    for alias in ("docker.io", "index.docker.io"):
        again = _ok(f"{alias}/{path}{suffix}")
        assert (again.name, again.tag, again.digest) == (ref.name, tag, digest)


_any_first = st.one_of(
    st.just(""),
    _explicit_domain.map(lambda d: d + "/"),
    st.sampled_from(["docker.io/", "index.docker.io/", "registry-1.docker.io/", "Foo/"]),
    st.sampled_from(["FOO/", "foo_bar.com/", "Index.Docker.IO/", "[A]/", "[0]/"]),
)
_reference_like = st.builds(
    lambda first, path, tag, digest: (
        first
        + path
        + (f":{tag}" if tag is not None else "")
        + (f"@{digest}" if digest is not None else "")
    ),
    _any_first,
    _path,
    st.one_of(st.none(), _tag),
    st.one_of(st.none(), _digest),
)


@settings(max_examples=300)
@given(st.one_of(_reference_like, st.text(alphabet=GRAMMAR_ALPHABET, max_size=60)))
def test_normalisation_is_idempotent(text: str) -> None:
    ref = parse_image(text)
    assume(isinstance(ref, ImageRef))
    assert isinstance(ref, ImageRef)
    # Invariants of every successful parse.
    assert _REFERENCE_RE.fullmatch(ref.canonical) is not None
    assert len(ref.path) <= REPOSITORY_NAME_TOTAL_LENGTH_MAX
    assert ref.path == ref.path.lower()
    assert ref.domain != "index.docker.io"
    # Parsing the normalised form changes nothing.
    again = _ok(ref.canonical)
    assert (again.domain, again.path, again.tag, again.digest) == (
        ref.domain,
        ref.path,
        ref.tag,
        ref.digest,
    )
    suffix = f":{ref.tag}" if ref.tag is not None else ""
    assert _ok(ref.name + suffix).name == ref.name
