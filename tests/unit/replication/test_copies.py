"""Copy writes and source reads (webhook/replication/copies.py) against API answers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from webhook.core.planner import SELECTOR_ANNOTATION, Config, SourceRef
from webhook.replication.copies import CopyWriter, SourceReader
from webhook.replication.expectations import Clashes, Expectations

REL = "psi-system"
CONFIG = Config.build(REL)
RAW = json.dumps({"auths": {"registry.example.com": {"auth": "dTpw"}}}).encode()


def source(name: str = "reg") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": REL,
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {SELECTOR_ANNOTATION: "team=a"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(RAW).decode()},
    }


def forbidden(message: str, causes: list[dict[str, str]] | None = None) -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    details: dict[str, Any] = {"name": "reg", "kind": "secrets"}
    if causes is not None:
        details["causes"] = causes
    exc.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": "Forbidden", "details": details, "code": 403}
    )  # fmt: skip
    return exc


# What kube-apiserver v1.28.7 answered a create in a namespace being deleted (the kit).
TERMINATING = forbidden(
    'secrets "reg" is forbidden: unable to create new content in namespace a1 because it '
    "is being terminated",
    [{"reason": "NamespaceTerminating", "message": "namespace a1 is being terminated",
      "field": "metadata.namespace"}],
)  # fmt: skip
QUOTA = forbidden(
    'secrets "reg" is forbidden: exceeded quota: q, requested: count/secrets=1, used: '
    "count/secrets=10, limited: count/secrets=10"
)


def create_answered(exc: ApiException) -> str:
    def request(method: str, path: str, **_: Any) -> dict[str, Any]:
        raise exc

    writer = CopyWriter(CONFIG, Expectations(), Clashes())
    return writer.create(request, "a1", "reg", source(), SourceRef(REL, "reg"))


def test_a_create_in_a_terminating_namespace_is_gone() -> None:
    assert create_answered(TERMINATING) == "gone"
    assert create_answered(ApiException(status=404, reason="Not Found")) == "gone"


@pytest.mark.parametrize("exc", [QUOTA, forbidden("RBAC: access denied", [])])
def test_any_other_403_on_create_is_an_error_not_a_gone_namespace(exc: ApiException) -> None:
    """A quota, RBAC or a policy webhook: retried with backoff and logged as an error, as
    kube-controller-manager's controllers tell NamespaceTerminating from the rest."""
    with pytest.raises(ApiException):
        create_answered(exc)


def test_forgotten_sources_take_their_uid_along() -> None:
    class Api:
        def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
            return source(path.rsplit("/", 1)[1])

    reader = SourceReader(Api())  # type: ignore[arg-type]
    for i in range(100):
        reader.read(SourceRef(REL, f"reg-{i}"), (1, 1))
    assert reader.keep_only({SourceRef(REL, "reg-7")}) == {SourceRef(REL, "reg-7")}
    assert reader.uid(SourceRef(REL, "reg-7")) == "uid-reg-7"
    assert reader.uid(SourceRef(REL, "reg-0")) is None
