"""Helpers of the end-to-end suite: kubectl on the suite's cluster, the installed release,
the objects the tests create, and polling with the end-to-end defaults (a real cluster is
slower than the local API server).

Everything the suite creates carries RUN_LABEL with the run id, and its namespaces are
named psi-e2e-<run>-<suffix>: cleanup finds them by label.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers

HERE = Path(__file__).resolve().parent
RUN_LABEL = "pullsecret-injector.io/e2e-run"
SELECTOR = "pullsecret-injector.io/namespace-selector"
OPT_OUT = {"pullsecret-injector.io/inject": "false"}

# helpers.wait_for with the end-to-end defaults: 60 s, polling every 0.5 s.
wait_for = functools.partial(helpers.wait_for, timeout=60.0, interval=0.5)


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
        proc = self(*args, input=doc, check=False)
        if proc.returncode != 0 and "AlreadyExists" in proc.stderr:
            # apply read "absent", then a controller (the namespace's default ServiceAccount)
            # or the webhook (a copy) created it: apply is idempotent, so once more.
            proc = self(*args, input=doc, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        out = json.loads(proc.stdout)
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

    def items(self, kind: str, namespace: str, *args: str) -> list[dict[str, Any]]:
        out = self("get", kind, "-n", namespace, "-o", "json", *args)
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return items


@dataclass(frozen=True)
class Registry:
    """The private registry the nodes pull from, and an image there that runs."""

    host: str
    user: str
    password: str
    image: str


@dataclass
class Webhook:
    run: str  # the run id: label value and name suffix
    kubectl: Kubectl
    release: str
    release_namespace: str  # also the source namespace of project/cluster registries
    registry: Registry

    def namespace(self, suffix: str) -> str:
        return f"psi-e2e-{self.run}-{suffix}"

    def ns(self, suffix: str, **labels: str) -> dict[str, Any]:
        """A Namespace object of this run."""
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.namespace(suffix), "labels": {RUN_LABEL: self.run, **labels}},
        }


def docker_config(host: str, user: str = "e2e", password: str = "e2e-not-real") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {host: {"auth": token}}}
    return {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}


def registry_secret(
    ns: str, name: str, host: str, *, user: str = "e2e", password: str = "e2e-not-real", **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, **meta},
        "type": "kubernetes.io/dockerconfigjson",
        "data": docker_config(host, user, password),
    }


def real_secret(hook: Webhook, ns: str, name: str, **meta: Any) -> dict[str, Any]:
    """A registry Secret with the private registry's real credentials."""
    reg = hook.registry
    return registry_secret(ns, name, reg.host, user=reg.user, password=reg.password, **meta)


def pod(
    ns: str,
    name: str,
    *images: str,
    pull_secrets: tuple[str, ...] = (),
    annotations: dict[str, str] | None = None,
    always: bool = False,
) -> dict[str, Any]:
    """A pod of `images`; `always`: imagePullPolicy Always, so that an image cached on the node
    cannot hide a missing credential."""
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    spec = pod_spec(*images, pull_secrets=pull_secrets, always=always)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def service_account(ns: str) -> dict[str, Any]:
    """The namespace's default ServiceAccount, applied with the namespace: a pod applied in
    the same breath would otherwise race the controller that makes it."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns},
    }


def pod_spec(
    *images: str, pull_secrets: tuple[str, ...] = (), always: bool = False
) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    if always:
        for container in containers:
            container["imagePullPolicy"] = "Always"
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": containers,
    }
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return spec


def deployment(ns: str, name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec(image, always=True),
            },
        },
    }


def pull_secrets(obj: dict[str, Any] | None) -> list[str]:
    assert obj is not None
    return [ref["name"] for ref in obj["spec"].get("imagePullSecrets") or []]


def waiting_reason(obj: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, message) of the first waiting container, or ("Running", "") when all run."""
    statuses = ((obj or {}).get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason", ""), waiting.get("message", "")
    if statuses and all("running" in (s.get("state") or {}) for s in statuses):
        return "Running", ""
    return "", ""
