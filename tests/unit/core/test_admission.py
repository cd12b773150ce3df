"""AdmissionReview parsing, the named responses and the handler, on captured requests."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from helpers import REVIEWS, review

from webhook.cluster.store import Store
from webhook.core.admission import (
    BadRequest,
    Outcome,
    allowed,
    bad_request_body,
    handle,
    parse_review,
    patched,
)
from webhook.core.injection import Decision, Policy, decide

CAPTURED = sorted(p.name for p in REVIEWS.glob("v1*.json"))


def decide_with(store: Store) -> Any:
    return lambda pod, ns: decide(pod, ns, store.secrets_in(ns), Policy())


@pytest.mark.parametrize("name", CAPTURED)
def test_every_captured_review_parses_and_answers_in_its_own_version(
    name: str, example_store: Store
) -> None:
    doc = review(name)
    answer = handle(parse_review(doc), decide_with(example_store))
    assert answer.review["apiVersion"] == doc["apiVersion"]
    assert answer.review["kind"] == "AdmissionReview"
    assert answer.review["response"]["uid"] == doc["request"]["uid"]
    assert answer.review["response"]["allowed"] is True


@pytest.mark.parametrize(
    "name", ["v1-update-pod-labels.json", "v1-update-pod-ephemeralcontainers.json"]
)
def test_updates_are_allowed_untouched(name: str, example_store: Store) -> None:
    answer = handle(parse_review(review(name)), decide_with(example_store))
    assert answer.outcome is Outcome.SKIPPED
    assert "patch" not in answer.review["response"]


def test_generate_name_pod_has_an_empty_name_but_a_label_for_logs() -> None:
    req = parse_review(review("v1-create-pod-from-deployment.json"))
    assert req.name == "" and req.pod_name == "web-79d6d5ff4f-*"
    assert req.namespace == "team-a"


def test_patch_is_base64_json_patch_with_audit_annotations(example_store: Store) -> None:
    doc = review("v1-create-pod-multi-registry-sa-secret.json")
    answer = handle(parse_review(doc), decide_with(example_store))
    response = answer.review["response"]
    assert answer.outcome is Outcome.PATCHED
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    added = [op["value"]["name"] for op in ops]
    assert added == [
        "dockerhub",
        "example-registry",
        "example-registry-5000",
        "explicit-regcred",
        "ghcr-org",
    ]
    assert response["auditAnnotations"]["injected-secrets"] == ",".join(added)


def test_an_internal_fault_fails_open_with_a_warning() -> None:
    def boom(pod: Any, ns: str) -> Decision:
        raise RuntimeError("store exploded")

    doc = review("v1-create-pod-generate-name.json")
    answer = handle(parse_review(doc), boom)
    assert answer.outcome is Outcome.ERROR
    response = answer.review["response"]
    assert response["allowed"] is True and "patch" not in response
    assert "internal error" in response["warnings"][0]
    assert response["uid"] == doc["request"]["uid"]


def _mutated(doc: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["apiVersion"], "admission.k8s.io/v2", "apiVersion must be one of"),
        (["kind"], "Pod", "kind must be 'AdmissionReview'"),
        (["request"], ..., "request must be an object"),
        (["request"], [], "request must be an object"),
        (["request", "uid"], ..., "request.uid must be a non-empty string"),
        (["request", "uid"], "", "request.uid must be a non-empty string"),
        (["request", "uid"], 7, "request.uid must be a non-empty string"),
        (["request", "operation"], None, "request.operation"),
        (["request", "kind"], "Pod", "request.kind and request.resource must be objects"),
        (["request", "object"], "pod", "request.object must be an object"),
        (["request", "dryRun"], "yes", "request.dryRun must be a boolean"),
    ],
)
def test_malformed_reviews_are_bad_requests_that_say_what_is_wrong(
    path: list[str], value: Any, message: str
) -> None:
    doc = _mutated(review("v1-create-pod-dry-run.json"), path, value)
    with pytest.raises(BadRequest) as exc:
        parse_review(doc)
    assert message in str(exc.value)
    assert exc.value.status == 400


@pytest.mark.parametrize("doc", [None, [], "x", 3])
def test_non_object_bodies_are_bad_requests(doc: Any) -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        parse_review(doc)


def test_named_constructors_echo_uid_and_version() -> None:
    req = parse_review(review("v1beta1-create-pod.json"))
    for built in (allowed(req), patched(req, [{"op": "add", "path": "/x", "value": 1}])):
        assert built["apiVersion"] == "admission.k8s.io/v1beta1"
        assert built["response"]["uid"] == req.uid


def test_long_warnings_are_clipped() -> None:
    req = parse_review(review("v1beta1-create-pod.json"))
    built = allowed(req, ["x" * 1000])
    assert len(built["response"]["warnings"][0]) == 256


def test_at_most_ten_warnings_then_how_many_more() -> None:
    req = parse_review(review("v1beta1-create-pod.json"))
    built = allowed(req, [f"w{i}" for i in range(110_000)])
    warnings = built["response"]["warnings"]
    assert warnings[:10] == [f"w{i}" for i in range(10)]
    assert warnings[10:] == ["and 109990 more warnings"]


def test_dry_run_gets_the_same_answer(example_store: Store) -> None:
    dry = review("v1-create-pod-dry-run.json")
    wet = json.loads(json.dumps(dry))
    wet["request"]["dryRun"] = False
    a = handle(parse_review(dry), decide_with(example_store)).review["response"]
    b = handle(parse_review(wet), decide_with(example_store)).review["response"]
    assert a == b and a.get("patch")


def test_the_audit_annotation_names_32_images_then_how_many_more(example_store: Store) -> None:
    doc = review("v1-create-pod-dry-run.json")
    doc["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"registry.example.com/app-{i}"} for i in range(1000)
    ]
    answer = handle(parse_review(doc), decide_with(example_store))
    images = answer.review["response"]["auditAnnotations"]["injected-for-images"]
    assert images.count("registry.example.com/app-") == 32
    assert images.endswith(",(and 968 more)")


@pytest.mark.parametrize(
    "image", ["a/B\nc:1", "a/B\tc", "registry.example.com/Team\r/app", "a/B\x85c\x7f"]
)
def test_a_warning_quoting_the_pod_has_no_control_character(
    image: str, example_store: Store
) -> None:
    """The API server drops a warning with a control character (NewWarningHeader): the
    invalid image's reason, which quotes the image as written, is escaped instead."""
    doc = review("v1-create-pod-dry-run.json")
    doc["request"]["object"]["spec"]["containers"][0]["image"] = image
    warnings = handle(parse_review(doc), decide_with(example_store)).review["response"]["warnings"]
    quoted = [w for w in warnings if "not a valid reference" in w]
    assert len(quoted) == 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in quoted[0])
    assert "\\u00" in quoted[0]  # escaped, so still said


