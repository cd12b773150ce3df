"""webhook.kubelet keyring, dockerconfig and _go: the kubelet's keyring, to the letter.

The first sections port kubernetes' own tests (keyring_test.go, config_test.go,
secrets/secrets_test.go) as tables; the rest pin down Go semantics the port depends on
(url.Parse, filepath.Match, encoding/json, encoding/base64) and the module's own
contract (errors, ignored secrets, reasons without credentials, never raising).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.kubelet import _go, dockerconfig
from webhook.kubelet.dockerconfig import (
    REGISTRY_SECRET_TYPES,
    SECRET_TYPE_DOCKERCFG,
    SECRET_TYPE_DOCKERCONFIGJSON,
    ParsedDockerConfig,
    parse_docker_config,
)
from webhook.kubelet.keyring import (
    KeyringMatch,
    RegistryKey,
    is_default_registry_match,
    key_matches,
    keyring_lookup,
)

# --- helpers ----------------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


FOO_BAR = b64("foo:bar")  # upstream's sample credentials: username foo, password bar


def config_json(doc: Any) -> ParsedDockerConfig:
    """A kubernetes.io/dockerconfigjson secret; doc is JSON text or a JSON value."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": b64(text)})


def dockercfg(doc: Any) -> ParsedDockerConfig:
    """A legacy kubernetes.io/dockercfg secret; doc is JSON text or a JSON value."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return parse_docker_config(SECRET_TYPE_DOCKERCFG, {".dockercfg": b64(text)})


def keys_of(parsed: ParsedDockerConfig) -> list[str]:
    assert parsed.error is None, parsed.error
    return sorted(k.key for k in parsed.keys)


def sample_keys(location: str) -> tuple[RegistryKey, ...]:
    """The keys of upstream's sampleDockerConfig for one location (email + auth)."""
    parsed = dockercfg({location: {"email": "foo@bar.baz", "auth": FOO_BAR}})
    assert parsed.error is None
    assert not parsed.ignored
    return parsed.keys


def ring(*secrets: tuple[str, ParsedDockerConfig]) -> list[tuple[str, tuple[RegistryKey, ...]]]:
    return [(name, parsed.keys) for name, parsed in secrets]


HIT = KeyringMatch(("s",), via_default_registry=False)
HUB_HIT = KeyringMatch(("s",), via_default_registry=True)
MISS = KeyringMatch((), via_default_registry=False)


# --- keyring_test.go --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "target", "expected"),
    [
        # match when there is no path component
        ("*.kubernetes.io", "prefix.kubernetes.io", True),
        ("prefix.*.io", "prefix.kubernetes.io", True),
        ("prefix.kubernetes.*", "prefix.kubernetes.io", True),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io", True),
        # match with path components
        ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", True),
        ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", True),
        # match with path components and ports
        ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", True),
        ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", True),
        # no match when number of parts mismatch
        ("*.kubernetes.io", "kubernetes.io", False),
        ("*.*.kubernetes.io", "prefix.kubernetes.io", False),
        ("*.*.kubernetes.io", "kubernetes.io", False),
        # no match when some parts mismatch
        ("kubernetes.io", "kubernetes.com", False),
        ("k*.io", "quay.io", False),
        # no match when ports mismatch
        ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", False),
        ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", False),
    ],
)
def test_urls_match(glob: str, target: str, expected: bool) -> None:
    assert key_matches(RegistryKey(glob), target) is expected


@pytest.mark.parametrize(
    ("glob_url", "target_url"),
    [
        ("https://hello.kubernetes.io", "hello.kubernetes.io"),
        ("https://*.docker.io", "prefix.docker.io"),
        ("https://prefix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.*", "prefix.docker.io"),
        ("https://*.docker.io/path", "prefix.docker.io/path"),
        ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
        ("https://prefix.docker.*/path", "prefix.docker.io/path"),
        ("https://*.docker.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
        ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
        ("https://*.docker.io/path:1111", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v1/", "prefix.docker.io/path:1111"),
        ("https://*.docker.io/v2/", "prefix.docker.io/path:1111"),
        ("https://prefix.docker.*/path:1111", "prefix.docker.io/path:1111"),
        ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
        ("*.docker.io:1111", "prefix.docker.io:1111/path"),
    ],
)
def test_docker_keyring_for_glob(glob_url: str, target_url: str) -> None:
    assert keyring_lookup([("s", sample_keys(glob_url))], target_url + "/foo/bar") == HIT


@pytest.mark.parametrize(
    ("glob_url", "lookup_url"),
    [
        ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
        ("https://*.docker.com", "prefix.docker.io"),
        ("https://suffix.*.io", "prefix.docker.io"),
        ("https://prefix.docker.c*", "prefix.docker.io"),
        ("https://prefix.*.io/path:1111", "prefix.docker.io/path/subpath:1111"),
        ("suffix.*.io", "prefix.docker.io"),
    ],
)
def test_keyring_miss(glob_url: str, lookup_url: str) -> None:
    assert keyring_lookup([("s", sample_keys(glob_url))], lookup_url + "/foo/bar") == MISS


DOCKER_HUB = "https://index.docker.io/v1/"  # "https://" + defaultRegistryKey


def test_keyring_miss_with_docker_hub_credentials() -> None:
    assert keyring_lookup([("s", sample_keys(DOCKER_HUB))], "world.mesos.org/foo/bar") == MISS


def test_keyring_hit_with_unqualified_docker_hub() -> None:
    assert keyring_lookup([("s", sample_keys(DOCKER_HUB))], "google/docker-registry") == HUB_HIT


def test_keyring_hit_with_unqualified_library_docker_hub() -> None:
    assert keyring_lookup([("s", sample_keys(DOCKER_HUB))], "jenkins") == HUB_HIT


def test_keyring_hit_with_qualified_docker_hub() -> None:
    # Upstream looks up "index.docker.io/v1/" + "/google/docker-registry": the key
    # index.docker.io matches it directly, without the fallback.
    image = "index.docker.io/v1//google/docker-registry"
    assert keyring_lookup([("s", sample_keys(DOCKER_HUB))], image) == HIT


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("foo/bar", True),
        ("docker.io/foo/bar", True),
        ("index.docker.io/foo/bar", True),
        ("foo", True),
        ("", False),
        ("registry.tld/foo/bar", False),
        ("registry:5000/foo/bar", False),
        ("myhostdocker.io/foo/bar", False),
        # beyond upstream's table
        ("docker.io/library/nginx", True),
        ("localhost/foo", True),  # no "." or ":" in the first component
        ("/foo", False),
    ],
)
def test_is_default_registry_match(image: str, expected: bool) -> None:
    assert is_default_registry_match(image) is expected


