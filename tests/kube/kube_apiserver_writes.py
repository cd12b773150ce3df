"""Writes for the local API server: Secrets, Leases and Events, as kube-apiserver answers them.

kube_apiserver.py serves reads (lists, watches) of Secrets and Namespaces. The replication
controller also writes, so this module extends it without changing it:

- ``WritableCluster`` adds the ``leases`` and ``events`` collections to the MVCC store
  (watches of Secrets and Namespaces ignore them, as the watch cache does);
- ``WritableApiServer`` answers, besides every read of the base server:

  * ``POST /api/v1/namespaces/{ns}/secrets`` (201; 409 ``AlreadyExists``; 404 when the
    namespace does not exist; 403 while it is terminating; ``dryRun=All`` stores nothing);
  * ``PUT``, ``PATCH`` (``application/json-patch+json`` with ``test`` operations,
    ``merge-patch+json``, ``strategic-merge-patch+json`` treated as a merge patch) and
    ``DELETE`` (``DeleteOptions.preconditions`` uid and resourceVersion) of one secret:
    409 ``Conflict`` on a stale resourceVersion or a failed precondition, 422 ``Invalid``
    when a JSON Patch ``test`` fails or the immutable type would change; a write that
    changes nothing is not stored (no new resourceVersion, no watch event);
  * ``GET``/``POST``/``PUT`` of ``coordination.k8s.io/v1`` Leases, whose ``acquireTime``
    and ``renewTime`` must be RFC 3339 with exactly six fractional digits (MicroTime; a
    real API server rejects anything else with 400);
  * ``POST /api/v1/namespaces/{ns}/events`` (kept in ``cluster.posted_events``).

Tests steer writes through ``WritableApiServer.write_hook`` (fail or delay one request)
and read ``WritableApiServer.writes`` (method and path of every write, in order).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch
from kube_apiserver import (
    NAMESPACES,
    SECRETS,
    ApiError,
    ApiServer,
    Cluster,
    Request,
    _Handler,
    _reorder_meta,
    _typed,
    encode,
)

LEASES = "leases"
EVENTS = "events"
COORDINATION = "coordination.k8s.io/v1"
_MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}, "metadata": meta}


class WritableCluster(Cluster):
    """The base cluster with Leases and Events, and write operations with API semantics."""

    def __init__(self, revision: int = 500) -> None:
        super().__init__(revision)
        for resource in (LEASES, EVENTS):
            self._versions[resource] = {}
            self._keys[resource] = []
            self._keys_dirty[resource] = False
        self.posted_events: list[dict[str, Any]] = []

    # ---- helpers for tests ----
    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.current(SECRETS, f"{namespace}/{name}")

    def secrets_in(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            o["metadata"]["name"]: o
            for o in self.objects(SECRETS)
            if o["metadata"]["namespace"] == namespace
        }

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.current(LEASES, f"{namespace}/{name}")

    def events_for(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [
                e
                for e in self.posted_events
                if e.get("involvedObject", {}).get("name") == name
                and (reason is None or e.get("reason") == reason)
            ]

    # ---- writes with API semantics ----
    def _namespace_ready(self, namespace: str, resource: str, name: str) -> None:
        ns = self.current(NAMESPACES, namespace)
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": NAMESPACES},
            )
        if (ns.get("status") or {}).get("phase") == "Terminating":
            raise ApiError(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                details={
                    "name": name,
                    "kind": resource,
                    "causes": [  # as v1.28.7 sends it (StatusCause.Type is "reason")
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def create_object(
        self,
        resource: str,
        namespace: str,
        body: Mapping[str, Any],
        *,
        manager: str,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        meta = dict(body.get("metadata") or {})
        name = meta.get("name")
        group = "" if resource in (SECRETS, EVENTS) else ".coordination.k8s.io"
        if not name:
            raise ApiError(
                422, "Invalid", f"{resource} in version v1 is invalid: metadata.name: Required"
            )
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        stamp = _stamp()
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            resourceVersion="",
            creationTimestamp=stamp,
        )
        meta.pop("managedFields", None)
        meta["managedFields"] = [
            {
                "manager": manager,
                "operation": "Update",
                "apiVersion": body.get("apiVersion", "v1"),
                "time": stamp,
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
        ]
        obj = _reorder_meta(
            {
                **{k: v for k, v in body.items() if k not in ("kind", "apiVersion")},
                "metadata": meta,
            }
        )
        if resource == SECRETS:
            obj.setdefault("type", "Opaque")
        with self.cond:
            self._namespace_ready(namespace, resource, name)
            key = f"{namespace}/{name}"
            if self.current(resource, key) is not None:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource}{group} "{name}" already exists',
                    details={"name": name, "kind": resource},
                )
            if dry_run:
                return obj
            if resource == EVENTS:
                self.posted_events.append(obj)
            return self._write(resource, key, obj, "ADDED")

    def _immutable(self, resource: str, current: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        name = current["metadata"]["name"]
        if resource == SECRETS and new.get("type", current.get("type")) != current.get("type"):
            raise ApiError(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: type: Invalid value: "{new.get("type")}": '
                "field is immutable",
            )
        for key in ("name", "namespace", "uid"):
            if new["metadata"].get(key) not in (None, current["metadata"].get(key)):
                if key == "uid":
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {resource} "{name}": Precondition '
                        f"failed: UID in precondition: {new['metadata'][key]}, UID in object "
                        f"meta: {current['metadata']['uid']}",
                    )
                raise ApiError(400, "BadRequest", f"metadata.{key} does not match the request")

    def _store_update(
        self, resource: str, key: str, current: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        self._immutable(resource, current, new)
        meta = {**new["metadata"]}
        for keep in ("name", "namespace", "uid", "creationTimestamp"):
            meta[keep] = current["metadata"][keep]
        meta["managedFields"] = current["metadata"].get("managedFields", [])
        obj = _reorder_meta({**new, "metadata": meta})
        if resource == SECRETS and "type" not in obj:
            obj["type"] = current.get("type", "Opaque")
        if _comparable(obj) == _comparable(current):
            return current  # nothing changed: no write, no event (as GuaranteedUpdate)
        return self._write(resource, key, obj, "MODIFIED")

    def replace_object(
        self, resource: str, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = f"{namespace}/{name}"
        with self.cond:
            current = self._must(resource, key)
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise _conflict(resource, name)
            new = copy.deepcopy({k: v for k, v in body.items() if k not in ("kind", "apiVersion")})
            return self._store_update(resource, key, current, new)

    def patch_object(
        self, resource: str, namespace: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        key = f"{namespace}/{name}"
        with self.cond:
            current = self._must(resource, key)
            doc = copy.deepcopy(current)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise ApiError(400, "BadRequest", "json patch must be a list of operations")
                try:
                    new = jsonpatch.JsonPatch(patch).apply(doc)
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise ApiError(422, "Invalid", f"the server rejected the patch: {exc}") from exc
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise ApiError(422, "Invalid", str(exc)) from exc
            elif content_type in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                new = _merge(doc, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json",
                )
            wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise _conflict(resource, name)
            return self._store_update(resource, key, current, new)

    def delete_object(
        self, resource: str, namespace: str, name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = f"{namespace}/{name}"
        with self.cond:
            current = self._must(resource, key)
            pre = options.get("preconditions") or {}
            meta = current["metadata"]
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": Precondition failed: '
                    f"UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": Precondition failed: '
                    f"ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                )
            self._write(resource, key, None, "DELETED")
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": resource, "uid": meta["uid"]},
            }


def _conflict(resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "kind": resource},
    )


def _check_lease(body: Mapping[str, Any]) -> None:
    spec = body.get("spec") or {}
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and _MICRO_TIME.match(value)):
            raise ApiError(
                400,
                "BadRequest",
                f'Lease in version "v1" cannot be handled as a Lease: parsing time {value!r} '
                'as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
            )


@dataclass
class Write:
    """One write request as the server saw it (the body is parsed JSON)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any = None
    segments: list[str] = field(default_factory=list)

    @property
    def resource(self) -> str | None:
        s = self.segments
        if s[:2] == ["api", "v1"] and len(s) >= 5 and s[2] == NAMESPACES:
            return s[4]
        if s[:3] == ["apis", "coordination.k8s.io", "v1"] and len(s) >= 6:
            return s[5]
        return None


