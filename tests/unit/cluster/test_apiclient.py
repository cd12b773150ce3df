"""cluster/apiclient.py: errors told without bodies, and the resource paths."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from webhook.cluster.apiclient import (
    describe,
    events_path,
    leases_path,
    namespace_path,
    secrets_path,
)


def test_an_api_error_is_told_by_status_and_reason_never_its_body() -> None:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = '{"data": {".dockerconfigjson": "c2VjcmV0"}}'
    assert describe(exc) == "HTTP 409 Conflict"


def test_other_errors_are_told_by_type_and_message() -> None:
    assert describe(TimeoutError("read timed out")) == "TimeoutError: read timed out"
    assert describe(ConnectionError()) == "ConnectionError"


def test_resource_paths() -> None:
    assert secrets_path("a") == "/api/v1/namespaces/a/secrets"
    assert secrets_path("a", "s") == "/api/v1/namespaces/a/secrets/s"
    assert namespace_path("a") == "/api/v1/namespaces/a"
    assert events_path("a") == "/api/v1/namespaces/a/events"
    assert leases_path("a", "l") == "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"