def _lookup_ring() -> list[tuple[str, tuple[RegistryKey, ...]]]:
    grace = config_json({"auths": {"bar.example.com/pong": {"username": "grace"}}})
    ada = config_json({"auths": {"bar.example.com": {"username": "ada"}}})
    return ring(("ada", ada), ("grace", grace))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("bar.example.com", ("ada",)),  # direct match
        ("bar.example.com/pong", ("grace", "ada")),  # deeper match first
        ("bar.example.com/ping", ("ada",)),  # no direct match, deeper path ignored
        ("bar.example.com/pongz", ("grace", "ada")),  # match first part of path token
        ("bar.example.com/pong/pang", ("grace", "ada")),  # regardless of sub-path
        ("example.com", ()),  # no host match
        ("foo.example.com", ()),
    ],
)
def test_docker_keyring_lookup(image: str, expected: tuple[str, ...]) -> None:
    assert keyring_lookup(_lookup_ring(), image) == KeyringMatch(expected, False)
    # The order comes from the keys, not from the order of the secrets.
    assert keyring_lookup(list(reversed(_lookup_ring())), image).secrets == expected


@pytest.mark.parametrize("image", ["quay.io", "quay.io/foo", "quay.io/foo/bar"])
def test_issue_3797_scheme_and_path_match_host_only_images(image: str) -> None:
    parsed = config_json({"auths": {"https://quay.io/v1/": {"username": "rex"}}})
    assert keys_of(parsed) == ["quay.io"]
    assert keyring_lookup([("s", parsed.keys)], image) == HIT


# --- config_test.go ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "ok"),
    [
        ("Zm9vOmJhcg==", True),  # auth field decodes to username & password
        ("cGFudHM=", False),  # good base64 data, but no colon
        ("pants", False),  # bad base64 data
        # padded (StdEncoding) when it ends in "=", else unpadded (RawStdEncoding)
        ("Zm9vOmJhcg", True),
        ("Zm9vOmJhcg=", False),  # a padded string must have a length that is a multiple of 4
        ("Zm9vOmJhcg==\n", True),  # TrimSpace for the test; '\n' is ignored by the decoder
        ("Zm9vOmJhcg\r\n", True),
        ("Zm9v\nOmJhcg==", True),
        (" Zm9vOmJhcg==", False),  # a space is not base64 and is not trimmed
        ("Zm9vOmJhcg==\u3000", False),  # trimmed for the test only, not for decoding
        ("Zm9vOmJh cg==", False),
        ("Q", False),  # one character is not a quantum
        ("====", False),
        ("Zm9vOmJhcg===", False),
        ("OjpiYXI=", True),  # "::bar": the first colon splits
        ("Og==", True),  # ":" alone: empty username and password
        ("Zm9v-mJhcg", False),  # URL alphabet is not StdEncoding
    ],
)
def test_decode_docker_config_field_auth(auth: str, ok: bool) -> None:
    parsed = config_json({"auths": {"registry.io": {"auth": auth}}})
    if ok:
        assert parsed.error is None
        assert keys_of(parsed) == ["registry.io"]
    else:
        assert parsed.error is not None
        assert '"auth"' in parsed.error
        assert parsed.keys == ()


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ('{"username": "foo", "password": "bar", "email": "foo@example.com"}', True),
        ('{"auth": "Zm9vOmJhcg==", "email": "foo@example.com"}', True),
        (
            '{"username": "foo", "password": "bar", "auth": "cGluZzpwb25n", '
            '"email": "foo@example.com"}',
            True,
        ),
        ('{"auth": "pants", "email": "foo@example.com"}', False),  # poorly-formatted auth
        ('{"email": false}', False),  # invalid JSON type
    ],
)
def test_docker_config_entry_json_decode(entry: str, ok: bool) -> None:
    parsed = dockercfg('{"registry.io": ' + entry + "}")
    assert (parsed.error is None) is ok
    assert [k.key for k in parsed.keys] == (["registry.io"] if ok else [])


def test_docker_config_json_decode() -> None:
    doc = {
        "auths": {
            "http://foo.example.com": {"username": "foo", "password": "bar", "email": "foo@e.com"},
            "http://bar.example.com": {"username": "bar", "password": "baz", "email": "bar@e.com"},
        }
    }
    assert keys_of(config_json(doc)) == ["bar.example.com", "foo.example.com"]


def test_legacy_docker_config_decode() -> None:
    doc = {
        "http://foo.example.com": {"username": "foo", "password": "bar", "email": "foo@e.com"},
        "http://bar.example.com": {"username": "bar", "password": "baz", "email": "bar@e.com"},
    }
    assert keys_of(dockercfg(doc)) == ["bar.example.com", "foo.example.com"]


def test_read_docker_config_file_sample() -> None:
    text = (
        '{ "auths": { "http://foo.example.com":{"auth":"Zm9vOmJhcgo=","email":"foo@example.com"}}}'
    )
    assert keys_of(config_json(text)) == ["foo.example.com"]


# --- secrets/secrets_test.go (MakeDockerKeyring) -----------------------------------------

AUTH_USER_PASSWORD = "dXNlcjpwYXNzd29yZA=="


