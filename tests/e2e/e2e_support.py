"""Helpers of the end-to-end suite: kubectl on the suite's cluster, the running webhook,
polling with the end-to-end defaults (a real cluster is slower than the local API server).

Everything the suite creates carries RUN_LABEL with the run id, and its namespaces are
named psi-e2e-<run>-<suffix>: cleanup finds them by label.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers

HERE = Path(__file__).resolve().parent
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


# helpers.wait_for with the end-to-end defaults: 60 s, polling every 0.5 s.
wait_for = functools.partial(helpers.wait_for, timeout=60.0, interval=0.5)
