"""AdmissionReview admission.k8s.io/v1 and v1beta1 in, AdmissionReview response out.

Pure: takes the decoded JSON document, returns the response document. Every response is
built by one of the named constructors below, and each echoes the request's uid and
apiVersion. Two error families: BadRequest (the body is not a valid AdmissionReview: the
caller answers HTTP 4xx) and everything else (an internal fault: allowed, fail open).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from webhook.core.injection import Decision

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
MAX_WARNING_CHARS = 256  # the API server may truncate longer warnings
# At most this many warnings per response, then one "and N more" (issue 11: a response must
# not grow with the request; the API server keeps only the first few kilobytes of them).
MAX_WARNINGS = 10
MAX_AUDIT_IMAGES = 32  # images named in the injected-for-images audit annotation
AUDIT_KEY_INJECTED = "injected-secrets"
AUDIT_KEY_IMAGES = "injected-for-images"


class BadRequest(ValueError):  # noqa: N818 - the HTTP name is the clearer one here
    """The request is not a valid AdmissionReview; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Outcome(StrEnum):
    PATCHED = "patched"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    api_version: str
    uid: str
    group: str
    kind: str
    resource: str
    sub_resource: str
    namespace: str
    name: str
    operation: str
    dry_run: bool
    object: Mapping[str, Any] | None

    @property
    def pod_name(self) -> str:
        """name, else metadata.generateName + '*' (controller-made pods have no name yet)."""
        if self.name:
            return self.name
        meta = (self.object or {}).get("metadata")
        gen = meta.get("generateName") if isinstance(meta, (dict, Mapping)) else None
        return f"{gen}*" if isinstance(gen, str) and gen else ""

    @property
    def is_pod_create(self) -> bool:
        return (
            self.operation == "CREATE"
            and self.group == ""
            and self.resource == "pods"
            and not self.sub_resource
        )


def _field(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{where}.{name} must be a non-empty string")
    return value


def parse_review(doc: Any) -> AdmissionRequest:
    """Validate a decoded AdmissionReview; raises BadRequest saying what is wrong."""
    # (dict, Mapping): a dict (what orjson decodes) is told without the ABC's slower check
    if not isinstance(doc, (dict, Mapping)):
        raise BadRequest("body must be a JSON object (an AdmissionReview)")
    api_version = doc.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadRequest(
            f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {api_version!r}"[:300]
        )
    if doc.get("kind") != "AdmissionReview":
        raise BadRequest(f"kind must be 'AdmissionReview', got {doc.get('kind')!r}"[:300])
    req = doc.get("request")
    if not isinstance(req, (dict, Mapping)):
        raise BadRequest("request must be an object")
    uid = _field(req, "uid", "request")
    operation = _field(req, "operation", "request")
    kind = req.get("kind")
    resource = req.get("resource")
    if not isinstance(kind, (dict, Mapping)) or not isinstance(resource, (dict, Mapping)):
        raise BadRequest("request.kind and request.resource must be objects")
    obj = req.get("object")
    if obj is not None and not isinstance(obj, (dict, Mapping)):
        raise BadRequest("request.object must be an object or null")
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BadRequest("request.dryRun must be a boolean")
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        group=_field(kind, "group", "request.kind", required=False),
        kind=_field(kind, "kind", "request.kind"),
        resource=_field(resource, "resource", "request.resource"),
        sub_resource=_field(req, "subResource", "request", required=False),
        namespace=_field(req, "namespace", "request", required=False),
        name=_field(req, "name", "request", required=False),
        operation=operation,
        dry_run=dry_run,
        object=obj,
    )


# ---- named response constructors --------------------------------------------------------


def _review(req: AdmissionRequest, response: dict[str, Any]) -> dict[str, Any]:
    response["uid"] = req.uid
    return {"apiVersion": req.api_version, "kind": "AdmissionReview", "response": response}


# The API server drops a warning whose text holds a control character (unicode.IsControl:
# U+0000-001F, U+007F-009F; NewWarningHeader in k8s.io/apimachinery pkg/util/net/http.go).
# A warning quoting what the pod's author wrote (an image with a newline in it) is escaped
# instead of lost. (Text that is not UTF-8 never gets here: the fields a warning quotes are
# decoded in full, and refused when they are not: serve/decode.py.)
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _clip(warnings: tuple[str, ...] | list[str]) -> list[str]:
    kept = []
    for warning in warnings[:MAX_WARNINGS]:
        w = _UNSENDABLE.sub(_escaped, warning)
        kept.append(w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 1] + "…")
    if len(warnings) > MAX_WARNINGS:
        kept.append(f"and {len(warnings) - MAX_WARNINGS} more warnings")
    return kept