@pytest.mark.parametrize(
    ("secret_type", "data_key", "text", "found"),
    [
        (
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            '{"auths": {"test.registry.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}}',
            True,
        ),
        (
            SECRET_TYPE_DOCKERCFG,
            ".dockercfg",
            '{"test.registry.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}',
            True,
        ),
        (
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            '{"auths": {"test.registry.io": {"username": "user", "password": "password"}}}',
            True,
        ),
        (
            SECRET_TYPE_DOCKERCFG,
            ".dockercfg",
            '{"test.registry.io": {"username": "user", "password": "password"}}',
            True,
        ),
        (
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            '{"auths": {"foobar.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}}',
            False,
        ),
        (
            SECRET_TYPE_DOCKERCFG,
            ".dockercfg",
            '{"foobar.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}',
            False,
        ),
    ],
)
def test_make_docker_keyring(secret_type: str, data_key: str, text: str, found: bool) -> None:
    parsed = parse_docker_config(secret_type, {data_key: b64(text)})
    assert parsed.error is None
    assert not parsed.ignored
    assert keyring_lookup([("s", parsed.keys)], "test.registry.io") == (HIT if found else MISS)


@pytest.mark.parametrize(
    ("secret_type", "data_key", "text"),
    [
        # .dockerconfigjson but with wrong Secret Type
        (SECRET_TYPE_DOCKERCFG, ".dockerconfigjson", '{"auths": {"test.registry.io": {}}}'),
        # .dockercfg but with wrong Secret Type
        (SECRET_TYPE_DOCKERCONFIGJSON, ".dockercfg", '{"test.registry.io": {}}'),
        # not a registry secret at all
        ("Opaque", ".dockerconfigjson", '{"auths": {"test.registry.io": {}}}'),
        ("kubernetes.io/basic-auth", ".dockercfg", '{"test.registry.io": {}}'),
        ("", ".dockerconfigjson", '{"auths": {"test.registry.io": {}}}'),
        # empty data is skipped, even though "" is not JSON
        (SECRET_TYPE_DOCKERCONFIGJSON, ".dockerconfigjson", ""),
        (SECRET_TYPE_DOCKERCFG, ".dockercfg", ""),
    ],
)
def test_secrets_the_kubelet_skips_are_ignored(secret_type: str, data_key: str, text: str) -> None:
    assert parse_docker_config(secret_type, {data_key: b64(text)}) == ParsedDockerConfig(
        (), ignored=True
    )


def test_a_wrong_type_is_ignored_even_with_garbage_data() -> None:
    parsed = parse_docker_config("Opaque", {".dockerconfigjson": "%%% not base64"})
    assert parsed == ParsedDockerConfig((), ignored=True)


@pytest.mark.parametrize("data", [None, {}, {"other": b64("{}")}])
def test_missing_data_key_is_ignored(data: dict[str, str] | None) -> None:
    for secret_type in REGISTRY_SECRET_TYPES:
        assert parse_docker_config(secret_type, data).ignored


# --- BasicDockerKeyring.Add: which key a location becomes -------------------------------


