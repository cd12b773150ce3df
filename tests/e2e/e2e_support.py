"""End-to-end suite against a real cluster: runs only with KUBECONFIG set and `-m e2e`.

Options (environment):
  KUBECONFIG         the cluster (required)
  PSI_E2E_PORT       the webhook's HTTPS port on this host (default: a free port)
  PSI_E2E_HOST       the address the API server uses to reach this host (default 127.0.0.1:
                     an API server on this host; for kind, the host's address on the kind
                     docker network, e.g. 172.18.0.1)

Nothing else is assumed about the cluster: everything the suite creates carries a run
label, the webhook configuration selects only the suite's namespaces, and everything is
deleted at the end, the webhook configuration first.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUN_LABEL = "pullsecret-injector.io/e2e-run"


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, input: Any = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        data = None if input is None else (input if isinstance(input, str) else json.dumps(input))
        proc = subprocess.run(
            ["kubectl", *args],
            input=data,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def apply(self, *objects: dict[str, Any], dry_run: bool = False) -> list[dict[str, Any]]:
        args = ["apply", "-o", "json", "-f", "-"]
        if dry_run:
            args.insert(1, "--dry-run=server")
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        out = json.loads(self(*args, input=doc).stdout)
        return list(out["items"]) if out.get("kind") == "List" else [out]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        proc = self(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name}: {proc.stderr}")
        out: dict[str, Any] = json.loads(proc.stdout)
        return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass
class Webhook:
    run: str  # the run id: label value and name suffix
    kubectl: Kubectl
    url: str
    ops_url: str

    def namespace(self, suffix: str) -> str:
        return f"psi-e2e-{self.run}-{suffix}"


def wait_for(predicate: Any, what: str, timeout: float = 60.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ready(url: str) -> bool:
    import httpx  # noqa: PLC0415

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
