"""A request body to an AdmissionRequest, decoding only what the webhook reads (issue 14).

A pod's AdmissionReview is mostly what no decision reads: managedFields, the
last-applied-configuration annotation, userInfo, volumes, every container field but its
name and image. orjson builds all of it (about 25 µs for a 9 KB review, most of the pure
path's time: bench/README.md). `msgspec`, given the shape below, builds only the fields
listed and skips the rest while checking its JSON syntax: 2.4 times faster on the
benchmark's reviews, and a smaller dict to free.

What is decoded is what orjson would have decoded for those fields, as plain dicts,
lists and strings, so `core.admission.parse_review` and the decision see the same input
(tests/unit/serve/test_decode.py compares both on every fixture and on generated pods).
Anything the shape does not fit (a `containers` that is not a list of objects, a body
that is not JSON, a nesting too deep for either) is decoded again by orjson in full, so
a malformed review gets exactly the error it got before.

Skipped fields are checked as JSON only, as Go's encoding/json checks the fields a
struct does not declare: a string that is not UTF-8 or a number out of float range in a
field nothing reads is not refused (orjson refused the whole body), as controller-runtime's
webhooks do not refuse it either. The fields that are read are still checked in full.

Keep SHAPE in step with what the code reads from a review: core.admission.parse_review
(the envelope), AdmissionRequest.pod_name (metadata), core.injection.Decider.decide
(the opt-out annotation, the containers, imagePullSecrets). A field read but not declared
here would silently be missing; the test above fails then.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec
import orjson

from webhook.core.admission import AdmissionRequest, BadRequest, parse_review


# The shape: every field the webhook reads, by its name in the API. Any: decoded as orjson
# decodes it (the core checks its type); a TypedDict: only the fields it names.
class _Container(TypedDict, total=False):
    name: Any
    image: Any


class _Metadata(TypedDict, total=False):
    name: Any
    generateName: Any
    annotations: Any


class _Spec(TypedDict, total=False):
    initContainers: list[_Container]
    containers: list[_Container]
    ephemeralContainers: list[_Container]
    imagePullSecrets: Any


class _Pod(TypedDict, total=False):
    metadata: _Metadata
    spec: _Spec


class _Request(TypedDict, total=False):
    uid: Any
    kind: Any
    resource: Any
    subResource: Any
    namespace: Any
    name: Any
    operation: Any
    dryRun: Any
    object: _Pod | None


class _Review(TypedDict, total=False):
    apiVersion: Any
    kind: Any
    request: _Request


SHAPE = _Review
_decode_shape = msgspec.json.Decoder(SHAPE).decode


def decode_document(body: bytes) -> Any:
    """The fields of SHAPE from a JSON body; the whole document when the shape does not
    fit; raises BadRequest when the body is not JSON."""
    try:
        return _decode_shape(body)
    except (msgspec.DecodeError, RecursionError):
        pass  # not this shape, or not JSON at all: orjson decides, with its own message
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


def decode_review(body: bytes) -> AdmissionRequest:
    """The AdmissionReview in a request body; raises BadRequest saying what is wrong."""
    return parse_review(decode_document(body))