@pytest.mark.parametrize(
    ("location", "key"),
    [
        ("registry.io", "registry.io"),
        ("https://registry.io", "registry.io"),
        ("http://registry.io/", "registry.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("index.docker.io/v1/", "index.docker.io"),
        ("https://registry.io/v2/", "registry.io"),
        ("https://registry.io/v2/team", "registry.io/team"),  # "/v2/team" -> "/team"
        ("https://registry.io/v1/team/", "registry.io/team/"),
        ("registry.io/v1", "registry.io/v1"),  # only "/v1/" with its slash is cut
        ("registry.io/v3/", "registry.io/v3/"),
        ("registry.io:5000/team/app", "registry.io:5000/team/app"),
        ("registry.io/team?x=1#frag", "registry.io/team"),  # query and fragment dropped
        ("user:secret@registry.io/team", "registry.io/team"),  # user info dropped
        ("registry.io/a%20b", "registry.io/a b"),  # the path is stored decoded
        ("registry.io/%2F", "registry.io//"),
        ("%C3%A9.registry.io", "é.registry.io"),  # non-ASCII may be %-encoded in a host
        ("registry.io:", "registry.io:"),  # an empty port is a valid port
        ("x:1:5000", "x:1:5000"),  # Go judges the port by the last colon
        ("[::1]:5000", "[::1]:5000"),
        ("[fe80::1%25eth0]", "[fe80::1%eth0]"),
        ("[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]"),
        ("HTTPS://registry.io", "HTTPS://registry.io"),  # only lower-case schemes are known
        ("*.registry.io", "*.registry.io"),
        # url.Parse errors: the kubelet logs and skips the entry
        ("registry.io:5000x", None),  # invalid port
        ("registry.io:x", None),
        ("registry.io/%zz", None),  # invalid URL escape
        ("registry.io/a#%zz", None),  # ... in the fragment too
        ("%41.registry.io", None),  # a host may only %-encode non-ASCII bytes
        ("reg istry.io", None),  # invalid character in host name
        ("reg\\istry.io", None),
        ("registry.io/\x01", None),  # control character
        # current Go refuses these, a kubelet built with an older Go stores them (legacy)
        ("registry[0-9].io", "registry[0-9].io"),  # '[' only starts an IP literal
        ("[1.2.3.4]:5000", "[1.2.3.4]:5000"),  # brackets hold IPv6 addresses only
        ("[registry.io]", "[registry.io]"),
        ("[fe80::1%25]", "[fe80::1%]"),  # empty zone
        ("[12345::1]", "[12345::1]"),  # more than 4 hex digits in a group
        ("[::1", None),  # missing ']'
        ("a[::1]", None),  # older Go: ":1]" is an invalid port; current: '[' not first
        ("ü@registry.io", None),  # invalid user info
        ("u%zz@registry.io", None),
    ],
)
def test_add_turns_a_location_into_a_key(location: str, key: str | None) -> None:
    parsed = config_json({"auths": {location: {}}})
    assert parsed.error is None, "an unparsable location is skipped, never an error"
    assert [k.key for k in parsed.keys] == ([] if key is None else [key])


# --- kubelets built with an older Go (before its October 2025 security releases) --------
# Checked against kubernetes' keyring.go logic over the real go1.19 net/url (the rules of
# every Go up to go1.24.7, which built the kit's v1.28.7 kubelet: go1.21.13).


@pytest.mark.parametrize(
    ("location", "image"),
    [
        ("reg[0-9].example.com", "reg1.example.com/app"),  # filepath.Match class
        ("*.s[0-9].example.com", "a.s3.example.com/x"),
        ("https://[127.0.0.1]:5000/v2/", "127.0.0.1:5000/app"),  # SplitHostPort strips []
        ("[registry]:5000", "registry:5000/app"),
        ("[00001::1]:5000", "[00001::1]:5000/app"),  # a 5-digit group: key and image
        ("*:5000", "[00001::1]:5000/app"),  # the image only the older Go parses
    ],
)
def test_what_only_an_older_go_kubelet_parses_still_serves_the_image(
    location: str, image: str
) -> None:
    ring = [("s", config_json({"auths": {location: {"auth": FOO_BAR}}}).keys)]
    assert keyring_lookup(ring, image).secrets == ("s",)
    (key,) = ring[0][1]
    assert key_matches(key, image)


def test_only_keys_current_go_refuses_are_legacy() -> None:
    parsed = config_json({"auths": {"reg[0-9].io": {}, "[::1]:5000": {}, "registry.io": {}}})
    assert {k.key: k.legacy for k in parsed.keys} == {
        "reg[0-9].io": True,
        "[::1]:5000": False,
        "registry.io": False,
    }


def test_where_the_two_kinds_of_kubelet_differ_both_get_their_secrets() -> None:
    """Current Go drops `docke[r].io` and falls back to the Docker Hub key; an older Go
    matches it and never falls back: the pod gets both, and either node can pull."""
    ring = [
        ("hub", config_json({"auths": {"https://index.docker.io/v1/": {}}}).keys),
        ("glob", config_json({"auths": {"docke[r].io": {}}}).keys),
    ]
    assert keyring_lookup(ring, "docker.io/library/nginx") == KeyringMatch(
        ("hub", "glob"), via_default_registry=False
    )
    only_hub = [ring[0]]
    assert keyring_lookup(only_hub, "docker.io/library/nginx") == KeyringMatch(
        ("hub",), via_default_registry=True
    )


def test_current_gos_answer_comes_first_then_what_only_the_older_adds() -> None:
    """Current Go: only `*.example.com` (b). Older Go: both, `reg[...` first (reverse byte
    order). The order is only what explain and the log show: the patch sorts by name."""
    ring = [
        ("a", config_json({"auths": {"reg[0-9].example.com": {}}}).keys),
        ("b", config_json({"auths": {"*.example.com": {}}}).keys),
    ]
    assert keyring_lookup(ring, "reg1.example.com/x").secrets == ("b", "a")


def test_locations_with_the_same_key_are_one_key() -> None:
    parsed = config_json(
        {"auths": {"registry.io": {}, "https://registry.io": {}, "http://registry.io/v1/": {}}}
    )
    assert [k.key for k in parsed.keys] == ["registry.io"]


def test_registry_key_parsed_fields() -> None:
    (key,) = config_json({"auths": {"https://*.example.com:5000/v2/team": {}}}).keys
    assert key == RegistryKey("*.example.com:5000/team")
    assert hash(key) == hash(RegistryKey("*.example.com:5000/team"))
    assert key.matchable
    assert key.host_labels == ("*", "example", "com")
    assert key.port == "5000"
    assert key.path == "/team"


def test_a_key_url_parse_rejects_matches_nothing() -> None:
    key = RegistryKey("registry.io:x")
    assert not key.matchable
    assert not key_matches(key, "registry.io:x/app")


def test_registry_key_requires_a_string() -> None:
    with pytest.raises(TypeError):
        RegistryKey(b"registry.io")  # type: ignore[arg-type]


def test_non_utf8_key_bytes_are_shown_escaped_and_still_match() -> None:
    (key,) = config_json({"auths": {"registry.io/%FF": {}}}).keys
    assert key.key == "registry.io/%FF"
    json.dumps(key.key)  # printable, loggable
    assert key_matches(key, "registry.io/%FF/app")  # the image path decodes the same way


# --- URLsMatch details --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "image", "expected"),
    [
        # the path is a plain string prefix, not whole segments (upstream: "pongz")
        ("registry.io/team", "registry.io/teamwork/app", True),
        ("registry.io/team/", "registry.io/team", False),
        ("registry.io/team/", "registry.io/team/app", True),
        # ports must be equal: no port is not :443, :0443 is not :443
        ("registry.io", "registry.io:443/app", False),
        ("registry.io:443", "registry.io/app", False),
        ("registry.io:0443", "registry.io:443/app", False),
        ("registry.io:5000", "registry.io:5000/app", True),
        # case-sensitive: the kubelet does not lower-case hosts
        ("Registry.io", "registry.io/app", False),
        ("Registry.io", "Registry.io/app", True),
        # "*" is one label, never crosses a dot, and can be empty
        ("*.io", "docker.io/library/nginx", True),
        ("*.io", "a.b.io/app", False),
        ("*", "localhost/app", True),
        ("*", "registry.io/app", False),
        ("a*.io", "a.io/app", True),
        ("*.*", "docker.io/x", True),
        # docker.io and index.docker.io are different hosts for URLsMatch
        ("docker.io", "index.docker.io/library/nginx", False),
        ("index.docker.io", "docker.io/library/nginx", False),
        ("docker.io", "docker.io/library/nginx", True),
        # IPv6 literals: with a port the brackets go; without one they stay (a glob!)
        ("[::1]:5000", "[::1]:5000/app", True),
        ("[::1]", "[::1]/app", False),
        # an image that url.Parse rejects matches nothing
        ("registry.io", "registry.io/%zz", False),
        ("registry.io", "registry.io:x/app", False),
    ],
)
def test_urls_match_details(key: str, image: str, expected: bool) -> None:
    assert key_matches(RegistryKey(key), image) is expected


def test_docker_hub_fallback_applies_only_when_no_key_matches() -> None:
    hub = config_json({"auths": {DOCKER_HUB: {"auth": FOO_BAR}}})
    wildcard = config_json({"auths": {"*.io": {"auth": FOO_BAR}}})
    image = "docker.io/library/nginx"
    assert keyring_lookup(ring(("hub", hub)), image) == KeyringMatch(("hub",), True)
    # Any match anywhere in the keyring, here "*.io", suppresses the fallback.
    both = ring(("hub", hub), ("wild", wildcard))
    assert keyring_lookup(both, image) == KeyringMatch(("wild",), False)


