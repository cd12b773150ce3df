"""The real `pullsecret-injector serve --kubeconfig` process against the local API server.

Readiness waits for the first full sync; admissions follow the cluster's changes through
the watches (no API call on the admission path) and a namespace the watches have not
delivered yet is served by one live read.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from kube_apiserver import ApiServer, Cluster, Request, held_events
from kube_support import auths, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, ops_port: int, log: Path):
        self.proc, self.port, self.ops_port, self.log = proc, port, ops_port, log
        self.http = httpx.Client(verify=False, timeout=10)

    def ops(self, path: str) -> httpx.Response | None:
        assert self.proc.poll() is None, f"serve exited:\n{self.log.read_text()}"
        try:
            return self.http.get(f"http://127.0.0.1:{self.ops_port}{path}")
        except httpx.TransportError:
            return None

    def status(self, path: str) -> int | None:
        resp = self.ops(path)
        return None if resp is None else resp.status_code

    def admit(self, namespace: str, *images: str) -> list[str]:
        """The imagePullSecrets a pod created in `namespace` leaves admission with."""
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "app-", "namespace": namespace},
            "spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]},
        }
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "kubernetes-admin"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
        resp = self.http.post(f"https://127.0.0.1:{self.port}/mutate", json=review)
        assert resp.status_code == 200, resp.text
        answer = resp.json()["response"]
        assert answer["uid"] == review["request"]["uid"] and answer["allowed"] is True
        if "patch" not in answer:
            return []
        patched = jsonpatch.apply_patch(
            pod, jsonpatch.JsonPatch.from_string(base64.b64decode(answer["patch"]).decode())
        )
        return [ref["name"] for ref in patched["spec"].get("imagePullSecrets", [])]


@pytest.fixture
def serve(kubeconfig: Path, apiserver: ApiServer, tmp_path: Path) -> Iterator[Serve]:
    port, ops_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSI_")}
    env.pop("KUBECONFIG", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook.cli",
                "serve",
                "--kubeconfig",
                str(kubeconfig),
                "--dev",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(ops_port),
                "--live-read-timeout",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Serve(proc, port, ops_port, log)
    try:
        yield server
    finally:
        server.http.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
        finally:
            print(log.read_text()[-6000:])  # shown when the test fails


@pytest.fixture
def gate(apiserver: ApiServer) -> Iterator[threading.Event]:
    """Secret lists wait until the test opens the gate: the first sync is in flight."""
    opened = threading.Event()

    def wait(req: Request) -> None:
        if req.path == "/api/v1/secrets":
            opened.wait(30)

    apiserver.before_list = wait
    yield opened
    opened.set()


def test_serve_follows_the_cluster(
    gate: threading.Event, serve: Serve, apiserver: ApiServer, cluster: Cluster
) -> None:
    cluster.create_namespace("wire-a")
    cluster.create_secret("wire-a", "regcred", auths=auths("registry.example.com"))
    cluster.create_secret("wire-a", "quay", auths=auths("quay.io"))

    wait_for(lambda: serve.status("/healthz") == 200, "serve to listen", timeout=30)
    wait_for(lambda: apiserver.requests_for("secrets", watch=False), "the first secret list")
    assert serve.status("/readyz") == 503  # the first sync is not complete
    gate.set()
    wait_for(lambda: serve.status("/readyz") == 200, "readiness after the first sync", timeout=30)

    image = "registry.example.com/team/app:1.0"
    assert sorted(serve.admit("wire-a", image, "quay.io/org/tool")) == ["quay", "regcred"]

    cluster.create_secret("wire-a", "extra", auths=auths("ghcr.io"))
    wait_for(lambda: serve.admit("wire-a", "ghcr.io/org/x") == ["extra"], "the added secret")
    cluster.update_secret("wire-a", "regcred", auths=auths("other.example.com"))
    wait_for(lambda: serve.admit("wire-a", image) == [], "the updated secret to stop matching")
    cluster.delete_secret("wire-a", "extra")
    wait_for(lambda: serve.admit("wire-a", "ghcr.io/org/x") == [], "the deleted secret")

    # 410 Gone with a change the watches never delivered: the relist brings it.
    with held_events(cluster):
        cluster.update_secret("wire-a", "regcred", auths=auths("registry.example.com"))
        apiserver.expire_watches()
    wait_for(lambda: serve.admit("wire-a", image) == ["regcred"], "the change, after a relist")
    # Every stream has listed again and watches (a later relist would see "fresh" below).
    wait_for(lambda: apiserver.open_watches() == 3, "all three watches to be back")

    # A namespace applied together with its workload: its events are not here yet.
    with held_events(cluster):
        cluster.create_namespace("fresh")
        cluster.create_secret("fresh", "pull", auths=auths("registry.example.com"))
        assert serve.admit("fresh", image) == ["pull"]  # first try: one live read

    metrics = serve.ops("/metrics")
    assert metrics is not None
    assert 'pullsecret_injector_live_reads_total{result="ok"} 1.0' in metrics.text
    assert 'pullsecret_injector_watch_restarts_total{reason="expired",resource="secrets"}' in (
        metrics.text
    )
    assert serve.status("/readyz") == 200
