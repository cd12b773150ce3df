"""Talking to the API server: the client, a raw JSON transport, and how errors are told.

- :func:`load_api_client`: an API client from a kubeconfig or the pod's service account.
- :class:`RawApi`: JSON requests through the official client's transport (auth, TLS,
  proxies) without its models: a Secret's data is never copied into model objects, and
  times keep the exact format the API server requires (the Lease's MicroTime).
- :func:`describe`: an error for a log line: status and reason, never a response body.
- :class:`StoppedError`: a request abandoned because its owner is stopping.
- :func:`cut`: unblock a thread reading a response (stop() of a watch).
- Resource paths, so that no caller spells ``/api/v1/...`` itself, and
  :func:`event_object`, the core/v1 Event every controller of ours posts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float]

# Connecting to the API server takes milliseconds; ten seconds covers a busy control plane.
CONNECT_TIMEOUT = 10.0
GONE = 410
NOT_FOUND = 404
CONFLICT = 409


class StoppedError(Exception):
    """The owner of a request is stopping: abandon the work in progress."""


def describe(exc: BaseException) -> str:
    """An error for a log line: status and reason of an API error, never a response body."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def api_status(exc: ApiException) -> dict[str, Any]:
    """The Status an API error's body holds ({} when it holds none): its message, reason,
    details.causes."""
    try:
        body = orjson.loads(exc.body or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def secrets_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/secrets"
    return base if name is None else f"{base}/{name}"


def namespace_path(name: str) -> str:
    return f"/api/v1/namespaces/{name}"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def pod_path(namespace: str, name: str, subresource: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/pods/{name}"
    return base if subresource is None else f"{base}/{subresource}"


_MAX_EVENT_MESSAGE = 1024  # the API server's limit on an Event's message


def event_object(
    involved: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    event_type: str,
    action: str,
    identity: str,
    now: float,
) -> dict[str, Any]:
    """A core/v1 Event on `involved` (kind, apiVersion, namespace, name and maybe uid),
    reported by this replica (`identity`), with an unique name."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved['name']}.{int(now * 1e9):x}",
            "namespace": involved["namespace"],
        },
        "involvedObject": dict(involved),
        "reason": reason,
        "message": message[:_MAX_EVENT_MESSAGE],
        "type": event_type,
        "source": {"component": "pullsecret-injector"},
        "reportingComponent": "pullsecret-injector",
        "reportingInstance": identity[:128],
        "action": action,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": None,
        "count": 1,
    }


def leases_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return base if name is None else f"{base}/{name}"


def load_api_client(kubeconfig: Path | None, context: str | None) -> k8s_client.ApiClient:
    """An API client from a kubeconfig or the pod's service account.

    Order: ``kubeconfig`` when given; else ``KUBECONFIG`` (read now, may list several files
    separated by ``:``); else ``~/.kube/config`` when it exists; else the in-cluster config
    (service account token, refreshed as the kubelet rotates it). ``context`` picks a
    kubeconfig context; it is an error without a kubeconfig. Raises ConfigException.
    """
    configuration = k8s_client.Configuration()
    config_file: str | None = None
    if kubeconfig is not None:
        config_file = str(kubeconfig)
    elif os.environ.get("KUBECONFIG"):
        config_file = os.environ["KUBECONFIG"]
    elif (default := Path("~/.kube/config").expanduser()).is_file():
        config_file = str(default)
    if config_file is not None:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file,
            context=context,
            client_configuration=configuration,
            persist_config=False,  # never write refreshed tokens back into a user's file
        )
        log.info("cluster access from kubeconfig", extra={"kubeconfig": config_file})
    else:
        if context:
            raise ConfigException(
                f"--context {context!r} needs a kubeconfig: none given, KUBECONFIG unset "
                "and ~/.kube/config missing"
            )
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        log.info("cluster access from the in-cluster service account")
    # TCP keepalive as client-go asks for it: a peer that vanished (node, NAT or load
    # balancer gone) is detected in about a minute, not at the watch's read timeout.
    configuration.keep_alive = True
    return k8s_client.ApiClient(configuration)


class RawApi:
    """JSON requests to the API server through the official client (auth, TLS, proxies).

    Bodies are sent as given and answers returned as parsed JSON: no model round trip, so
    a Secret's data is never copied into model objects and times keep their exact format.
    Non-2xx answers raise ``ApiException`` (status, reason and the Status body).
    """

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Timeout = (5.0, 10.0),
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        status, reason, data = self._call(
            method, path, query=query, headers=headers, body=body, timeout=timeout
        )
        if not 200 <= status <= 299:
            raise ApiException(
                status=status,
                reason=reason,
                body=data.decode("utf-8", "replace") if data else None,
            )
        if not data:
            return {}
        parsed = orjson.loads(data)
        return parsed if isinstance(parsed, dict) else {}

    def get_text(self, path: str, *, timeout: Timeout = (5.0, 30.0)) -> tuple[int, str]:
        """(HTTP status, body text) of a GET of any content type (a service proxy's
        /metrics is not JSON); no exception for a non-2xx status."""
        headers = {"Accept": "*/*"}
        status, _, data = self._call(
            "GET", path, query=None, headers=headers, body=None, timeout=timeout
        )
        return status, data.decode("utf-8", "replace")

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None,
        headers: dict[str, str],
        body: Any,
        timeout: Timeout,
    ) -> tuple[int, str, bytes]:
        """(status, reason, body bytes) of one request; the connection goes back to the pool."""
        params = list(query.items()) if isinstance(query, Mapping) else list(query or ())
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        http_method, url, header_params, payload, _ = serialized
        response = self._client.call_api(
            http_method, url, header_params=header_params, body=payload, _request_timeout=timeout
        )
        try:
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        finally:
            release = getattr(response.response, "release_conn", None)
            if callable(release):
                release()
        return int(response.status), str(response.reason or ""), data


def cut(response: Any) -> None:
    """Unblock a thread reading `response` (works for TLS sockets too)."""
    try:
        if callable(getattr(response, "shutdown", None)):
            response.shutdown()  # urllib3 >= 2.3
            return
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, RuntimeError):
        pass