def test_docker_hub_fallback_needs_the_index_docker_io_key() -> None:
    for location in ("docker.io", "https://index.docker.io/v1", "registry-1.docker.io"):
        keys = config_json({"auths": {location: {}}}).keys
        assert keyring_lookup([("s", keys)], "jenkins") == MISS, location
    keys = config_json({"auths": {"index.docker.io": {}}}).keys
    assert keyring_lookup([("s", keys)], "jenkins") == HUB_HIT


def test_docker_hub_fallback_lists_every_hub_secret_once_in_keyring_order() -> None:
    a = config_json({"auths": {DOCKER_HUB: {}, "index.docker.io": {}}})
    b = config_json({"auths": {"https://index.docker.io/v1/": {}}})
    result = keyring_lookup(ring(("b", b), ("a", a), ("b", b)), "docker.io/library/nginx")
    assert result == KeyringMatch(("b", "a"), True)


def test_lookup_order_is_reverse_key_order_then_keyring_order() -> None:
    one = config_json({"auths": {"quay.io": {}, "quay.io/coreos/etcd": {}}})
    two = config_json({"auths": {"quay.io/coreos": {}}})
    three = config_json({"auths": {"quay.io": {}}})
    keyring = ring(("one", one), ("two", two), ("three", three))
    assert keyring_lookup(keyring, "quay.io/coreos/etcd").secrets == ("one", "two", "three")
    assert keyring_lookup(keyring, "quay.io/coreos/x").secrets == ("two", "one", "three")
    assert keyring_lookup(keyring, "quay.io/x").secrets == ("one", "three")


def test_lookup_tolerates_malformed_keyrings() -> None:
    good = config_json({"auths": {"registry.io": {}}}).keys
    keyring: Any = [("bad", None), ("bad2", ["not a key"]), (1, good), ("ok", good), "junk"]
    assert keyring_lookup(keyring, "registry.io/app") == KeyringMatch(("ok",), False)
    assert keyring_lookup([("ok", good)], None) == MISS  # type: ignore[arg-type]
    assert not key_matches("registry.io", "registry.io/app")  # type: ignore[arg-type]
    assert not is_default_registry_match(None)  # type: ignore[arg-type]


# --- path/filepath.Match (match_test.go); ErrBadPattern means no match --------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("abc", "abc", True),
        ("*", "abc", True),
        ("*c", "abc", True),
        ("a*", "a", True),
        ("a*", "abc", True),
        ("a*", "ab/c", False),
        ("a*/b", "abc/b", True),
        ("a*/b", "a/c/b", False),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
        ("a*b?c*x", "abxbbxdbxebxczzx", True),
        ("a*b?c*x", "abxbbxdbxebxczzy", False),
        ("ab[c]", "abc", True),
        ("ab[b-d]", "abc", True),
        ("ab[e-g]", "abc", False),
        ("ab[^c]", "abc", False),
        ("ab[^b-d]", "abc", False),
        ("ab[^e-g]", "abc", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "ab", False),
        ("a?b", "a☺b", True),
        ("a[^a]b", "a☺b", True),
        ("a???b", "a☺b", False),
        ("a[^a][^a][^a]b", "a☺b", False),
        ("[a-\u03b6]*", "\u03b1", True),  # zeta, alpha
        ("*[a-\u03b6]", "A", False),
        ("a?b", "a/b", False),
        ("a*b", "a/b", False),
        ("[\\]a]", "]", True),
        ("[\\-]", "-", True),
        ("[x\\-]", "x", True),
        ("[x\\-]", "-", True),
        ("[x\\-]", "z", False),
        ("[\\-x]", "x", True),
        ("[\\-x]", "-", True),
        ("[\\-x]", "a", False),
        ("[]a]", "]", False),  # ErrBadPattern
        ("[-]", "-", False),
        ("[x-]", "x", False),
        ("[x-]", "-", False),
        ("[x-]", "z", False),
        ("[-x]", "x", False),
        ("[-x]", "-", False),
        ("[-x]", "a", False),
        ("\\", "a", False),
        ("[a-b-c]", "a", False),
        ("[", "a", False),
        ("[^", "a", False),
        ("[^bc", "a", False),
        ("a[", "a", False),
        ("a[", "ab", False),
        ("a[", "x", False),
        ("a/b[", "x", False),
        ("*x", "xxx", True),
        # a malformed pattern never matches, even where a prefix would
        ("*[", "a[", False),
        ("a*[", "ab", False),
    ],
)
def test_go_filepath_match(pattern: str, name: str, expected: bool) -> None:
    assert _go.filepath_match(pattern.encode(), name.encode()) is expected


