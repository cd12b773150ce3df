"""An install of the real chart on the local API server, for `explain` and `doctor`.

`helm template` renders this project's chart; its objects (the MutatingWebhookConfiguration
with its caBundle, the Service, the Deployment, the RBAC objects) are stored on the
OpsApiServer as they would be on a cluster. The chart's own serving certificate is served
over TLS on 127.0.0.1 (the Service's "ClusterIP"), so doctor verifies the very pair the
chart made. Registry secrets carry a known password, which no output may contain.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from chart.chartlib import CHART, find_helm
from kube_apiserver import Cluster
from kube_apiserver_ops import OpsApiServer
from kube_support import auths
from prometheus_client import generate_latest

from webhook.core.injection import Policy, decide
from webhook.core.model import secret_from_object
from webhook.metrics import Metrics

RELEASE = "psi"
NS = "pullsecret-injector"
FULLNAME = f"{RELEASE}-pullsecret-injector"
PASSWORD = "s3cret-Passw0rd-never-printed"
SOURCE_SELECTOR = "pullsecret-injector.io/namespace-selector"

COLLECTIONS = {
    "MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/"
    "mutatingwebhookconfigurations",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs",
}


def render_chart(*set_args: str) -> list[dict[str, Any]]:
    helm = find_helm()
    if helm is None:
        pytest.fail("helm not found: run `bash .ci/install-helm.sh`", pytrace=False)
    args = [helm, "template", RELEASE, str(CHART), "-n", NS]
    for pair in set_args:
        args += ["--set", pair]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False,
        env={"HELM_CACHE_HOME": "/tmp/psi-helm-cache", "HOME": tempfile.gettempdir()},
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"helm template failed:\n{proc.stderr}", pytrace=False)
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def put(server: OpsApiServer, obj: dict[str, Any]) -> dict[str, Any]:
    ns = obj["metadata"].get("namespace", "")
    return server.put(COLLECTIONS[obj["kind"]].format(ns=ns), obj)


class TlsEndpoint:
    """A TLS listener on 127.0.0.1 serving a certificate: handshakes, then closes."""

    def __init__(self, cert_pem: str, key_pem: str, directory: Path) -> None:
        (directory / "tls.crt").write_text(cert_pem)
        (directory / "tls.key").write_text(key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self.handshakes = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError, ssl.SSLError):
                conn.settimeout(2)
                with self.context.wrap_socket(conn, server_side=True):
                    self.handshakes += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@dataclass(frozen=True)
class _Ages:
    """A store of given staleness, as the metrics' scrape-time collector reads it."""

    ages_: dict[str, float]

    def secret_count(self) -> int:
        return 0

    def namespaces(self) -> dict[str, dict[str, str]]:
        return {}

    def ages(self) -> dict[str, float]:
        return self.ages_


def metrics_text(secrets_age: float, namespaces_age: float) -> str:
    metrics = Metrics(store=_Ages({"secrets": secrets_age, "namespaces": namespaces_age}))
    return generate_latest(metrics.registry).decode()


def admission(server: OpsApiServer) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """The webhook's decision over the cluster's registry secrets, as the API server would
    apply its answer to a created pod."""

    def admit(pod: dict[str, Any], namespace: str) -> dict[str, Any]:
        secrets = {}
        for obj in server.cluster.objects("secrets"):
            secret = secret_from_object(obj)
            if secret is not None and secret.namespace == namespace:
                secrets[secret.name] = secret
        decision = decide(pod, namespace, secrets, Policy())
        return jsonpatch.apply_patch(pod, list(decision.patch)) if decision.patch else pod

    return admit


@dataclass
class Install:
    server: OpsApiServer
    tls: TlsEndpoint
    docs: list[dict[str, Any]]
    ca_pem: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> Cluster:
        return self.server.cluster

    def webhook_config(self) -> dict[str, Any]:
        return self.server.find("MutatingWebhookConfiguration", FULLNAME)[1]


def install(server: OpsApiServer, tmp: Path, *set_args: str) -> Install:
    """The chart's objects (rendered with `--set` pairs) on the server: a healthy install."""
    docs = render_chart(*set_args)
    tls_secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-tls")
    )
    data = {k: base64.b64decode(v).decode() for k, v in tls_secret["data"].items()}
    tls = TlsEndpoint(data["tls.crt"], data["tls.key"], tmp)
    cluster = server.cluster
    for ns in (NS, "kube-system", "team-a", "team-b"):
        cluster.create_namespace(ns, {"team": ns} if ns.startswith("team") else None)
    for doc in docs:
        kind = doc["kind"]
        if kind in ("Secret", "Pod"):
            continue  # the chart's certificates are not registry secrets; the test pod is a hook
        if kind == "Service":
            doc["spec"]["clusterIP"] = "127.0.0.1"
            for port in doc["spec"]["ports"]:
                if port["name"] == "https":
                    port["port"] = tls.port
        if kind == "MutatingWebhookConfiguration":
            doc["webhooks"][0]["clientConfig"]["service"]["port"] = tls.port
        put(server, doc)
    put(server, endpoint_slice(tls.port, ready=True))
    cluster.create_secret(
        "team-a", "team-a-registry", auths=auths("registry.example.com", password=PASSWORD)
    )
    cluster.create_secret(
        NS, "project-registry", auths=auths("ghcr.io/acme", password=PASSWORD),
        annotations={SOURCE_SELECTOR: "team=team-b"},
    )  # fmt: skip
    server.proxy["/readyz"] = (200, '{"status":"ready"}')
    server.proxy["/metrics"] = (200, metrics_text(2.0, 3.0))
    server.admit = admission(server)
    return Install(server, tls, docs, data["ca.crt"])


def endpoint_slice(port: int, *, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{FULLNAME}-abcde",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": FULLNAME},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["127.0.0.1"],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": f"{FULLNAME}-7d9f-x1", "namespace": NS},
            }
        ],
        "ports": [
            {"name": "https", "port": port, "protocol": "TCP"},
            {"name": "metrics", "port": 8080, "protocol": "TCP"},
        ],
    }
