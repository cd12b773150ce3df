"""POST /mutate over real HTTPS: captured AdmissionReviews in, patched pods out."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml
from helpers import EXAMPLES, review

JSON = {"Content-Type": "application/json"}


def post(client: httpx.Client, doc: Any) -> httpx.Response:
    return client.post("/mutate?timeout=10s", content=json.dumps(doc), headers=JSON)


def admitted_pod(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server would store it after applying our patch."""
    pod = copy.deepcopy(doc["request"]["object"])
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        pod = jsonpatch.apply_patch(pod, ops)
    return pod


def pull_secrets(pod: dict[str, Any]) -> list[str]:
    return [e["name"] for e in pod["spec"].get("imagePullSecrets") or []]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "v1-create-pod-multi-registry-sa-secret.json",
            [
                "sa-regcred",
                "dockerhub",
                "example-registry",
                "example-registry-5000",
                "explicit-regcred",
                "ghcr-org",
            ],
        ),
        ("v1-create-pod-explicit-secrets.json", ["explicit-regcred", "example-registry"]),
        ("v1-create-pod-dry-run.json", ["sa-regcred", "example-registry", "explicit-regcred"]),
        ("v1-create-pod-generate-name.json", ["sa-regcred"]),
        (
            "v1-create-pod-from-deployment.json",
            ["sa-regcred", "example-registry", "explicit-regcred"],
        ),
        ("v1beta1-create-pod.json", ["regcred"]),
        ("v1-update-pod-labels.json", ["sa-regcred"]),
        ("v1-update-pod-ephemeralcontainers.json", ["explicit-regcred"]),
    ],
)
def test_captured_reviews_get_exactly_the_secrets_their_images_need(
    client: httpx.Client, fixture: str, expected: list[str]
) -> None:
    doc = review(fixture)
    r = post(client, doc)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["apiVersion"] == doc["apiVersion"]
    assert body["response"]["uid"] == doc["request"]["uid"]
    assert body["response"]["allowed"] is True
    pod = admitted_pod(doc, body["response"])
    assert pull_secrets(pod) == expected
    # Reinvocation: the webhook applied to its own output changes nothing.
    again = copy.deepcopy(doc)
    again["request"]["object"] = pod
    assert "patch" not in post(client, again).json()["response"]


def test_warning_for_an_entry_naming_no_registry_secret(client: httpx.Client) -> None:
    doc = review("v1-create-pod-generate-name.json")
    doc["request"]["object"]["spec"]["imagePullSecrets"].append({"name": "typo-regcred"})
    warnings = post(client, doc).json()["response"]["warnings"]
    assert any("typo-regcred" in w for w in warnings)


def test_warning_for_an_unparseable_image_and_the_rest_still_served(client: httpx.Client) -> None:
    doc = review("v1-create-pod-multi-registry-sa-secret.json")
    doc["request"]["object"]["spec"]["containers"][0]["image"] = "Not A Valid/Image::"
    response = post(client, doc).json()["response"]
    assert any("not a valid reference" in w for w in response["warnings"])
    assert "ghcr-org" in pull_secrets(admitted_pod(doc, response))


def test_warning_for_a_private_registry_without_credentials(client: httpx.Client) -> None:
    doc = review("v1-create-pod-generate-name.json")
    doc["request"]["namespace"] = "team-b"
    doc["request"]["object"]["spec"]["containers"][0]["image"] = "registry.example.com:7000/x"
    response = post(client, doc).json()["response"]
    assert any("private registry" in w for w in response["warnings"])
    assert "patch" not in response


def test_namespaces_never_see_each_others_secrets(client: httpx.Client) -> None:
    doc = review("v1-create-pod-from-deployment.json")
    doc["request"]["namespace"] = "team-b"
    doc["request"]["object"]["metadata"]["namespace"] = "team-b"
    doc["request"]["object"]["spec"].pop("imagePullSecrets")
    pod = admitted_pod(doc, post(client, doc).json()["response"])
    assert pull_secrets(pod) == ["example-registry"]  # team-b's own, not team-a's


def test_opt_out_annotation(client: httpx.Client) -> None:
    doc = review("v1-create-pod-dry-run.json")
    doc["request"]["object"]["metadata"]["annotations"] = {"pullsecret-injector.io/inject": "false"}
    assert "patch" not in post(client, doc).json()["response"]


def test_unknown_namespace_gets_nothing(client: httpx.Client) -> None:
    doc = review("v1-create-pod-dry-run.json")
    doc["request"]["namespace"] = "nowhere"
    assert "patch" not in post(client, doc).json()["response"]


# ---- bad requests: a clear error and nothing changes -----------------------------------


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    r = client.post(
        "/mutate",
        content=json.dumps(review("v1-create-pod-dry-run.json")),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    assert "Content-Type must be application/json" in r.json()["message"]


def test_content_type_with_charset_is_accepted(client: httpx.Client) -> None:
    r = client.post(
        "/mutate",
        content=json.dumps(review("v1-create-pod-dry-run.json")),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_body_over_the_cap_is_413(client: httpx.Client) -> None:
    doc = review("v1-create-pod-dry-run.json")
    doc["request"]["object"]["metadata"]["annotations"]["big"] = "x" * (300 * 1024)
    r = post(client, doc)
    assert r.status_code == 413
    assert "limit" in r.json()["message"]


def test_chunked_body_over_the_cap_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 4096

    r = client.post("/mutate", content=chunks(), headers=JSON)
    assert r.status_code == 413


def test_not_json_is_400(client: httpx.Client) -> None:
    r = client.post("/mutate", content=b"{not json", headers=JSON)
    assert r.status_code == 400
    assert r.json()["message"].startswith("body is not valid JSON")


def test_not_an_admission_review_is_400(client: httpx.Client) -> None:
    r = post(client, {"apiVersion": "v1", "kind": "Pod"})
    assert r.status_code == 400
    assert "apiVersion must be one of" in r.json()["message"]


def test_get_is_not_allowed(client: httpx.Client) -> None:
    assert client.get("/mutate").status_code == 405


# ---- operations port ---------------------------------------------------------------------


def test_metrics_count_outcomes_and_injections(server: Any, client: httpx.Client) -> None:
    post(client, review("v1-create-pod-multi-registry-sa-secret.json"))
    text = httpx.get(f"{server.ops_url}/metrics").text
    assert 'pullsecret_injector_admission_requests_total{outcome="patched"}' in text
    assert "pullsecret_injector_injected_secrets_total" in text
    assert "pullsecret_injector_admission_duration_seconds_bucket" in text
    assert "pullsecret_injector_cache_secrets 10.0" in text


def test_healthz_and_readyz(server: Any) -> None:
    assert httpx.get(f"{server.ops_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.ops_url}/readyz").status_code == 200


def test_no_credential_ever_reaches_the_logs(server: Any, client: httpx.Client) -> None:
    for name in ("v1-create-pod-multi-registry-sa-secret.json", "v1-create-pod-dry-run.json"):
        post(client, review(name))
    logs = server.logs()
    assert "injected imagePullSecrets" in logs
    secrets = [
        d
        for d in yaml.safe_load_all((EXAMPLES / "cluster.yaml").read_text())
        if d["kind"] == "Secret"
    ]
    for s in secrets:
        for value in (s.get("data") or {}).values():
            decoded = base64.b64decode(value).decode()
            assert value not in logs
            assert decoded not in logs
            for word in ("fake-", "hubuser:"):
                assert word not in logs
