"""POST /mutate over real HTTPS: captured AdmissionReviews in, patched pods out."""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml
from helpers import EXAMPLES, review, wait_for

JSON = {"Content-Type": "application/json"}


def post(client: httpx.Client, doc: Any) -> httpx.Response:
    return client.post("/mutate?timeout=10s", content=json.dumps(doc), headers=JSON)


def post_to(client: httpx.Client, path: str) -> httpx.Response:
    return client.post(path, content=json.dumps(review("v1-create-pod-dry-run.json")), headers=JSON)


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


def assert_json_status(r: httpx.Response, code: int) -> None:
    assert r.status_code == code
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["message"]
    assert body["code"] == code  # what the API server's webhook metrics label


def test_get_is_not_allowed_and_says_so_in_a_json_status(client: httpx.Client) -> None:
    r = client.get("/mutate")
    assert_json_status(r, 405)
    assert r.headers["allow"] == "POST"


def test_an_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    assert_json_status(post_to(client, "/nowhere"), 404)


def test_a_trailing_slash_is_not_redirected(client: httpx.Client) -> None:
    r = post_to(client, "/mutate/")
    assert "location" not in r.headers
    assert_json_status(r, 404)


def test_ops_port_errors_are_json_statuses(server: Any) -> None:
    assert_json_status(httpx.get(f"{server.ops_url}/nowhere"), 404)
    assert_json_status(httpx.post(f"{server.ops_url}/readyz"), 405)


def test_a_client_gone_mid_body_is_counted_not_logged_as_an_error(server: Any) -> None:
    body = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
    wait_for(
        lambda: (
            "pullsecret_injector_client_disconnects_total 1.0"
            in httpx.get(f"{server.ops_url}/metrics").text
        ),
        "the disconnect counted",
    )
    assert "Exception in ASGI application" not in server.logs()


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
