"""Fixtures: one real webhook server for the HTTP tests, on the example cluster state."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from webhook_server import Server, example_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with example_server(
        tmp_path_factory.mktemp("serve"),
        "--private-registry", "registry.example.com",
        "--log-level", "debug",
        "--max-body-bytes", str(256 * 1024),
    ) as srv:  # fmt: skip
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
