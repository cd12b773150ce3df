"""The local API server answers exactly as the captured real kube-apiserver did.

Each test seeds the server with the objects of a capture in tests/fixtures/apiserver/
(README there), makes the captured request over HTTPS and compares the answer with the
capture: same JSON values in the same key order, same framing, same headers.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers import wait_for
from kube_apiserver import (
    DOCKERCONFIGJSON,
    NAMESPACES,
    SECRETS,
    ApiServer,
    Cluster,
)
from kube_support import auths

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apiserver"
SELECTOR = {"fieldSelector": f"type={DOCKERCONFIGJSON}"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_lines(name: str) -> list[Any]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def header_names(name: str) -> set[str]:
    lines = (FIXTURES / name).read_text().splitlines()[1:]
    return {line.split(":", 1)[0].lower() for line in lines if ":" in line}


def ordered(doc: Any) -> str:
    """A canonical text that keeps key order: equal iff same values in the same order."""
    return json.dumps(doc)


class Client:
    """Plain HTTP/1.1 requests as the kubernetes client makes them."""

    def __init__(self, server: ApiServer, context: ssl.SSLContext) -> None:
        self.server, self.context = server, context

    def get(
        self, path: str, query: dict[str, str] | None = None, *, agent: str = "python"
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=self.context)
        url = path + ("?" + urlencode(query) if query else "")
        conn.request(
            "GET",
            url,
            headers={"Authorization": f"Bearer {self.server.token}", "User-Agent": agent},
        )
        resp = conn.getresponse()
        return resp, resp.read()

    def watch(self, path: str, query: dict[str, str]) -> tuple[http.client.HTTPResponse, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=self.context)
        conn.request(
            "GET",
            path + "?" + urlencode({**query, "watch": "1"}),
            headers={"Authorization": f"Bearer {self.server.token}"},
        )
        resp = conn.getresponse()
        return resp, resp


@pytest.fixture
def client(apiserver: ApiServer, tls: Any) -> Client:
    return Client(apiserver, tls.client)


def seed_wire_secrets(cluster: Cluster) -> None:
    """The state of the capture: wire-a/quay, wire-a/regcred, wire-b/regcred, one Opaque."""
    items = (
        fixture("list-secrets-page1.json")["items"] + fixture("list-secrets-page2.json")["items"]
    )
    for obj in sorted(items, key=lambda o: int(o["metadata"]["resourceVersion"])):
        cluster.put(SECRETS, obj)
    opaque = cluster.secret_object("wire-a", "settings", secret_type="Opaque", data={"k": "dg=="})
    opaque["metadata"]["resourceVersion"] = "510"
    cluster.put(SECRETS, opaque)


def test_paginated_list_pages_are_the_captured_ones(cluster: Cluster, client: Client) -> None:
    seed_wire_secrets(cluster)
    resp, body = client.get("/api/v1/secrets", {**SELECTOR, "limit": "2"})
    assert resp.status == 200
    page1 = json.loads(body)
    assert ordered(page1) == ordered(fixture("list-secrets-page1.json"))
    assert header_names("list-secrets-page1.headers") == {k.lower() for k in resp.headers}

    resp, body = client.get(
        "/api/v1/secrets", {**SELECTOR, "limit": "2", "continue": page1["metadata"]["continue"]}
    )
    assert ordered(json.loads(body)) == ordered(fixture("list-secrets-page2.json"))


def test_curl_gets_the_captured_bytes(cluster: Cluster, client: Client) -> None:
    """curl (which captured the fixtures) gets pretty JSON, byte for byte."""
    seed_wire_secrets(cluster)
    _, body = client.get("/api/v1/secrets", {**SELECTOR, "limit": "2"}, agent="curl/8.5.0")
    assert body == (FIXTURES / "list-secrets-page1.json").read_bytes()
    _, compact = client.get("/api/v1/secrets", {**SELECTOR, "limit": "2"})
    assert compact.endswith(b"}\n") and b"\n" not in compact[:-1]


def test_a_list_continued_after_compaction_is_410_with_a_fresh_token(
    cluster: Cluster, client: Client
) -> None:
    seed_wire_secrets(cluster)
    _, body = client.get("/api/v1/secrets", {**SELECTOR, "limit": "2"})
    token = json.loads(body)["metadata"]["continue"]
    cluster.create_secret("wire-b", "later", auths=auths("ghcr.io"))
    cluster.compact()
    resp, body = client.get("/api/v1/secrets", {**SELECTOR, "limit": "2", "continue": token})
    assert resp.status == 410
    assert ordered(json.loads(body)) == ordered(fixture("list-secrets-expired-continue.json"))


def test_watch_stream_is_the_captured_one(
    cluster: Cluster, apiserver: ApiServer, client: Client
) -> None:
    seed_wire_secrets(cluster)
    resp, stream = client.watch(
        "/api/v1/secrets",
        {
            **SELECTOR,
            "allowWatchBookmarks": "true",
            "resourceVersion": "510",
            "timeoutSeconds": "2",
        },
    )
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert header_names("watch-secrets-http1.headers") == {k.lower() for k in resp.headers}
    captured = fixture_lines("watch-secrets.jsonl")
    for event in captured:
        if event["type"] != "BOOKMARK":
            cluster.put(SECRETS, event["object"], event["type"])
    got = [json.loads(stream.readline()) for _ in range(4)]
    apiserver.send_bookmarks()  # the capture has one bookmark before the one at the timeout
    got += [json.loads(line) for line in stream.read().splitlines() if line]
    assert ordered(got) == ordered(captured)


def test_watch_from_a_compacted_resource_version_is_one_410_error_event(
    client: Client,
) -> None:
    cluster = Cluster(revision=498)
    cluster.compact()
    server = ApiServer(cluster, ssl_context=client.server.ssl_context).start()
    try:
        other = Client(server, client.context)
        resp, stream = other.watch(
            "/api/v1/secrets", {**SELECTOR, "allowWatchBookmarks": "true", "resourceVersion": "2"}
        )
        assert resp.status == 200
        assert header_names("watch-secrets-expired.headers") - {"transfer-encoding"} == {
            k.lower() for k in resp.headers
        } - {"transfer-encoding"}
        lines = [json.loads(line) for line in stream.read().splitlines() if line]
        assert ordered(lines) == ordered(fixture_lines("watch-secrets-expired.jsonl"))
    finally:
        server.stop()


def test_namespace_list_and_watch_are_the_captured_ones(
    cluster: Cluster, apiserver: ApiServer, client: Client
) -> None:
    listed = fixture("list-namespaces.json")
    for obj in sorted(listed["items"], key=lambda o: int(o["metadata"]["resourceVersion"])):
        cluster.put(NAMESPACES, obj)
    cluster.revision = int(listed["metadata"]["resourceVersion"])
    _, body = client.get("/api/v1/namespaces", {"limit": "500"})
    assert ordered(json.loads(body)) == ordered(listed)

    _, stream = client.watch(
        "/api/v1/namespaces",
        {"allowWatchBookmarks": "true", "resourceVersion": "515", "timeoutSeconds": "1"},
    )
    captured = fixture_lines("watch-namespaces.jsonl")
    for event in captured:
        if event["type"] != "BOOKMARK":
            cluster.put(NAMESPACES, event["object"], event["type"])
    got = [json.loads(line) for line in stream.read().splitlines() if line]
    assert ordered(got) == ordered(captured)


def test_get_of_a_missing_secret_is_the_captured_404(client: Client) -> None:
    resp, body = client.get("/api/v1/namespaces/wire-a/secrets/nope", agent="curl/8.5.0")
    assert resp.status == 404
    assert body == (FIXTURES / "get-secret-notfound.json").read_bytes().rstrip(b"\n")


def shape(doc: Any, maps: frozenset[str] = frozenset()) -> Any:
    """Keys and value types, recursively; free-form maps (labels, data...) reduced to a type."""
    if isinstance(doc, dict):
        return {k: ("map" if k in maps else shape(v, maps)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(doc[0], maps)] if doc else []
    return type(doc).__name__


MAPS = frozenset({"labels", "annotations", "data", "fieldsV1"})


def test_objects_the_server_makes_have_the_captured_shape(cluster: Cluster, client: Client) -> None:
    cluster.create_namespace("wire-c")
    cluster.create_secret("wire-a", "regcred", auths=auths("registry.example.com"))
    _, body = client.get("/api/v1/secrets", SELECTOR)
    made = json.loads(body)["items"][0]
    captured = fixture("list-secrets-page1.json")["items"][0]
    assert ordered(shape(made, MAPS)) == ordered(shape(captured, MAPS))

    _, body = client.get("/api/v1/namespaces")
    made_ns = json.loads(body)["items"][0]
    captured_ns = fixture("list-namespaces.json")["items"][0]
    assert ordered(shape(made_ns, MAPS)) == ordered(shape(captured_ns, MAPS))


def test_namespace_deletion_goes_through_terminating(
    cluster: Cluster, apiserver: ApiServer, client: Client
) -> None:
    cluster.create_namespace("wire-c", {"field.cattle.io/projectId": "p-abc12"})
    rv = str(cluster.revision)
    _, stream = client.watch("/api/v1/namespaces", {"resourceVersion": rv, "timeoutSeconds": "1"})
    cluster.delete_namespace("wire-c")
    events = [json.loads(line) for line in stream.read().splitlines() if line]
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    terminating = events[0]["object"]
    captured = fixture_lines("watch-namespaces.jsonl")[2]["object"]
    assert ordered(shape(terminating, MAPS)) == ordered(shape(captured, MAPS))
    assert terminating["status"] == {"phase": "Terminating"}


def test_an_object_leaving_the_selector_is_deleted_from_the_watch(
    cluster: Cluster, client: Client
) -> None:
    """As the watch cache does: DELETED with the previous object and the event's RV."""
    cluster.create_secret("ns", "a", auths=auths("a.io"), labels={"team": "x"})
    _, stream = client.watch(
        "/api/v1/secrets",
        {
            "labelSelector": "team=x",
            "resourceVersion": str(cluster.revision),
            "timeoutSeconds": "1",
        },
    )
    cluster.update_secret("ns", "a", labels={"team": "y"})
    cluster.update_secret("ns", "a", labels={"team": "x"})
    events = [json.loads(line) for line in stream.read().splitlines() if line]
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    assert events[0]["object"]["metadata"]["labels"] == {"team": "x"}
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(cluster.revision - 1)


