"""Reading sources and writing copies: the API calls of replication, in one place.

Shared by the controller loop (rate limited, stoppable) and the admission path (bounded
by its deadline): each caller passes a :data:`Request` that carries its own limits, and
the rules of a write are the same for both. A source's data is read from the API when
copies are written, used for the writes and dropped; only its sha256 is kept (to detect
rotation against the copies' hash annotation), and the uid (for Events on the source).
No log line carries data or hashes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from webhook.cluster.apiclient import (
    CONFLICT,
    NOT_FOUND,
    RawApi,
    Timeout,
    api_status,
    secrets_path,
)
from webhook.cluster.store import Store
from webhook.core.model import secret_from_object
from webhook.core.planner import (
    Config,
    SourceRef,
    copy_object,
    copy_update_patch,
    data_hash,
    is_our_object,
)
from webhook.kubelet.dockerconfig import REGISTRY_SECRET_TYPES
from webhook.metrics import Metrics
from webhook.replication.expectations import Clashes, Expectations

log = logging.getLogger(__name__)

_FORBIDDEN = 403
_INVALID = 422
_NAMESPACE_TERMINATING = "NamespaceTerminating"  # v1.NamespaceTerminatingCause


class Request(Protocol):
    """One JSON request with the caller's limits (rate, stop, timeout) applied."""

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]: ...


def namespace_terminating(exc: ApiException) -> bool:
    """apierrors.HasStatusCause(err, v1.NamespaceTerminatingCause): the 403 the namespace
    lifecycle admission gives a create in a namespace being deleted (a cause's type is
    serialised as ``reason``), as kube-controller-manager's controllers tell it apart."""
    if exc.status != _FORBIDDEN:
        return False
    details = api_status(exc).get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return isinstance(causes, list) and any(
        isinstance(c, dict) and c.get("reason") == _NAMESPACE_TERMINATING for c in causes
    )


class RetryError(Exception):
    """The write failed in a way worth retrying later (the namespace is planned again)."""


class SourceReader:
    """Reads sources with their data; keeps only each one's data hash and uid."""

    def __init__(self, api: RawApi) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._hashes: dict[SourceRef, str] = {}  # never the data: its sha256
        self._uids: dict[SourceRef, str] = {}

    def read(self, ref: SourceRef, timeout: Timeout) -> dict[str, Any] | None:
        """The source as stored (with its data), or None when it is gone or not a registry."""
        try:
            obj = self._api.request("GET", secrets_path(ref.namespace, ref.name), timeout=timeout)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        if obj.get("type") not in REGISTRY_SECRET_TYPES:
            return None
        uid = (obj.get("metadata") or {}).get("uid")
        with self._lock:
            self._hashes[ref] = data_hash(str(obj.get("type")), obj.get("data"))
            if isinstance(uid, str):
                self._uids[ref] = uid
        return obj

    def hashes(self) -> dict[SourceRef, str]:
        with self._lock:
            return dict(self._hashes)

    def keep_only(self, refs: set[SourceRef]) -> set[SourceRef]:
        """Forget sources that are gone (hash and uid); the refs whose hash is known."""
        with self._lock:
            for ref in [r for r in self._hashes if r not in refs]:
                del self._hashes[ref]
            for ref in [r for r in self._uids if r not in refs]:
                del self._uids[ref]
            return set(self._hashes)

    def uid(self, ref: SourceRef) -> str | None:
        with self._lock:
            return self._uids.get(ref)


class CopyWriter:
    """Creates, updates and deletes copies; never touches a secret we did not create."""

    def __init__(self, config: Config, expectations: Expectations, clashes: Clashes) -> None:
        self._config = config
        self._expectations = expectations
        self._clashes = clashes

    def _expect(self, ns: str, name: str, obj: Mapping[str, Any] | None) -> None:
        self._expectations.expect(ns, name, secret_from_object(obj) if obj is not None else None)

    def create(
        self, request: Request, ns: str, name: str, source: Mapping[str, Any], ref: SourceRef
    ) -> str:
        """Create the copy: ok, gone (namespace terminating or deleted), exists or clash."""
        body = copy_object(source, ns)
        self._expect(ns, name, body)
        try:
            request("POST", secrets_path(ns), body=body)
        except BaseException as exc:
            self._expectations.observed(ns, name)
            if not isinstance(exc, ApiException):
                raise
            if exc.status == NOT_FOUND or namespace_terminating(exc):
                log.info(
                    "namespace gone or terminating", extra={"namespace": ns, "status": exc.status}
                )
                return "gone"  # any other 403 (a quota, RBAC, a policy webhook) is an error
            if exc.status != CONFLICT:
                raise
            return self.after_conflict(request, ns, name, ref)
        finally:
            del body
        return "ok"

    def after_conflict(self, request: Request, ns: str, name: str, ref: SourceRef) -> str:
        """A secret of the copy's name exists: ours (made by another replica) or a clash."""
        try:
            current = request("GET", secrets_path(ns, name))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                raise RetryError("deleted right after a conflict") from exc
            raise
        if is_our_object(current) is not None:
            return "exists"
        self._clashes.add(ns, name)
        log.warning(
            "copy not created: a secret of the same name that pullsecret-injector did not "
            "create exists (left untouched)",
            extra={"namespace": ns, "secret": name, "source": str(ref)},
        )
        return "clash"

    def update(
        self,
        request: Request,
        ns: str,
        name: str,
        source: Mapping[str, Any],
        current_source: SourceRef,
    ) -> str:
        self._expect(ns, name, copy_object(source, ns))
        try:
            request(
                "PATCH",
                secrets_path(ns, name),
                body=copy_update_patch(source, current_source),
                content_type="application/json-patch+json",
            )
        except ApiException as exc:
            self._expectations.observed(ns, name)
            if exc.status in (NOT_FOUND, CONFLICT, _INVALID):  # gone, or not ours: re-plan
                raise RetryError(f"HTTP {exc.status} on update") from exc
            raise
        except BaseException:
            self._expectations.observed(ns, name)
            raise
        return "ok"

    def delete(self, request: Request, ns: str, name: str) -> str:
        """Delete our copy: read it, check it is ours, delete with uid/rv preconditions."""
        try:
            current = request("GET", secrets_path(ns, name))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return "gone"
            raise
        ref = is_our_object(current)
        if ref is None or ref.namespace not in self._config.source_namespaces:
            raise RetryError("no longer our copy")
        meta = current.get("metadata") or {}
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        self._expect(ns, name, None)
        try:
            request("DELETE", secrets_path(ns, name), body=options)
        except BaseException as exc:
            self._expectations.observed(ns, name)
            if not isinstance(exc, ApiException):
                raise
            if exc.status == NOT_FOUND:
                return "gone"
            if exc.status == CONFLICT:
                raise RetryError("changed before the delete") from exc
            raise
        return "ok"


@dataclass(frozen=True)
class Parts:
    """What the controller's passes and the admission path share (built by Replicator)."""

    api: RawApi
    store: Store
    metrics: Metrics
    config: Config
    reader: SourceReader
    writer: CopyWriter
    expectations: Expectations
    clashes: Clashes


def bounded(api: RawApi, timeout: Callable[[], Timeout]) -> Request:
    """A Request straight to the API, each call bounded by `timeout()` (the admission path)."""

    def request(
        method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        return api.request(method, path, body=body, content_type=content_type, timeout=timeout())

    return request
