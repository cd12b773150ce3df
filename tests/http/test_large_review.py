"""A huge review does not stall the others (issue 11, item 5).

A 2.4 MiB review of 45,000 containers (under the API server's request limit) takes the
server over a second to decide. Normal reviews sent meanwhile, on another connection,
must be answered before it is: the huge one is decided off the event loop. Only the
order of the answers is asserted, never a duration.
"""

from __future__ import annotations

import copy
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import EXAMPLES, review
from webhook_server import Server, start_server, stop_server

CONTAINERS = 45_000
JSON = {"Content-Type": "application/json"}


def huge_review() -> bytes:
    doc: dict[str, Any] = copy.deepcopy(review("v1-create-pod-dry-run.json"))
    doc["request"]["uid"] = "huge"
    doc["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"registry.example.com/team/app-{i}:v1"}
        for i in range(CONTAINERS)
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """--max-containers above the huge review's, so that it is decided (on the pool)."""
    srv = start_server(
        tmp_path_factory.mktemp("large"),
        "--objects", str(EXAMPLES / "cluster.yaml"),
        "--max-containers", str(CONTAINERS),
    )  # fmt: skip
    yield srv
    stop_server(srv)


def connection(server: Server) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    return http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=120)


def test_normal_reviews_are_answered_while_a_huge_one_is_decided(big_server: Server) -> None:
    body = huge_review()
    assert 2 * 1024 * 1024 < len(body) < 3 * 1024 * 1024
    normal = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    fast = connection(big_server)
    fast.request("POST", "/mutate", body=normal, headers=JSON)  # connected and warm
    assert fast.getresponse().read()

    huge_sent = threading.Event()
    huge_done = threading.Event()
    huge_answer: list[bytes] = []

    def send_huge() -> None:
        slow = connection(big_server)
        slow.request("POST", "/mutate", body=body, headers=JSON)
        huge_sent.set()
        huge_answer.append(slow.getresponse().read())
        huge_done.set()
        slow.close()

    sender = threading.Thread(target=send_huge, daemon=True)
    sender.start()
    assert huge_sent.wait(60)
    answered_meanwhile = 0
    while not huge_done.is_set():
        fast.request("POST", "/mutate", body=normal, headers=JSON)
        response = fast.getresponse()
        assert response.status == 200
        assert b'"allowed":true' in response.read()
        if not huge_done.is_set():
            answered_meanwhile += 1
    sender.join(60)
    fast.close()
    assert b'"uid":"huge"' in huge_answer[0]
    assert b'"allowed":true' in huge_answer[0]
    # neither the answer (its audit annotation) nor the log line grows with the pod
    assert len(huge_answer[0]) < 16 * 1024
    assert max(len(line) for line in big_server.logs().splitlines()) < 16 * 1024
    print(f"normal reviews answered while the huge one was decided: {answered_meanwhile}")
    # Measured: 181 with the huge review offloaded; 6 with it decided on the loop (those
    # answered while its body was still being read and encoded).
    assert answered_meanwhile >= 30


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default bound (1000 containers) and body limit (7 MiB)."""
    srv = start_server(
        tmp_path_factory.mktemp("bounded"), "--objects", str(EXAMPLES / "cluster.yaml")
    )
    yield srv
    stop_server(srv)


def test_beyond_the_container_bound_a_review_is_allowed_unchanged_with_a_warning(
    bounded_server: Server,
) -> None:
    conn = connection(bounded_server)
    try:
        conn.request("POST", "/mutate", body=huge_review(), headers=JSON)
        response = conn.getresponse()
        answer = json.loads(response.read())["response"]
    finally:
        conn.close()
    assert response.status == 200
    assert answer["uid"] == "huge" and answer["allowed"] is True
    assert "patch" not in answer
    assert "45000 containers, more than the 1000" in answer["warnings"][0]
