"""Polling with a deadline: tests wait for a state, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll `predicate` until it returns a truthy value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def auths(*hosts: str, password: str = "pw") -> dict[str, dict[str, str]]:
    """A docker config `auths` map with fake credentials for each host."""
    import base64  # noqa: PLC0415

    token = base64.b64encode(f"user:{password}".encode()).decode()
    return {host: {"auth": token} for host in hosts}
