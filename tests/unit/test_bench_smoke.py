"""The benchmark harness sends what it claims and its baselines answer validly (no timings)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench import baselines, workload
from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.core.admission import parse_review
from webhook.metrics import Metrics
from webhook.serve.app import create_app

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "cluster.yaml"
    return workload.write_cluster(path, workload.REQUEST_NAMESPACES)


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return workload.bodies()


def post(app: Any, bodies: Sequence[bytes]) -> list[httpx.Response]:
    """POST each body to /mutate of an ASGI app, in process (no lifespan: uvicorn runs none)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://bench") as client:
            return [await client.post("/mutate", content=b, headers=HEADERS) for b in bodies]

    return asyncio.run(run())


def containers(doc: dict[str, Any]) -> tuple[int, int]:
    spec = doc["request"]["object"]["spec"]
    return len(spec["containers"]), len(spec.get("initContainers", []))


def assert_review(answer: dict[str, Any], uid: str | None) -> dict[str, Any]:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    assert response["allowed"] is True
    if uid is not None:
        assert response["uid"] == uid
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops and all(op["op"] == "add" and op["path"].startswith("/spec/") for op in ops)
    return response


def test_bodies_are_pod_creates_of_every_shape(bodies: list[bytes]) -> None:
    docs = [orjson.loads(b) for b in bodies]
    assert len(docs) == workload.REQUEST_NAMESPACES * len(workload.SHAPES)
    assert len({d["request"]["uid"] for d in docs}) == len(docs)
    assert {containers(d) for d in docs} == {(1, 0), (3, 1), (10, 2)}
    for doc in docs:
        req = parse_review(doc)
        assert req.is_pod_create and req.namespace.startswith("bench-")
        spec = doc["request"]["object"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "sa-regcred"}]
    registries = {
        c["image"].split("/")[0]
        for d in docs
        for c in d["request"]["object"]["spec"]["containers"]
        if "." in c["image"].split("/")[0]
    }
    assert len(registries) >= 5
    assert b"\n" not in b"".join(bodies)  # one per line for wrk and k6


def test_cluster_manifest_holds_five_registry_secrets_per_namespace(cluster: Path) -> None:
    store = Store()
    fill_store(store, load_objects([cluster]))
    assert store.secret_count() == workload.REQUEST_NAMESPACES * workload.SECRETS_PER_NAMESPACE
    secrets = store.secrets_in(workload.namespace_name(3))
    assert set(secrets) == set(workload.REGISTRY_SECRETS)
    assert all(s.usable for s in secrets.values())


def test_webhook_patches_every_bench_request(cluster: Path, bodies: list[bytes]) -> None:
    store = Store()
    fill_store(store, load_objects([cluster]))
    settings = Settings(cert_file=Path("unused.crt"), key_file=Path("unused.key"))
    some = bodies[: len(workload.SHAPES) * 2]
    for body, resp in zip(some, post(create_app(settings, store, Metrics()), some), strict=True):
        assert resp.status_code == 200
        assert_review(resp.json(), orjson.loads(body)["request"]["uid"])


def test_raw_baseline_answers_the_webhooks_review_of_the_same_size(bodies: list[bytes]) -> None:
    answer = baselines.webhook_answer()
    (resp,) = post(baselines.build("raw"), bodies[1:2])
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == orjson.dumps(answer)
    assert_review(resp.json(), None)


def test_floor_baseline_echoes_the_uid_with_a_fixed_patch(bodies: list[bytes]) -> None:
    patch = baselines.webhook_answer()["response"]["patch"]
    for body, resp in zip(bodies[:3], post(baselines.build("floor"), bodies[:3]), strict=True):
        assert resp.status_code == 200
        response = assert_review(resp.json(), orjson.loads(body)["request"]["uid"])
        assert response["patch"] == patch


def test_the_scale_runs_control_server_holds_what_the_probe_asks_for(tmp_path: Path) -> None:
    """bench/cluster_scale.py's control (`serve --objects`) must answer the probe's requests
    with a patch, as the webhook on the loaded cluster does, or it controls for nothing."""
    from bench import cluster_scale  # noqa: PLC0415 - only this test needs it
    from bench.__main__ import expected_reviews  # noqa: PLC0415

    path = cluster_scale.write_control_cluster(tmp_path / "control.yaml", 20, 5)
    objects = load_objects([path])
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert names == {cluster_scale.ns_name(i) for i in range(20)}
    body = workload.encode(workload.review(workload.SHAPES[1], cluster_scale.ns_name(7), "p", "u"))
    (answer,) = expected_reviews(path, [body])
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    injected = {op["value"]["name"] for op in patch if op["path"] == "/spec/imagePullSecrets/-"}
    # every registry secret but the one the pod already names (its ServiceAccount's)
    assert injected == set(workload.REGISTRY_SECRETS) - {"sa-regcred"}
