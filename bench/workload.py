"""What the benchmark sends and what the webhook knows: AdmissionReviews and cluster states.

Requests are reshaped from a real AdmissionReview the kube-apiserver sent
(tests/fixtures/admissionreview/v1-create-pod-multi-registry-sa-secret.json: `kubectl
apply` of a pod whose ServiceAccount already added `sa-regcred`): same envelope,
userInfo, managedFields, volumes and container fields, with 1, 3 or 10 containers (plus
init containers for the larger two) pulling from several registries. They are encoded
compactly, as the API server sends them.

Every namespace holds the same five registry secrets (quay.io, registry.example.com, its
port 5000, ghcr.io/org and Docker Hub), so the request stream is the same whatever the
cluster's size: only the number of other namespaces changes between the small (20
namespaces, 100 secrets) and the large (10,000 namespaces, 50,000 secrets) store.
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/admissionreview/v1-create-pod-multi-registry-sa-secret.json"

SECRETS_PER_NAMESPACE = 5
#: secret name -> the registry key of its docker config (as `docker login` would write it)
REGISTRY_SECRETS: dict[str, str] = {
    "sa-regcred": "quay.io",
    "example-registry": "https://registry.example.com/v1/",
    "example-registry-5000": "registry.example.com:5000",
    "ghcr-org": "ghcr.io/org",
    "dockerhub": "https://index.docker.io/v1/",
}
assert len(REGISTRY_SECRETS) == SECRETS_PER_NAMESPACE
#: requests are spread over this many namespaces (they exist at every store size)
REQUEST_NAMESPACES = 20
SMALL_NAMESPACES = 20  # 100 secrets
LARGE_NAMESPACES = 10_000  # 50,000 secrets

_DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Shape:
    """A pod: its init container images and container images."""

    name: str
    init_images: tuple[str, ...]
    images: tuple[str, ...]


SHAPES: tuple[Shape, ...] = (
    Shape("1 container", (), ("nginx:1.25",)),
    # the pod of the captured request: one init container and three containers
    Shape(
        "3 containers",
        ("registry.example.com:5000/tools/init:1.0",),
        ("registry.example.com/team/app:v1", f"ghcr.io/org/sidecar@{_DIGEST}", "nginx"),
    ),
    Shape(
        "10 containers",
        ("registry.example.com:5000/tools/migrate:2.1", "busybox:1.36"),
        (
            "registry.example.com/team/api:v3",
            "registry.example.com/team/worker:v3",
            f"ghcr.io/org/proxy@{_DIGEST}",
            "ghcr.io/other-org/exporter:0.9",  # no credential serves it
            "quay.io/prometheus/node-exporter:v1.7.0",
            "docker.io/grafana/grafana:10.2.0",
            "redis:7",
            "gcr.io/distroless/static:nonroot",  # public, no credential
            "registry.example.com:5000/tools/debug:1.0",
            "index.docker.io/library/postgres:16",
        ),
    ),
)


def namespace_name(index: int) -> str:
    return f"bench-{index:05d}"


def _template() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FIXTURE.read_text())
    return doc


def _container(template: Mapping[str, Any], name: str, image: str) -> dict[str, Any]:
    c = copy.deepcopy(dict(template))
    c["name"] = name
    c["image"] = image
    return c


def _managed(names: Sequence[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        ".": {},
        "f:image": {},
        "f:imagePullPolicy": {},
        "f:name": {},
        "f:resources": {},
        "f:terminationMessagePath": {},
        "f:terminationMessagePolicy": {},
    }
    return {f'k:{{"name":"{n}"}}': dict(fields) for n in names}


def review(shape: Shape, namespace: str, pod: str, uid: str) -> dict[str, Any]:
    """An AdmissionReview for creating `pod` of `shape` in `namespace`."""
    doc = _template()
    req = doc["request"]
    req["uid"] = uid
    req["name"] = pod
    req["namespace"] = namespace
    obj = req["object"]
    meta = obj["metadata"]
    meta["name"] = pod
    meta["namespace"] = namespace
    meta["labels"] = {"app": pod}
    spec = obj["spec"]
    template = spec["containers"][0]
    inits = [_container(template, f"init-{i}", im) for i, im in enumerate(shape.init_images)]
    containers = [_container(template, f"c{i}", im) for i, im in enumerate(shape.images)]
    spec["containers"] = containers
    if inits:
        spec["initContainers"] = inits
    else:
        spec.pop("initContainers", None)
    applied = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {},
            "labels": {"app": pod},
            "name": pod,
            "namespace": namespace,
        },
        "spec": {
            "containers": [{"image": c["image"], "name": c["name"]} for c in containers],
            **(
                {"initContainers": [{"image": c["image"], "name": c["name"]} for c in inits]}
                if inits
                else {}
            ),
        },
    }
    meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = (
        json.dumps(applied, separators=(",", ":")) + "\n"
    )
    fspec = meta["managedFields"][0]["fieldsV1"]["f:spec"]
    fspec["f:containers"] = _managed([c["name"] for c in containers])
    if inits:
        fspec["f:initContainers"] = {".": {}, **_managed([c["name"] for c in inits])}
    else:
        fspec.pop("f:initContainers", None)
    meta["managedFields"][0]["fieldsV1"]["f:metadata"]["f:labels"] = {".": {}, "f:app": {}}
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON, as the API server sends it."""
    return json.dumps(doc, separators=(",", ":")).encode()


