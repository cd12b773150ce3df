"""Shared test helpers: fixture paths, secrets built the way the cluster stores them, polling
with a deadline (tests wait for a state, never for a fixed time)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from webhook.core.model import RegistrySecret, secret_from_object

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
REVIEWS = FIXTURES / "admissionreview"
EXAMPLES = ROOT / "examples"

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.01
) -> T:
    """Poll `predicate` until it returns a truthy value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_object(
    namespace: str,
    name: str,
    auths: dict[str, Any] | None = None,
    *,
    secret_type: str = "kubernetes.io/dockerconfigjson",
    raw: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret as the API server returns it (base64 data)."""
    if raw is None:
        body = {"auths": auths or {}} if secret_type.endswith("json") else (auths or {})
        raw = json.dumps(body)
    key = ".dockerconfigjson" if secret_type.endswith("json") else ".dockercfg"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "type": secret_type,
        "data": {key: b64(raw)},
    }


def registry_secret(namespace: str, name: str, *hosts: str, **kw: Any) -> RegistrySecret:
    """A parsed registry secret with fake credentials for each host key."""
    auths = {h: {"auth": b64(f"user-{name}:pw-{name}")} for h in hosts}
    secret = secret_from_object(secret_object(namespace, name, auths, **kw))
    assert secret is not None
    return secret


def review(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REVIEWS / name).read_text())
    return data
