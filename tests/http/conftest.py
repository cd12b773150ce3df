"""Fixtures: one real webhook server for the HTTP tests, on the example cluster state."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from helpers import EXAMPLES
from webhook_server import Server, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("serve"),
        "--objects", str(EXAMPLES / "cluster.yaml"),
        "--private-registry", "registry.example.com",
        "--log-level", "debug",
        "--max-body-bytes", str(256 * 1024),
    )  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
