"""The real `serve --kubeconfig` process replicating against the local API server.

Skipped until `serve` is wired to the Replicator (create_app takes `replication`).
"""

from __future__ import annotations

import base64
import inspect
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from kube_apiserver import held_events
from kube_apiserver_writes import WritableApiServer, WritableCluster
from kube_support import wait_for
from replication_support import REL, add_source, copy_state, make_cluster, source_hash, start_server

from webhook.app import create_app

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(
    "replication" not in inspect.signature(create_app).parameters,
    reason="serve is not wired to the replication controller yet",
)


@pytest.fixture
def cluster() -> WritableCluster:
    return make_cluster()


@pytest.fixture
def apiserver(cluster: WritableCluster, tls: Any) -> Iterator[WritableApiServer]:
    server = start_server(cluster, tls)
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, ops_port: int) -> None:
        self.proc, self.port, self.ops_port = proc, port, ops_port
        self.http = httpx.Client(verify=False, timeout=10)

    def metrics(self) -> str:
        try:
            return self.http.get(f"http://127.0.0.1:{self.ops_port}/metrics").text
        except httpx.TransportError:
            return ""

    def admit(self, namespace: str, image: str, *, dry_run: bool = False) -> list[str]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "app-", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "kubernetes-admin"},
                "object": pod,
                "dryRun": dry_run,
            },
        }
        resp = self.http.post(f"https://127.0.0.1:{self.port}/mutate", json=review)
        assert resp.status_code == 200, resp.text
        answer = resp.json()["response"]
        if "patch" not in answer:
            return []
        patch = jsonpatch.JsonPatch.from_string(base64.b64decode(answer["patch"]).decode())
        return [r["name"] for r in patch.apply(pod)["spec"].get("imagePullSecrets", [])]


@pytest.fixture
def serve(kubeconfig: Path, apiserver: WritableApiServer, tmp_path: Path) -> Iterator[Serve]:
    port, ops_port = _free_port(), _free_port()
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
                "--release-namespace",
                REL,
            ],
            cwd=ROOT,
            env={**env, "POD_NAME": "serve-under-test"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Serve(proc, port, ops_port)
    try:
        yield server
    finally:
        server.http.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        print(log.read_text()[-6000:])  # shown when the test fails


def test_serve_replicates_and_creates_copies_at_admission(
    cluster: WritableCluster, apiserver: WritableApiServer, serve: Serve
) -> None:
    add_source(cluster, selector="team=a", hosts=("registry.example.com",))
    cluster.create_namespace("a1", {"team": "a"})
    wait_for(
        lambda: "pullsecret_injector_replication_leader 1.0" in serve.metrics(),
        "serve leading",
        timeout=30,
    )
    wait_for(lambda: copy_state(cluster, "a1") == source_hash(cluster), "the controller's copy")
    lease = cluster.lease(REL, "pullsecret-injector")
    assert lease is not None and lease["spec"]["holderIdentity"].startswith("serve-under-test_")

    image = "registry.example.com/app:1"
    with held_events(cluster):  # the namespace and its pod in one apply: no event yet
        cluster.create_namespace("fresh", {"team": "a"})
        cluster.create_namespace("dry", {"team": "a"})
        assert serve.admit("fresh", image) == ["reg"]
        assert copy_state(cluster, "fresh") == source_hash(cluster)  # before the answer
        assert serve.admit("dry", image, dry_run=True) == ["reg"]
        assert copy_state(cluster, "dry") is None  # a dryRun writes nothing

    # released at shutdown: another replica would take over at once
    serve.http.close()
    serve.proc.send_signal(signal.SIGTERM)
    serve.proc.wait(20)
    lease = cluster.lease(REL, "pullsecret-injector")
    assert lease is not None and not lease["spec"].get("holderIdentity")