def bodies(shapes: Sequence[Shape] = SHAPES) -> list[bytes]:
    """The request stream: every shape in every request namespace, interleaved by shape."""
    out = []
    for n in range(REQUEST_NAMESPACES):
        for s, shape in enumerate(shapes):
            uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{n}/{s}"))
            pod = f"{shape.name.split()[0]}c-{n}"
            out.append(encode(review(shape, namespace_name(n), pod, uid)))
    return out


def medium_body() -> bytes:
    """The captured pod's shape (1 init + 3 containers): the size the baselines answer for."""
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, "bench/medium"))
    return encode(review(SHAPES[1], namespace_name(0), "3c-0", uid))


# ---- cluster state -------------------------------------------------------------------------


def _docker_config(key: str, index: int) -> str:
    password = f"not-a-secret-{index}"
    auth = base64.b64encode(f"bench:{password}".encode()).decode()
    config = {"auths": {key: {"username": "bench", "password": password, "auth": auth}}}
    return base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()


def secret_manifests(namespaces: int) -> list[dict[str, Any]]:
    """Namespace and Secret objects: `namespaces` namespaces of five registry secrets each."""
    objects: list[dict[str, Any]] = []
    index = 0
    for n in range(namespaces):
        ns = namespace_name(n)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"field.cattle.io/projectId": f"p-{n % 97}"}},
            }
        )
        for name, key in REGISTRY_SECRETS.items():
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns, "labels": {"team": f"t{n % 13}"}},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": _docker_config(key, index)},
                }
            )
            index += 1
    return objects


def write_cluster(path: Path, namespaces: int) -> Path:
    """A multi-document YAML manifest of the cluster state (as `kubectl get -o yaml` pieces).

    Written by hand (the values are plain ASCII) because yaml.dump is slow at 60,000 docs.
    """
    lines: list[str] = []
    for obj in secret_manifests(namespaces):
        meta = obj["metadata"]
        labels = "".join(f"\n    {k}: {v!s}" for k, v in meta["labels"].items())
        lines.append(f"---\napiVersion: v1\nkind: {obj['kind']}\nmetadata:\n  name: {meta['name']}")
        if "namespace" in meta:
            lines.append(f"\n  namespace: {meta['namespace']}")
        lines.append(f"\n  labels:{labels}\n")
        if obj["kind"] == "Secret":
            lines.append(
                f"type: {obj['type']}\ndata:\n  .dockerconfigjson: "
                f"{obj['data']['.dockerconfigjson']}\n"
            )
    path.write_text("".join(lines))
    return path


def cluster_store(namespaces: int) -> Store:
    """A store holding write_cluster's state, loaded as `serve --objects` loads it."""
    store = Store()
    with tempfile.TemporaryDirectory() as tmp:
        fill_store(store, load_objects([write_cluster(Path(tmp) / "c.yaml", namespaces)]))
    return store
