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


def test_pure_baseline_answers_as_the_webhook_does(cluster: Path, bodies: list[bytes]) -> None:
    """(c) of bench.ladder is the webhook's own decision: the same answer, byte for byte."""
    store = Store()
    fill_store(store, load_objects([cluster]))
    settings = Settings(cert_file=Path("unused.crt"), key_file=Path("unused.key"))
    some = bodies[: len(workload.SHAPES) * 2]
    want = post(create_app(settings, store, Metrics()), some)
    got = post(baselines.build("pure"), some)
    assert [r.content for r in got] == [r.content for r in want]
    assert all(r.status_code == 200 for r in got)


def _fake_results(webhook_rps: float) -> dict[str, Any]:
    """bench.__main__'s result shape with made-up figures (no timing is measured here)."""
    from bench.__main__ import KEYS, LARGE, LOOPS, RATES, SMALL  # noqa: PLC0415

    rps = {"raw": 10_000.0, "floor": 4_000.0, f"webhook-{SMALL}": webhook_rps,
           f"webhook-{LARGE}": webhook_rps}  # fmt: skip

    def run(key: str) -> dict[str, Any]:
        return {"rps": rps[key], "cpu_us_per_req": 1e6 / rps[key], "server_cpu": 1.0,
                "generator_cpu": 0.1, "other_cpu": 0.0, "errors": 0, "p50_ms": 1.0}  # fmt: skip

    def rate() -> dict[str, Any]:
        return {"rps": 200, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
                "generator_cpu": 0.3, "extra": {"dropped": 0}}  # fmt: skip

    return {
        "machine": {
            k: "x"
            for k in (
                "nproc",
                "cpu",
                "memory",
                "kernel",
                "python",
                "fastapi",
                "uvicorn",
                "uvloop",
                "orjson",
                "wrk",
                "k6",
                "nice",
                "load_before",
            )
        },
        "body_sizes": "1/2/3",
        "response_sizes": "1/2/3",
        "raw_size": 1,
        "titles": {k: k for k in KEYS},
        "throughput": {loop: {k: [run(k)] * len(workload.SHAPES) for k in KEYS} for loop in LOOPS},
        "latency": {loop: {k: {r: rate() for r in RATES} for k in KEYS} for loop in LOOPS},
        "rss": {
            loop: {k: {"rss_mib": 120.0, "peak_rss_mib": 121.0, "ready_s": 1.0} for k in KEYS[2:]}
            for loop in LOOPS
        },
        "store_load": {
            "secrets": 1,
            "namespaces": 1,
            "total_s": 1.0,
            "parse_s": 1.0,
            "fill_s": 1.0,
            "rss_mib": 1.0,
        },
        "apiserver_load": {"skipped": "test"},
        "micro": [],
    }


@pytest.mark.parametrize(("webhook_rps", "met"), [(6_000.0, True), (3_000.0, False)])
def test_every_goal_is_printed_with_its_ratio_and_verdict(webhook_rps: float, met: bool) -> None:
    from bench.__main__ import generator_notes, goals, render  # noqa: PLC0415

    res = _fake_results(webhook_rps)
    res["goals"] = goals(res)
    res["generator"] = generator_notes(res)
    text = render(res)
    item1 = [g for g in res["goals"] if g[0].startswith("1.")]
    assert len(item1) == 3 * 2 * 2  # CPU, vs (a), vs (b); two stores; two loops
    assert all(ok is met for _, ok, _ in item1)
    assert any(g[0].startswith("3.") for g in res["goals"])
    assert any("RSS" in g[0] for g in res["goals"])
    for loop in ("asyncio", "uvloop"):
        assert f"1. throughput >= 0.5 x (a), webhook-100, {loop}" in text
    ratio = f"{webhook_rps / 10_000:.2f} / {webhook_rps / 10_000:.2f}"
    assert ratio in text


def test_profile_table_attributes_samples_to_items() -> None:
    from bench.profile import parse_raw, table  # noqa: PLC0415

    raw = (
        "thread (0x1);main (webhook/cli.py:1);emit (/usr/lib/python3.11/logging/__init__.py:1) 3\n"
        "thread (0x1);main (webhook/cli.py:1);decide (webhook/core/injection.py:9) 1\n"
    )
    text = table(parse_raw(raw), 100.0, 10)
    assert "  75.0  75.0%  JSON log line per injection" in text
    assert "  25.0  25.0%  Decider memo lookups" in text


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