# --- Go encoding/json -----------------------------------------------------------------------


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        # struct fields match case-insensitively, with Unicode simple folding
        ('{"Auths": {"a.io": {}}}', ["a.io"]),
        ('{"AUTHS": {"a.io": {}}}', ["a.io"]),
        ('{"auth\u017f": {"a.io": {}}}', ["a.io"]),  # LATIN SMALL LETTER LONG S folds to s
        ('{"auth": {"a.io": {}}}', []),  # not the field
        ('{"auths ": {"a.io": {}}}', []),
        ('{"a.io": {"USERNAME": "x", "Auth": "Zm9vOmJhcg=="}}', None),  # legacy: a location
        # unknown fields, of any type, are ignored
        ('{"credsStore": 1, "auths": {"a.io": {"identitytoken": [1], "x": {}}}}', ["a.io"]),
        # null: a no-op for a string, a reset for a map
        ('{"auths": {"a.io": null}}', ["a.io"]),
        ('{"auths": {"a.io": {"auth": null, "username": null}}}', ["a.io"]),
        ('{"auths": {"a.io": {"auth": "Zm9vOmJhcg==", "auth": null}}}', ["a.io"]),
        ('{"auths": {"a.io": {}}, "auths": null}', []),
        ('{"auths": null, "auths": {"b.io": {}}}', ["b.io"]),
        # a repeated map field merges; within a map the last duplicate wins
        ('{"auths": {"a.io": {}}, "auths": {"b.io": {}}}', ["a.io", "b.io"]),
        ('{"auths": {"a.io": {}}, "Auths": {"b.io": {}}}', ["a.io", "b.io"]),
        ('{"auths": {"a.io": {"auth": "pants", "auth": "Zm9vOmJhcg=="}}}', ["a.io"]),
        # top-level null decodes to an empty config
        ("null", []),
        (' \t\r\n{"auths": {}} \n', []),
        ('{"auths": {"a.io": {}}, "HttpHeaders": {"X-Meta": "v", "Y": null}}', ["a.io"]),
        ('{"auths": {"a.io": {}}, "httpheaders": null}', ["a.io"]),
        # a lone surrogate escape decodes to U+FFFD
        ('{"auths": {"\\ud800.io": {}}}', ["\ufffd.io"]),
        ('{"auths": {"\\ud83d\\ude00.io": {}}}', ["\U0001f600.io"]),
        # numbers are validated, never converted
        ('{"x": 1' + "0" * 5000 + ', "y": 1e999999, "auths": {"a.io": {}}}', ["a.io"]),
        # deeper than Python's recursion limit, within Go's 10000
        ('{"x": ' + _deep(5000) + ', "auths": {"a.io": {}}}', ["a.io"]),
        ('{"x": ' + _deep(9999) + ', "auths": {"a.io": {}}}', ["a.io"]),
    ],
)
def test_go_json_semantics_accepted(text: str, keys: list[str] | None) -> None:
    parsed = config_json(text)
    assert parsed.error is None, parsed.error
    if keys is not None:
        assert sorted(k.key for k in parsed.keys) == keys


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        '{"auths": {"a.io": {}}} trailing',
        '{"auths": {"a.io": {}},}',
        "\ufeff{}",  # Go does not skip a byte order mark
        '{"auths": {"a.io": {}}, "x": NaN}',
        '{"auths": {"a.io": {}}, "x": -Infinity}',
        '{"auths": {"a.io": {"auth": "\x01"}}}',  # raw control character in a string
        '{"x": ' + _deep(10000) + ', "auths": {}}',  # 10001 levels
        '{"x": ' + '{"a":' * 10000 + "1" + "}" * 10000 + "}",
        # wrong JSON types are errors, even for fields whose value is unused
        "[]",
        '"auths"',
        "1",
        '{"auths": []}',
        '{"auths": "a.io"}',
        '{"auths": 1}',
        '{"auths": true}',
        '{"auths": {"a.io": "x"}}',
        '{"auths": {"a.io": []}}',
        '{"auths": {"a.io": 0}}',
        '{"auths": {"a.io": {"email": false}}}',
        '{"auths": {"a.io": {"username": 1}}}',
        '{"auths": {"a.io": {"Password": {}}}}',
        '{"auths": {"a.io": {"u\u017fername": []}}}',
        '{"auths": {"a.io": {"username": "x", "USERNAME": 1}}}',
        '{"auths": {"a.io": {"auth": ["Zm9vOmJhcg=="]}}}',
        '{"auths": {"a.io": {}}, "HttpHeaders": []}',
        '{"auths": {"a.io": {}}, "HttpHeaders": {"X": 1}}',
        '{"auths": {"a.io": {}}, "HttpHeaders": {"X": ["v"]}}',
        # one bad entry fails the whole secret, even if a later duplicate is fine
        '{"auths": {"a.io": {"auth": "pants"}, "a.io": {}}}',
        '{"auths": {"a.io": {}, "b.io": {"auth": "cGFudHM="}}}',
        '{"auths": 1, "auths": {"a.io": {}}}',
    ],
)
def test_go_json_semantics_rejected(text: str) -> None:
    parsed = config_json(text)
    assert parsed.error is not None
    assert parsed.keys == ()
    assert not parsed.ignored


def test_legacy_dockercfg_holding_config_json_makes_a_key_named_auths() -> None:
    # A .dockercfg is a bare map, so "auths" is just a registry location to the kubelet.
    parsed = dockercfg({"auths": {"registry.io": {"auth": FOO_BAR}}})
    assert keys_of(parsed) == ["auths"]


def test_invalid_utf8_becomes_replacement_characters_per_byte() -> None:
    for raw, key in [
        (b'{"auths": {"a\xff.io": {}}}', "a\ufffd.io"),
        (b'{"auths": {"a\xe2\x82.io": {}}}', "a\ufffd\ufffd.io"),  # Go: one per byte
        (b'{"auths": {"a\xed\xa0\x80.io": {}}}', "a\ufffd\ufffd\ufffd.io"),
    ]:
        parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": b64(raw)})
        assert [k.key for k in parsed.keys] == [key]
    parsed = parse_docker_config(
        SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": b64(b'\xff{"auths": {}}')}
    )
    assert parsed.error is not None


# --- Secret data / stringData -------------------------------------------------------------


def test_string_data_is_plain_text() -> None:
    parsed = parse_docker_config(
        SECRET_TYPE_DOCKERCONFIGJSON, None, {".dockerconfigjson": '{"auths": {"a.io": {}}}'}
    )
    assert keys_of(parsed) == ["a.io"]


def test_string_data_overrides_data() -> None:
    data = {".dockerconfigjson": b64('{"auths": {"from-data.io": {}}}')}
    string_data = {".dockerconfigjson": '{"auths": {"from-string-data.io": {}}}'}
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, data, string_data)
    assert keys_of(parsed) == ["from-string-data.io"]
    # An empty stringData value empties the key: the kubelet skips the secret.
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, data, {".dockerconfigjson": ""})
    assert parsed.ignored


def test_data_base64_follows_go_std_encoding() -> None:
    text = '{"auths": {"a.io": {}}}'
    wrapped = b64(text)[:8] + "\r\n" + b64(text)[8:] + "\n"  # Go ignores CR and LF
    assert keys_of(
        parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": wrapped})
    )
    unpadded = b64("{}x").rstrip("=") + "x"  # not a multiple of 4
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": unpadded})
    assert parsed.error is not None