WriteHook = Callable[[Write], None]  # raise ApiError to fail the request; may sleep


class _WriteHandler(_Handler):
    def do_GET(self) -> None:
        self._safely(lambda: self.server.api.handle(self))

    def do_POST(self) -> None:
        self._write("POST")

    def do_PUT(self) -> None:
        self._write("PUT")

    def do_PATCH(self) -> None:
        self._write("PATCH")

    def do_DELETE(self) -> None:
        self._write("DELETE")

    def _write(self, method: str) -> None:
        api = self.server.api
        assert isinstance(api, WritableApiServer)
        self._safely(lambda: api.handle_write(self, method))

    def _safely(self, call: Callable[[], None]) -> None:
        try:
            call()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


class WritableApiServer(ApiServer):
    """The base API server answering writes of Secrets, Leases and Events too."""

    cluster: WritableCluster

    def __init__(self, cluster: WritableCluster | None = None, **kw: Any) -> None:
        super().__init__(cluster or WritableCluster(), **kw)
        self.writes: list[Write] = []
        self.write_hook: WriteHook | None = None
        self._writes_lock = threading.Lock()

    def start(self) -> WritableApiServer:
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = _WriteHandler  # no request can have come in yet
        return self

    def writes_of(self, resource: str, method: str | None = None) -> list[Write]:
        with self._writes_lock:
            return [
                w
                for w in self.writes
                if w.resource == resource and (method is None or w.method == method)
            ]

    # ---- reads the base server does not know: leases ----
    def _route(self, h: Any, req: Request, pretty: bool) -> None:
        segments = [s for s in req.path.split("/") if s]
        if segments[:3] == ["apis", "coordination.k8s.io", "v1"]:
            rest = segments[3:]
            if len(rest) == 4 and rest[0] == NAMESPACES and rest[2] == LEASES:
                obj = self.cluster._must(LEASES, f"{rest[1]}/{rest[3]}")
                h.send_json(200, encode({"kind": "Lease", "apiVersion": COORDINATION, **obj}))
                return
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        super()._route(h, req, pretty)

    # ---- writes ----
    def handle_write(self, h: Any, method: str) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        length = int(headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        segments = [s for s in parts.path.split("/") if s]
        content_type = headers.get("content-type", "").split(";", 1)[0].strip()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        write = Write(method, parts.path, query, content_type, body, segments)
        try:
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or credential.strip() != self.token:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if raw and body is None:
                raise ApiError(400, "BadRequest", "the request body is not valid JSON")
            with self._writes_lock:
                self.writes.append(write)
            if self.write_hook is not None:
                self.write_hook(write)
            manager = query.get("fieldManager") or headers.get("user-agent", "").split("/")[0]
            status, doc = self._dispatch(write, manager or "unknown")
        except ApiError as err:
            h.send_json(err.code, encode(err.status()))
            return
        h.send_json(status, encode(doc))

    def _dispatch(self, w: Write, manager: str) -> tuple[int, dict[str, Any]]:
        s = w.segments
        dry_run = w.query.get("dryRun") == "All"
        if s[:2] == ["api", "v1"] and len(s) in (5, 6) and s[2] == NAMESPACES:
            namespace, resource = s[3], s[4]
            name = s[5] if len(s) == 6 else None
            kind = {SECRETS: "Secret", EVENTS: "Event"}.get(resource)
            if kind is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return self._object_write(w, resource, kind, "v1", namespace, name, manager, dry_run)
        if s[:3] == ["apis", "coordination.k8s.io", "v1"] and len(s) in (6, 7):
            if s[3] != NAMESPACES or s[5] != LEASES:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if w.body is not None and w.method in ("POST", "PUT"):
                _check_lease(w.body)
            name = s[6] if len(s) == 7 else None
            return self._object_write(
                w, LEASES, "Lease", COORDINATION, s[4], name, manager, dry_run
            )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _object_write(
        self,
        w: Write,
        resource: str,
        kind: str,
        api_version: str,
        namespace: str,
        name: str | None,
        manager: str,
        dry_run: bool,
    ) -> tuple[int, dict[str, Any]]:
        def typed(obj: Mapping[str, Any]) -> dict[str, Any]:
            return {"kind": kind, "apiVersion": api_version, **obj}

        c = self.cluster
        if w.method == "POST" and name is None:
            if not isinstance(w.body, Mapping):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            if resource == EVENTS:
                involved = (w.body.get("involvedObject") or {}).get("namespace")
                if involved not in (None, "", namespace):
                    raise ApiError(
                        422,
                        "Invalid",
                        f'Event "{w.body.get("metadata", {}).get("name")}" is invalid: '
                        f'involvedObject.namespace: Invalid value: "{involved}": does not '
                        "match event.namespace",
                    )
            obj = c.create_object(resource, namespace, w.body, manager=manager, dry_run=dry_run)
            return 201, typed(obj)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if w.method == "PUT":
            if not isinstance(w.body, Mapping):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            return 200, typed(c.replace_object(resource, namespace, name, w.body))
        if w.method == "PATCH":
            return 200, typed(c.patch_object(resource, namespace, name, w.content_type, w.body))
        if w.method == "DELETE":
            options = w.body if isinstance(w.body, Mapping) else {}
            return 200, c.delete_object(resource, namespace, name, options)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")


__all__ = [
    "EVENTS",
    "LEASES",
    "WritableApiServer",
    "WritableCluster",
    "Write",
    "_typed",
]