def _allowed_fields(
    warnings: tuple[str, ...] | list[str], audit: Mapping[str, str] | None
) -> dict[str, Any]:
    response: dict[str, Any] = {"allowed": True}
    if warnings:
        response["warnings"] = _clip(warnings)
    if audit:
        response["auditAnnotations"] = dict(audit)
    return response


def _patched_fields(
    patch: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    warnings: tuple[str, ...] | list[str],
    audit: Mapping[str, str] | None,
) -> dict[str, Any]:
    response = _allowed_fields(warnings, audit)
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(orjson.dumps(list(patch))).decode("ascii")
    return response


def allowed(
    req: AdmissionRequest,
    warnings: tuple[str, ...] | list[str] = (),
    audit: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Allowed, unchanged."""
    return _review(req, _allowed_fields(warnings, audit))


def patched(
    req: AdmissionRequest,
    patch: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    warnings: tuple[str, ...] | list[str] = (),
    audit: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Allowed with a JSON Patch (base64 of its JSON, as the API requires)."""
    return _review(req, _patched_fields(patch, warnings, audit))


def _decided(req: AdmissionRequest, decision: Decision) -> dict[str, Any]:
    """allowed() or patched() of a decision. What it derives from the decision alone
    (clipped warnings, audit annotations, the base64 patch) is built once per decision
    and kept on it (Decision.derived): the memo's decisions answer many pods. The
    response is a fresh dict each time; what it shares is never changed."""
    fields = decision.derived.get("response")
    if fields is None:
        if decision.changed:
            audit = audit_annotations(decision)
            fields = _patched_fields(decision.patch, decision.warnings, audit)
        else:
            fields = _allowed_fields(decision.warnings, None)
        decision.derived["response"] = fields
    return _review(req, dict(fields))


def failed_open(req: AdmissionRequest, error: str) -> dict[str, Any]:
    """An internal fault: the pod is admitted unchanged, and the client is told why."""
    return allowed(
        req,
        [f"pullsecret-injector: internal error, no imagePullSecrets injected ({error})"],
    )


# metav1.StatusReason of each HTTP error the webhook answers (k8s.io/apimachinery
# pkg/apis/meta/v1/types.go); any other code is sent without a reason.
_STATUS_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    431: "BadRequest",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def bad_request_body(message: str, code: int) -> dict[str, Any]:
    """The JSON Status of an HTTP error answer (4xx, 500).

    With its ``code``: client-go reads a Failure Status as the error and keeps its code,
    which the API server's webhook metrics label (``apiserver_admission_webhook_request_total``
    and the rejection count); a Status without one is counted as code 0.
    """
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    }
    reason = _STATUS_REASONS.get(code)
    if reason is not None:
        body["reason"] = reason
    return body


# ---- the handler -------------------------------------------------------------------------

Decide = Callable[[Mapping[str, Any], str], Decision]


@dataclass(frozen=True, slots=True)
class Answer:
    review: dict[str, Any]
    outcome: Outcome
    reason: str
    decision: Decision | None = None


def audit_annotations(decision: Decision) -> dict[str, str]:
    """What was injected, and for which images: at most MAX_AUDIT_IMAGES of them, then a
    count (a pod of 45,000 images made a 3 MB annotation, and as large a response)."""
    images = sorted({f"{i.name}={'+'.join(i.added)}" for i in decision.images if i.added})
    listed = ",".join(images[:MAX_AUDIT_IMAGES])
    if len(images) > MAX_AUDIT_IMAGES:
        listed += f",(and {len(images) - MAX_AUDIT_IMAGES} more)"
    return {AUDIT_KEY_INJECTED: ",".join(decision.add), AUDIT_KEY_IMAGES: listed}


def handle(req: AdmissionRequest, decide: Decide) -> Answer:
    """Answer one parsed request; never raises (an internal fault fails open)."""
    if not req.is_pod_create:
        return Answer(allowed(req), Outcome.SKIPPED, "not a pod CREATE")
    if req.object is None:
        return Answer(allowed(req), Outcome.SKIPPED, "request.object is null")
    if not req.namespace:
        return Answer(allowed(req), Outcome.SKIPPED, "request.namespace is empty")
    try:
        decision = decide(req.object, req.namespace)
    except Exception as exc:  # fail open on any internal fault, by design
        error = f"{type(exc).__name__}"
        return Answer(failed_open(req, error), Outcome.ERROR, f"internal error: {exc!r}")
    outcome = Outcome.PATCHED if decision.changed else Outcome.UNCHANGED
    return Answer(_decided(req, decision), outcome, decision.reason, decision)
