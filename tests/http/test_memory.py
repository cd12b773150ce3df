"""Bounded memory whatever the requests hold (issue 11, item 1): RSS in a real server.

The hostile reviews are what a user allowed to create pods in one namespace can send with
`kubectl create --dry-run=server`: 2.7 MiB (under the API server's 3 MiB request limit),
listing 110,000 distinct made-up imagePullSecrets names, a fresh set each time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import review
from webhook_server import Server, example_server

from webhook.cluster.heap import RECOMMENDED_PYTHONMALLOC

JSON = {"Content-Type": "application/json"}
ROUNDS = 16
HOSTILE_NAMES = 110_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def hostile_review(round_: int) -> bytes:
    doc: dict[str, Any] = copy.deepcopy(review("v1-create-pod-dry-run.json"))
    doc["request"]["uid"] = f"hostile-{round_}"
    doc["request"]["object"]["spec"]["imagePullSecrets"] = [
        {"name": f"r{round_}-{i}"} for i in range(HOSTILE_NAMES)
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default 7 MiB body limit (the shared one caps bodies at 256 KiB),
    run with the allocator the image sets (Dockerfile: PYTHONMALLOC=malloc). The Decider
    memo's own bounds are tested in tests/unit/core/test_decider.py."""
    with example_server(
        tmp_path_factory.mktemp("memory"),
        env={"PYTHONMALLOC": RECOMMENDED_PYTHONMALLOC},
    ) as srv:
        yield srv


def test_hostile_reviews_leave_rss_within_20_percent_of_normal_ones(big_server: Server) -> None:
    normal = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    with big_server.client() as client:
        for _ in range(ROUNDS):
            assert client.post("/mutate", content=normal, headers=JSON).status_code == 200
        after_normal = rss_bytes(big_server.proc.pid)
        for round_ in range(ROUNDS):
            body = hostile_review(round_)
            assert len(body) < 3 * 1024 * 1024  # fits the API server's request limit
            r = client.post("/mutate", content=body, headers=JSON, timeout=60)
            assert r.status_code == 200
            response = r.json()["response"]
            assert response["uid"] == f"hostile-{round_}"
            assert response["allowed"] is True
            assert len(response["warnings"]) <= 11  # ten, then "and N more"
            assert len(r.content) < 16 * 1024  # the answer does not grow with the request
        after_hostile = rss_bytes(big_server.proc.pid)
    print(
        f"RSS after {ROUNDS} normal: {after_normal >> 20} MiB, then {ROUNDS} hostile: "
        f"{after_hostile >> 20} MiB"
    )
    assert after_hostile <= after_normal * 1.2, (after_normal >> 20, after_hostile >> 20)
