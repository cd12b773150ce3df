"""serve/decode.py decodes only the fields the webhook reads: every answer must be the one
the whole document gives (orjson), and a malformed body the error it always got."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.core.admission import BadRequest, handle, parse_review
from webhook.core.injection import OPT_OUT_ANNOTATION, Decider, Policy
from webhook.serve.decode import decode_document, decode_review

FIXTURES = sorted(
    p
    for p in (Path(__file__).parents[2] / "fixtures/admissionreview").glob("*.json")
    if p.name.startswith("v1")
)


@pytest.fixture(scope="module")
def store() -> Store:
    store = Store()
    fill_store(store, load_objects([EXAMPLES / "cluster.yaml"]))
    return store


def answer(doc: Any, store: Store) -> tuple[Any, ...]:
    """Everything the server derives from a decoded review: the parsed request's fields,
    the pod name it logs, the answer it sends and the decision behind it."""
    req = parse_review(doc)
    policy = Policy.build(None, ["registry.example.com"])
    got = handle(req, lambda pod, ns: Decider(policy).decide(pod, ns, store.secrets_in(ns)))
    fields = (req.api_version, req.uid, req.kind, req.resource, req.namespace, req.dry_run)
    return fields, req.pod_name, got.review, got.outcome, got.reason, got.decision


def both(body: bytes, store: Store) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return answer(decode_document(body), store), answer(orjson.loads(body), store)


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_fixtures_answer_as_the_whole_document(fixture: Path, store: Store) -> None:
    body = fixture.read_bytes()
    partial, whole = both(body, store)
    assert partial == whole


def test_the_decoded_document_leaves_out_what_nothing_reads() -> None:
    body = (Path(__file__).parents[2] / "fixtures/admissionreview/"
            "v1-create-pod-multi-registry-sa-secret.json").read_bytes()  # fmt: skip
    doc = decode_document(body)
    whole = orjson.loads(body)
    assert "managedFields" in whole["request"]["object"]["metadata"]
    assert "managedFields" not in doc["request"]["object"]["metadata"]
    assert "userInfo" not in doc["request"]
    container = doc["request"]["object"]["spec"]["containers"][0]
    whole_container = whole["request"]["object"]["spec"]["containers"][0]
    assert set(container) == {"name", "image"} < set(whole_container)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
EXTRA = st.dictionaries(st.sampled_from(["x", "ports", "env", "status"]), SCALARS, max_size=2)
IMAGES = st.one_of(
    st.sampled_from(
        ["nginx", "registry.example.com/app:v1", "ghcr.io/org/tool", "quay.io/x", "bad image"]
    ),
    st.integers(),
    st.none(),
)
CONTAINER = st.one_of(
    st.builds(
        lambda base, extra: {**extra, **base},
        st.fixed_dictionaries({}, optional={"name": st.text(max_size=5), "image": IMAGES}),
        EXTRA,
    ),
    st.integers(),  # not an object: the shape does not fit, orjson decodes it all
)
CONTAINERS = st.one_of(st.lists(CONTAINER, max_size=4), st.none(), st.text(max_size=3))
ENTRY = st.one_of(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["sa-regcred", "example-registry", "nope", ""])}
    ),
    st.integers(),
    st.none(),
)
META = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=5), st.integers()),
        "generateName": st.one_of(st.text(max_size=5), st.none()),
        "annotations": st.one_of(
            st.dictionaries(
                st.sampled_from([OPT_OUT_ANNOTATION, "other"]),
                st.sampled_from(["false", "true", ""]),
            ),
            st.text(max_size=3),
        ),
        "labels": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    },
)
SPEC = st.fixed_dictionaries(
    {},
    optional={
        "containers": CONTAINERS,
        "initContainers": CONTAINERS,
        "ephemeralContainers": CONTAINERS,
        "imagePullSecrets": st.one_of(st.lists(ENTRY, max_size=4), st.none(), st.integers()),
        "serviceAccountName": st.text(max_size=3),
    },
)
POD = st.one_of(
    st.fixed_dictionaries({}, optional={"metadata": META, "spec": SPEC, "status": EXTRA}),
    st.none(),
    st.text(max_size=3),
)
REQUEST = st.fixed_dictionaries(
    {
        "uid": st.sampled_from(["u-1", "", 7]),
        "kind": st.sampled_from([{"group": "", "kind": "Pod"}, {"kind": "Pod"}, "Pod"]),
        "resource": st.sampled_from([{"resource": "pods"}, {"resource": "pods", "group": 1}]),
        "operation": st.sampled_from(["CREATE", "UPDATE", None]),
        "object": POD,
    },
    optional={
        "namespace": st.sampled_from(["team-a", "team-b", "", None]),
        "name": st.one_of(st.text(max_size=3), st.none()),
        "subResource": st.sampled_from(["", "ephemeralcontainers", None]),
        "dryRun": st.one_of(st.booleans(), st.none(), st.text(max_size=2)),
        "userInfo": EXTRA,
    },
)
REVIEW = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", "v1"]),
        "kind": st.sampled_from(["AdmissionReview", "Other"]),
        "request": st.one_of(REQUEST, st.none()),
    },
    optional={"response": EXTRA},
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=REVIEW)
def test_generated_reviews_answer_as_the_whole_document(doc: dict[str, Any], store: Store) -> None:
    body = json.dumps(doc).encode()
    try:
        whole = answer(orjson.loads(body), store)
    except BadRequest as exc:
        with pytest.raises(BadRequest) as got:
            answer(decode_document(body), store)
        assert (str(got.value), got.value.status) == (str(exc), exc.status)
        return
    assert answer(decode_document(body), store) == whole


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"apiVersion": "admission.k8s.io/v1", "x": NaN}',
        b'{"request": {"object": {"spec": {"containers": [{"image": "a\\ud800"}]}}}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"request": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["empty", "truncated", "nan", "lone-surrogate", "deep-array", "deep-in-a-field"],
)
def test_a_body_that_is_not_json_gets_orjsons_error(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError) as whole:
        orjson.loads(body)
    with pytest.raises(BadRequest) as got:
        decode_review(body)
    assert got.value.status == 400
    assert str(got.value) == f"body is not valid JSON: {whole.value}"


def test_what_is_read_is_still_checked_in_full() -> None:
    """Text that is not UTF-8 in a field the webhook reads is refused as before; in a field
    nothing reads it is skipped as Go's encoding/json skips it (see the module)."""
    review = json.loads(
        (
            Path(__file__).parents[2] / "fixtures/admissionreview/v1-create-pod-dry-run.json"
        ).read_text()
    )
    body = json.dumps(review).encode()
    image = review["request"]["object"]["spec"]["containers"][0]["image"].encode()
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_review(body.replace(image, image + b"\xff", 1))
    review["request"]["userInfo"]["username"] = "USERNAME"
    body = json.dumps(review).encode().replace(b"USERNAME", b"user\xff")
    assert decode_review(body).uid == review["request"]["uid"]
