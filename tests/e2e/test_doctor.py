"""`kubectl pullsecrets doctor` against the installed release on a real cluster: a healthy
install passes (exit 0); each injected fault (wrong caBundle, no endpoints, missing RBAC)
turns its check into a FAIL (exit 2), and is undone before the next test.

doctor runs as the kubectl plugin (`kubectl pullsecrets`, the `kubectl-pullsecrets` entry
point of this environment on PATH). The webhook's ClusterIP is not reachable from the test
host in general, so the serving-certificate check connects through `kubectl port-forward`
(`--connect`), which reaches the very pod the Service routes to.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from e2e_support import RUN_LABEL, Webhook

from webhook.serve import certs

pytestmark = pytest.mark.e2e

wait_for = functools.partial(helpers.wait_for, timeout=60.0, interval=0.5)
CHECKS = {
    "webhook-configuration", "namespace-selector", "endpoints", "serving-certificate",
    "rbac", "dry-run", "readiness", "replication",
}  # fmt: skip


def _fullname(hook: Webhook) -> str:
    out = hook.kubectl(
        "get", "mutatingwebhookconfigurations", "-l", f"app.kubernetes.io/instance={hook.release}",
        "-o", "jsonpath={.items[0].metadata.name}",
    )  # fmt: skip
    name = out.stdout.strip()
    assert name, f"no MutatingWebhookConfiguration of release {hook.release}"
    return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def forwarded(webhook: Webhook) -> Iterator[int]:
    """A local port forwarded to the webhook Service's HTTPS port."""
    port = _free_port()
    proc = subprocess.Popen(
        ["kubectl", "-n", webhook.release_namespace, "port-forward",
         f"svc/{_fullname(webhook)}", f"{port}:443"],
        env=webhook.kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False

        wait_for(listening, "kubectl port-forward to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def served(webhook: Webhook) -> str:
    """A namespace of this run holding a registry secret: where the dry-run check probes."""
    ns = webhook.namespace("doctor")
    docker = {"auths": {"registry.example.com": {"auth": base64.b64encode(b"u:p").decode()}}}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {RUN_LABEL: webhook.run}}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "default", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": {"name": "doctor-registry", "namespace": ns},
         "data": {".dockerconfigjson": base64.b64encode(json.dumps(docker).encode()).decode()}},
    ]  # fmt: skip
    webhook.kubectl.apply(*objects)
    return ns


def doctor(webhook: Webhook, port: int) -> tuple[int, dict[str, dict[str, str]]]:
    env = {
        **webhook.kubectl.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        ["kubectl", "pullsecrets", "doctor", "-o", "json", "-n", webhook.release_namespace,
         "--release", webhook.release, "--connect", f"127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.stdout, f"doctor printed nothing (exit {proc.returncode}):\n{proc.stderr}"
    doc = json.loads(proc.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert set(checks) == CHECKS
    return proc.returncode, checks


def _show(checks: dict[str, dict[str, str]]) -> str:
    return "\n".join(f"{c['status']} {n}: {c['message']}" for n, c in checks.items())


def _fails(webhook: Webhook, port: int, check: str) -> dict[str, dict[str, str]]:
    """doctor until `check` FAILs (the cluster applies a fault in a few seconds)."""
    seen: dict[str, dict[str, str]] = {}

    def failed() -> bool:
        code, checks = doctor(webhook, port)
        seen.update(checks)
        return checks[check]["status"] == "FAIL" and code == 2

    try:
        wait_for(failed, f"doctor's {check} check to FAIL", timeout=90.0, interval=2.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_show(seen)}") from None
    return seen


def _healthy(webhook: Webhook, port: int) -> dict[str, dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}

    def passed() -> bool:
        code, checks = doctor(webhook, port)
        seen.clear()
        seen.update(checks)
        return code == 0

    try:
        wait_for(passed, "doctor to pass every check", timeout=120.0, interval=3.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_show(seen)}") from None
    return seen


def test_a_healthy_install_passes_every_check(
    webhook: Webhook, forwarded: int, served: str
) -> None:
    checks = _healthy(webhook, forwarded)
    assert {c["status"] for c in checks.values()} == {"PASS"}
    assert "expires in" in checks["serving-certificate"]["message"]
    assert "got" in checks["dry-run"]["message"]


def test_a_wrong_ca_bundle_fails_the_certificate_check(
    webhook: Webhook, forwarded: int, served: str
) -> None:
    name = _fullname(webhook)
    config = webhook.kubectl.get("mutatingwebhookconfiguration", name)
    assert config is not None
    original = config["webhooks"][0]["clientConfig"]["caBundle"]
    other = base64.b64encode(certs.generate(["elsewhere"], []).ca_cert_pem).decode()

    def set_bundle(value: str) -> None:
        patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": value}]
        webhook.kubectl(
            "patch", "mutatingwebhookconfiguration", name, "--type=json", "-p", json.dumps(patch)
        )

    set_bundle(other)
    try:
        checks = _fails(webhook, forwarded, "serving-certificate")
        assert "does not verify" in checks["serving-certificate"]["message"]
    finally:
        set_bundle(original)
    _healthy(webhook, forwarded)


def test_no_endpoints_fail_the_endpoints_check(
    webhook: Webhook, forwarded: int, served: str
) -> None:
    name, ns = _fullname(webhook), webhook.release_namespace
    # A selector label no pod has: the Service keeps its pods running but routes to none.
    fault = {"spec": {"selector": {"pullsecret-injector.io/doctor-fault": "no-pods"}}}
    undo = {"spec": {"selector": {"pullsecret-injector.io/doctor-fault": None}}}
    webhook.kubectl("-n", ns, "patch", "service", name, "--type=merge", "-p", json.dumps(fault))
    try:
        checks = _fails(webhook, forwarded, "endpoints")
        assert "no ready endpoint" in checks["endpoints"]["message"]
    finally:
        webhook.kubectl("-n", ns, "patch", "service", name, "--type=merge", "-p", json.dumps(undo))
    _healthy(webhook, forwarded)


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in obj["metadata"].items()
        if k not in ("resourceVersion", "uid", "creationTimestamp", "managedFields")
    }
    return {**obj, "metadata": meta}


def test_missing_rbac_fails_the_rbac_check(webhook: Webhook, forwarded: int, served: str) -> None:
    name = _fullname(webhook)
    binding = webhook.kubectl.get("clusterrolebinding", name)
    assert binding is not None, f"no ClusterRoleBinding {name}"
    webhook.kubectl("delete", "clusterrolebinding", name)
    try:
        checks = _fails(webhook, forwarded, "rbac")
        assert "lacks: get secrets" in checks["rbac"]["message"]
    finally:
        webhook.kubectl("create", "-f", "-", input=_strip(binding))
        time.sleep(1)  # the authorizer's cache; _healthy below polls anyway
    _healthy(webhook, forwarded)