@pytest.mark.parametrize(
    ("data", "string_data", "fragment"),
    [
        (
            {".dockerconfigjson": "not base64!"},
            None,
            "data['.dockerconfigjson'] is not valid base64",
        ),
        ({".dockerconfigjson": "eyJ9"[:3]}, None, "is not valid base64"),
        ({"other": "@@@@"}, None, "data[<another key>] is not valid base64"),
        ({".dockerconfigjson": 42}, None, "must be a base64 string, not int"),
        ({".dockerconfigjson": b"{}"}, None, "must be a base64 string, not bytes"),
        ({1: "e30="}, None, "data has a key that is not a string"),
        (["not", "a", "mapping"], None, "data must be a mapping, not list"),
        (None, {".dockerconfigjson": 1}, "stringData['.dockerconfigjson'] must be a string"),
        (None, {None: "{}"}, "stringData has a key that is not a string"),
        (None, "{}", "stringData must be a mapping, not str"),
    ],
)
def test_malformed_secret_data_is_an_error(data: Any, string_data: Any, fragment: str) -> None:
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, data, string_data)
    assert parsed.error is not None
    assert fragment in parsed.error
    assert parsed.keys == ()
    assert not parsed.ignored


def test_null_data_values_are_empty() -> None:
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": None})  # type: ignore[dict-item]
    assert parsed == ParsedDockerConfig((), ignored=True)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"auths": {"a.io": {"auth": b64("foo") + "!"}}}, '"auth" is not valid base64'),
        ({"auths": {"a.io": {"auth": b64("no colon here")}}}, "username:password"),
        ({"auths": {"a.io": {"username": 7}}}, '"username" must be a string, not a number'),
        ('{"auths": {"a.io": ', "is not valid JSON"),
        ("{'auths': {}}", "is not valid JSON"),
        ({"auths": ["a.io"]}, '"auths" must be a JSON object, not an array'),
        ({"auths": {"a.io": "x"}}, "must be a JSON object, not a string"),
        (["auths"], "must hold a JSON object, not an array"),
    ],
)
def test_malformed_docker_configs_are_errors_with_clear_reasons(doc: Any, fragment: str) -> None:
    parsed = config_json(doc)
    assert parsed.error is not None
    assert fragment in parsed.error
    assert parsed.error.startswith(".dockerconfigjson")
    assert parsed.keys == ()


# --- reasons never carry credentials ------------------------------------------------------

USER = "zqUSERc0ffee"
PASSWORD = "zqPASSWORD-5ecr3t"
TOKEN = "zqTOKENdeadbeef"
CREDENTIALS = f"{USER}:{PASSWORD}"


def _secret_material() -> list[str]:
    """Every form a credential takes in the secrets below."""
    forms = [USER, PASSWORD, TOKEN, CREDENTIALS, b64(CREDENTIALS), b64(USER + PASSWORD)]
    forms += [b64(CREDENTIALS).rstrip("="), "hunter2", "Bearer " + TOKEN]
    return forms


def _leaky_secrets() -> list[tuple[Any, Any]]:
    """(data, stringData) pairs, valid and malformed, all full of credentials."""
    good_entry = {"username": USER, "password": PASSWORD, "auth": b64(CREDENTIALS)}
    docs: list[Any] = [
        {"auths": {"a.io": good_entry}},
        {"auths": {"a.io": {**good_entry, "auth": b64(USER + PASSWORD)}}},  # no colon
        {"auths": {"a.io": {"auth": PASSWORD}}},  # not base64
        {"auths": {"a.io": {"auth": b64(CREDENTIALS) + "="}}},
        {"auths": {"a.io": {"username": USER, "password": 5}}},
        {"auths": {"a.io": {"password": PASSWORD, "identitytoken": TOKEN, "email": []}}},
        {"auths": {"user:hunter2@a.io": {"auth": PASSWORD}}},
        {"auths": {f"{PASSWORD}@a.io": {"auth": PASSWORD}}},
        {"auths": {"a.io": good_entry}, "HttpHeaders": {"Authorization": ["Bearer " + TOKEN]}},
        {"auths": {"a.io": PASSWORD}},
        {"auths": [CREDENTIALS]},
        CREDENTIALS,
    ]
    texts = [json.dumps(doc) for doc in docs]
    texts += [
        f'{{"auths": {{"a.io": {{"password": "{PASSWORD}"',  # truncated
        f'{{"auths": {{"a.io": {{"password": {PASSWORD}}}}}}}',  # unquoted
        f'{{"auths": {{"a.io": {{"password": "{PASSWORD}\x01"}}}}}}',  # control character
        f"{{'password': '{PASSWORD}'}}",
    ]
    pairs: list[tuple[Any, Any]] = [({".dockerconfigjson": b64(t)}, None) for t in texts]
    pairs += [(None, {".dockerconfigjson": t}) for t in texts]
    pairs += [
        ({".dockerconfigjson": PASSWORD}, None),  # data that is not base64
        ({".dockerconfigjson": b64(CREDENTIALS) + "!"}, None),
        ({PASSWORD: "!!"}, None),
        (None, {".dockerconfigjson": 7, "password": PASSWORD}),
    ]
    return pairs


@pytest.mark.parametrize(("data", "string_data"), _leaky_secrets())
def test_reasons_never_contain_credentials(data: Any, string_data: Any) -> None:
    for secret_type in REGISTRY_SECRET_TYPES:
        parsed = parse_docker_config(secret_type, data, string_data)
        shown = f"{parsed.error} {parsed!r} {[k.key for k in parsed.keys]}"
        for material in _secret_material():
            assert material not in shown


def test_the_leak_check_can_fail() -> None:
    # Guard against a vacuous test: the material is really in the secrets.
    data, _ = _leaky_secrets()[0]
    decoded = base64.b64decode(data[".dockerconfigjson"]).decode()
    assert PASSWORD in decoded
    assert b64(CREDENTIALS) in decoded


def test_reasons_hide_user_info_but_name_the_registry() -> None:
    parsed = config_json({"auths": {"https://user:hunter2@registry.io/team": {"auth": "!"}}})
    assert parsed.error is not None
    assert "registry.io/team" in parsed.error
    assert "hunter2" not in parsed.error
    assert "user:" not in parsed.error


def test_reasons_are_bounded() -> None:
    location = "r" * 100_000 + ".io"
    parsed = config_json({"auths": {location: {"auth": "!"}}})
    assert parsed.error is not None
    assert len(parsed.error) < 300