@pytest.mark.parametrize(
    ("code", "reason"),
    [(400, "BadRequest"), (413, "RequestEntityTooLarge"), (415, "UnsupportedMediaType"),
     (500, "InternalError"), (418, None)],
)  # fmt: skip
def test_an_error_status_carries_its_code(code: int, reason: str | None) -> None:
    """client-go keeps a Failure Status's code as the error's: the API server's webhook
    metrics label it (a Status without one counts as code 0)."""
    body = bad_request_body("what went wrong", code)
    assert body["code"] == code and body.get("reason") == reason
    assert body["kind"] == "Status" and body["status"] == "Failure"


def test_a_remembered_decision_answers_each_request_with_its_own_response() -> None:
    """handle() keeps what a decision's response derives from it on the decision (the
    Decider hands one decision to every pod of a workload): built once, each answer a
    fresh dict with its own uid."""
    from webhook.core import admission  # noqa: PLC0415
    from webhook.core.injection import Decision  # noqa: PLC0415

    patch = ({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "s"}]},)
    decision = Decision(add=("s",), patch=patch, warnings=("w\n",), reason="adds s")
    calls = []
    real = admission.audit_annotations

    def counting(d: Decision) -> dict[str, str]:
        calls.append(d)
        return real(d)

    def review_for(uid: str) -> dict[str, Any]:
        doc = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": {"kind": "Pod"}, "resource": {"resource": "pods"},
                "operation": "CREATE", "namespace": "ns", "object": {"spec": {}},
            },
        }  # fmt: skip
        return doc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(admission, "audit_annotations", counting)
        one = admission.handle(admission.parse_review(review_for("u1")), lambda p, n: decision)
        two = admission.handle(admission.parse_review(review_for("u2")), lambda p, n: decision)
    assert len(calls) == 1
    assert one.review["response"]["uid"] == "u1" and two.review["response"]["uid"] == "u2"
    assert one.review["response"] is not two.review["response"]
    want = admission.patched(
        admission.parse_review(review_for("u2")), patch, ("w\n",), real(decision)
    )
    assert two.review == want
    assert two.review["response"]["warnings"] == ["w\\u000a"]
