"""The `helm test` pod, run here as it runs in the cluster: its script, from the rendered
chart, against the real `pullsecret-injector serve` serving the certificate the chart
generated, verified against the CA the webhook configuration trusts.

The cluster's DNS is the one thing replaced: `<service>.<namespace>.svc` resolves to
127.0.0.1, so the TLS check still uses the exact name the API server dials.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import FULLNAME, NAMESPACE, ROOT, Helm, find

from webhook.serve import certs

# Resolve the in-cluster Service name to loopback, then run the pod's script unchanged.
LOOPBACK_DNS = """
import socket
_real = socket.getaddrinfo
def _getaddrinfo(host, *args, **kwargs):
    return _real("127.0.0.1" if str(host).endswith(".svc") else host, *args, **kwargs)
socket.getaddrinfo = _getaddrinfo
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    port: int
    metrics_port: int
    log: Path


@contextmanager
def _serve(tmp: Path, cert_pem: bytes, key_pem: bytes) -> Iterator[Served]:
    (tmp / "tls.crt").write_bytes(cert_pem)
    (tmp / "tls.key").write_bytes(key_pem)
    (tmp / "objects.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    )
    served = Served(_free_port(), _free_port(), tmp / "serve.log")
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--host", "127.0.0.1", "--port", str(served.port),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(served.metrics_port),
        "--cert-file", str(tmp / "tls.crt"), "--key-file", str(tmp / "tls.key"),
        "--objects", str(tmp / "objects.yaml"), "--release-namespace", NAMESPACE,
    ]  # fmt: skip
    with served.log.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}:\n{served.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", served.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not listen:\n{served.log.read_text()}")
                time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _test_pod(docs: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    pod = find(docs, "Pod", f"{FULLNAME}-test")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    (script,) = container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}
    return script, env


def _run_pod_script(script: str, env: dict[str, str], served: Served, ca_pem: str) -> Any:
    env = {
        **env,
        "PSI_PORT": str(served.port),  # the Service maps 443 -> 8443; here it is direct
        "PSI_METRICS_PORT": str(served.metrics_port),
        "PSI_CA_PEM": ca_pem,  # in the pod: the mounted ca.crt, or this variable
        "PATH": os.environ.get("PATH", ""),
    }
    return subprocess.run(
        [sys.executable, "-c", LOOPBACK_DNS + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def chart_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


@pytest.fixture
def served(chart_docs: list[dict[str, Any]], tmp_path: Path) -> Iterator[Served]:
    tls = find(chart_docs, "Secret", f"{FULLNAME}-tls")
    cert, key = base64.b64decode(tls["data"]["tls.crt"]), base64.b64decode(tls["data"]["tls.key"])
    with _serve(tmp_path, cert, key) as running:
        yield running


def test_helm_test_pod_passes_against_the_chart_certificate(
    chart_docs: list[dict[str, Any]], served: Served
) -> None:
    script, env = _test_pod(chart_docs)
    assert env["PSI_HOST"] == f"{FULLNAME}.{NAMESPACE}.svc"
    mwc = find(chart_docs, "MutatingWebhookConfiguration")
    ca_bundle = base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    result = _run_pod_script(script, env, served, ca_bundle)
    assert result.returncode == 0, result.stdout + result.stderr + served.log.read_text()
    assert "answered over verified TLS (uid echoed, allowed)" in result.stdout
    assert "/readyz -> 200" in result.stdout


def test_helm_test_pod_fails_when_the_ca_does_not_match(
    chart_docs: list[dict[str, Any]], served: Served
) -> None:
    script, env = _test_pod(chart_docs)
    stranger = certs.generate(["x"]).ca_cert_pem.decode()
    result = _run_pod_script(script, env, served, stranger)
    assert result.returncode != 0
    assert "FAIL: POST https://" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_helm_test_pod_fails_for_a_certificate_of_another_service(
    chart_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A certificate that the CA signed, but for other names, is refused like the API
    server would refuse it."""
    tls = find(chart_docs, "Secret", f"{FULLNAME}-tls")
    ca = find(chart_docs, "Secret", f"{FULLNAME}-ca")
    other = certs.generate(
        certs.service_dns_names("other", NAMESPACE),
        ca=(base64.b64decode(ca["data"]["tls.crt"]), base64.b64decode(ca["data"]["tls.key"])),
    )
    script, env = _test_pod(chart_docs)
    with _serve(tmp_path, other.cert_pem, other.key_pem) as served:
        result = _run_pod_script(
            script, env, served, base64.b64decode(tls["data"]["ca.crt"]).decode()
        )
        assert result.returncode != 0
        assert "Hostname mismatch" in result.stderr or "doesn't match" in result.stderr


def test_existing_secret_mode_gives_the_pod_the_ca_inline(helm: Helm) -> None:
    ca = certs.generate(["x"]).ca_cert_pem.decode()
    docs = helm.render(
        "certificates.mode=existingSecret",
        "certificates.existingSecret.name=my-tls",
        values={"certificates": {"existingSecret": {"caBundle": ca}}},
    )
    pod = find(docs, "Pod", f"{FULLNAME}-test")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["PSI_CA_PEM"].strip() == ca.strip()
    assert "volumes" not in pod["spec"]