# --- never raises ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["auths", "Auths", "auth", "username", "password", "email", "HttpHeaders", "x"]
)
locations = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["registry.io", "https://index.docker.io/v1/", "*.io", "[::1]:5000", "a:b"]),
)
entries_ = st.one_of(
    st.none(),
    json_values,
    st.dictionaries(field_names, st.one_of(st.text(max_size=20), json_values), max_size=4),
)
configs = st.one_of(
    json_values,
    st.dictionaries(locations, entries_, max_size=4),
    st.fixed_dictionaries({"auths": st.dictionaries(locations, entries_, max_size=4)}),
)
anything = st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.text(max_size=20))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret_type=st.one_of(st.sampled_from(REGISTRY_SECRET_TYPES), st.text(max_size=10), anything),
    config=configs,
    encoding=st.sampled_from(["data", "stringData", "raw"]),
    noise=st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), anything, max_size=3),
)
def test_parse_never_raises(secret_type: Any, config: Any, encoding: str, noise: Any) -> None:
    text = json.dumps(config)
    key = ".dockerconfigjson" if secret_type == SECRET_TYPE_DOCKERCONFIGJSON else ".dockercfg"
    if encoding == "data":
        parsed = parse_docker_config(secret_type, {key: b64(text)})
    elif encoding == "stringData":
        parsed = parse_docker_config(secret_type, None, {key: text})
    else:
        parsed = parse_docker_config(secret_type, noise, noise)
    assert isinstance(parsed, ParsedDockerConfig)
    if parsed.error is not None:
        assert parsed.keys == ()
        assert not parsed.ignored
        assert not parsed.error.startswith(dockerconfig._INTERNAL_ERROR)
    if parsed.ignored:
        assert parsed.keys == ()
        assert parsed.error is None
    for k in parsed.keys:
        json.dumps(k.key)  # keys are always printable
        keyring_lookup([("s", parsed.keys)], "docker.io/library/nginx")


@settings(max_examples=300)
@given(blob=st.binary(max_size=200), string=st.text(max_size=200))
def test_parse_never_raises_on_arbitrary_bytes(blob: bytes, string: str) -> None:
    for secret_type in REGISTRY_SECRET_TYPES:
        for data, string_data in [
            ({".dockerconfigjson": b64(blob), ".dockercfg": b64(blob)}, None),
            (None, {".dockerconfigjson": string, ".dockercfg": string}),
            ({".dockerconfigjson": string, ".dockercfg": string}, None),
        ]:
            parsed = parse_docker_config(secret_type, data, string_data)
            assert parsed.error is None or not parsed.error.startswith(dockerconfig._INTERNAL_ERROR)


def test_parse_handles_huge_input() -> None:
    huge = "x" * 5_000_000
    parsed = config_json({"auths": {"a.io": {"password": huge}}, "junk": [huge]})
    assert keys_of(parsed) == ["a.io"]
    parsed = parse_docker_config(SECRET_TYPE_DOCKERCONFIGJSON, {".dockerconfigjson": huge + "!"})
    assert parsed.error is not None


@settings(max_examples=300)
@given(key=st.text(max_size=40), image=st.text(max_size=40))
def test_matching_never_raises(key: str, image: str) -> None:
    registry_key = RegistryKey(key)
    result = key_matches(registry_key, image)
    assert isinstance(result, bool)
    match = keyring_lookup([("s", (registry_key,))], image)
    assert match.secrets in ((), ("s",))
    assert bool(match.secrets) == (result or match.via_default_registry)
    is_default_registry_match(image)


# --- properties ------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hosts = st.builds(
    lambda parts, port: ".".join(parts) + port,
    st.lists(labels, min_size=1, max_size=4),
    st.one_of(st.just(""), st.from_regex(r":[0-9]{1,5}", fullmatch=True)),
)
repo_paths = st.from_regex(r"[a-z0-9]+(/[a-z0-9]+){0,3}", fullmatch=True)
forms = st.sampled_from(["{}", "https://{}", "http://{}/", "https://{}/v1/", "https://{}/v2/"])


@given(host=hosts, path=repo_paths, form=forms)
def test_a_secret_for_host_h_serves_image_h_slash_anything(host: str, path: str, form: str) -> None:
    parsed = config_json({"auths": {form.format(host): {"auth": FOO_BAR}}})
    assert [k.key for k in parsed.keys] == [host]
    assert keyring_lookup([("s", parsed.keys)], f"{host}/{path}") == HIT


@given(host=hosts, team=labels, path=repo_paths)
def test_a_secret_for_a_path_serves_images_below_it(host: str, team: str, path: str) -> None:
    keys = config_json({"auths": {f"https://{host}/{team}/": {}}}).keys
    assert keyring_lookup([("s", keys)], f"{host}/{team}/{path}") == HIT
    assert keyring_lookup([("s", keys)], f"{host}/{team}x/{path}") == MISS


@given(host=hosts, path=repo_paths)
def test_a_secret_for_host_h_does_not_serve_another_port(host: str, path: str) -> None:
    other = host.partition(":")[0] + (":1" if ":" not in host else "")
    parsed = config_json({"auths": {host: {}}})
    assert keyring_lookup([("s", parsed.keys)], f"{other}/{path}") == MISS


def _normalise(value: object) -> object:
    if isinstance(value, _go.JSONObject):
        return ("object", [(k, _normalise(v)) for k, v in value.pairs])
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


@settings(max_examples=300)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_iterative_json_parser_agrees_with_json_module(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    expected = _normalise(_go.DECODER.decode(text))
    assert _normalise(_go.parse_json_iterative(text)) == expected


@settings(max_examples=300)
@given(text=st.text(alphabet='{}[]":,0123456789.eE-+ntrufalsxy\\ \n', max_size=30))
def test_iterative_json_parser_rejects_what_json_module_rejects(text: str) -> None:
    try:
        expected: object = _normalise(_go.DECODER.decode(text))
    except ValueError:
        expected = "error"
    try:
        actual: object = _normalise(_go.parse_json_iterative(text))
    except ValueError:
        actual = "error"
    assert actual == expected
