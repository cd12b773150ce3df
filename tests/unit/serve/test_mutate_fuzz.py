"""Fuzzing POST /mutate in process (issue 11): whatever the pod, the answer echoes the uid,
allows it, and any patch applies and only appends to spec.imagePullSecrets."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from typing import Any

import httpx
import jsonpatch
import pytest
from fastapi import FastAPI
from helpers import EXAMPLES, review
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.serve.app import create_app

NAMES = st.one_of(
    st.sampled_from(["sa-regcred", "example-registry", "dockerhub", "broken", "ghcr-org"]),
    st.text(max_size=20),
)
IMAGES = st.one_of(
    st.sampled_from(
        [
            "nginx",
            "registry.example.com/app:v1",
            "registry.example.com:5000/x@sha256:" + "a" * 64,
            "ghcr.io/org/tool",
            "quay.io/team/img",
            "[::1]:5000/x",
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
CONTAINER = st.fixed_dictionaries(
    {"name": st.text(max_size=10), "image": IMAGES},
    optional={"extra": st.integers()},
)
ENTRY = st.one_of(
    st.fixed_dictionaries({"name": NAMES}),
    st.fixed_dictionaries({}),
    st.none(),
    st.integers(),
)
SPEC = st.fixed_dictionaries(
    {},
    optional={
        "containers": st.one_of(st.lists(CONTAINER, max_size=6), st.none(), st.text()),
        "initContainers": st.lists(CONTAINER, max_size=3),
        "ephemeralContainers": st.lists(CONTAINER, max_size=2),
        "imagePullSecrets": st.one_of(st.lists(ENTRY, max_size=6), st.none()),
    },
)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    store = Store()
    fill_store(store, load_objects([EXAMPLES / "cluster.yaml"]))
    settings = Settings(dev=True, private_registries=("registry.example.com",))
    return create_app(settings, store, Metrics())


def post(app: FastAPI, doc: dict[str, Any]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://webhook") as c:
            return await c.post(
                "/mutate", content=json.dumps(doc), headers={"Content-Type": "application/json"}
            )

    return asyncio.run(send())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=SPEC,
    namespace=st.sampled_from(["team-a", "team-b", "legacy", "nowhere"]),
    uid=st.uuids(),
    version=st.sampled_from(["v1-create-pod-dry-run.json", "v1beta1-create-pod.json"]),
)
def test_every_answer_echoes_the_uid_allows_and_only_appends(
    app: FastAPI, spec: dict[str, Any], namespace: str, uid: Any, version: str
) -> None:
    doc = review(version)
    doc["request"]["uid"] = str(uid)
    doc["request"]["namespace"] = namespace
    doc["request"]["object"]["spec"] = spec
    r = post(app, doc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["apiVersion"] == doc["apiVersion"]
    response = body["response"]
    assert response["uid"] == str(uid)
    assert response["allowed"] is True
    assert len(response.get("warnings", [])) <= 11
    if "patch" not in response:
        return
    pod = copy.deepcopy(doc["request"]["object"])
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    before = spec.get("imagePullSecrets")
    after = patched["spec"]["imagePullSecrets"]
    kept = before if isinstance(before, list) else []
    assert after[: len(kept)] == kept  # nothing removed or reordered
    added = after[len(kept) :]
    assert added and all(set(e) == {"name"} for e in added)
    names = [e["name"] for e in added]
    assert len(set(names)) == len(names)
    assert not {n for n in names} & {e.get("name") for e in kept if isinstance(e, dict)}
    del patched["spec"]["imagePullSecrets"]
    original = copy.deepcopy(doc["request"]["object"])
    original["spec"].pop("imagePullSecrets", None)
    assert patched == original  # nothing else touched