def test_a_secret_type_cannot_change(cluster: Cluster) -> None:
    from kube_apiserver import DOCKERCFG, ApiError  # noqa: PLC0415

    cluster.create_secret("ns", "a", auths=auths("a.io"))
    with pytest.raises(ApiError, match="immutable"):
        cluster.update_secret("ns", "a", secret_type=DOCKERCFG)


def test_requests_without_the_token_are_401(apiserver: ApiServer, tls: Any) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, context=tls.client)
    conn.request("GET", "/api/v1/secrets")
    resp = conn.getresponse()
    assert resp.status == 401
    assert json.loads(resp.read())["reason"] == "Unauthorized"


def test_unsupported_field_selector_is_400(client: Client) -> None:
    resp, body = client.get("/api/v1/secrets", {"fieldSelector": "data=x"})
    assert resp.status == 400
    assert json.loads(body)["message"] == "field label not supported: data"


def test_timeout_seconds_ends_the_stream(cluster: Cluster, client: Client) -> None:
    started = time.monotonic()
    _, stream = client.watch(
        "/api/v1/secrets", {"resourceVersion": str(cluster.revision), "timeoutSeconds": "1"}
    )
    assert stream.read() == b""  # a clean end of the chunked body, no event
    assert time.monotonic() - started >= 1.0


def test_steering_counts_open_watches(
    cluster: Cluster, apiserver: ApiServer, client: Client
) -> None:
    _, stream = client.watch("/api/v1/secrets", {"resourceVersion": str(cluster.revision)})
    wait_for(lambda: apiserver.open_watches(SECRETS) == 1, "the watch to be open")
    assert apiserver.end_watches() == 1
    assert stream.read() == b""
    wait_for(lambda: apiserver.open_watches() == 0, "the watch to be closed")
