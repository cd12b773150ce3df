"""A local Kubernetes API server for Secrets and Namespaces that speaks the real wire protocol.

There is no cluster on the test machines, so this stands in for kube-apiserver (with its
watch cache and etcd) for the two collections the webhook reads. It answers as the real one
does, shape for shape (tests/fixtures/apiserver/ holds responses captured from a real
v1.28 API server; test_kube_wire.py holds this server to them):

- ``GET /api/v1/secrets``, ``/api/v1/namespaces/{ns}/secrets``, ``/api/v1/namespaces``:
  List objects (``SecretList``/``NamespaceList``, items without kind/apiVersion) with
  ``metadata.resourceVersion``; ``limit`` and ``continue`` (base64url JSON tokens
  ``{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\\u0000"}`` serving a consistent snapshot
  at N); ``fieldSelector`` (``type``, ``metadata.name``, ``metadata.namespace``;
  ``status.phase`` for namespaces) and ``labelSelector``; an expired continue token gives
  HTTP 410 with a ``Status`` carrying a fresh token.
- the same with ``watch=1``: HTTP/1.1 chunked, one JSON WatchEvent per line: ADDED,
  MODIFIED, DELETED (an object leaving a selector is DELETED with its previous state and
  the event's resourceVersion, as the watch cache does), BOOKMARK (``allowWatchBookmarks``;
  object with only kind, apiVersion and metadata.resourceVersion) and ERROR (a ``Status``
  with code 410 ``Expired`` for a resourceVersion older than the compaction point);
  ``timeoutSeconds`` ends the stream cleanly (after a last bookmark).
- ``GET /api/v1/namespaces/{ns}/secrets/{name}`` and ``/api/v1/namespaces/{name}``;
  ``Status`` 404 ``NotFound`` otherwise, 401 without the bearer token.
- JSON is compact with a trailing newline, pretty (2 spaces) for ``curl`` or
  ``pretty=true``; maps keep Go's sorted key order; ``<``, ``>``, ``&`` are escaped.

Tests drive the cluster through ``Cluster`` methods (create/update/delete, compaction) and
misbehave on purpose through ``ApiServer`` (end, expire, freeze or drop watch connections,
stop listening and come back on the same port, slow lists down).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import email.utils
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from webhook.kubelet.labels import SelectorError, parse_selector

SECRETS = "secrets"
NAMESPACES = "namespaces"
PODS = "pods"  # served by kube_apiserver_pods.py (the stuck-pod recovery tests)
KINDS = {SECRETS: "Secret", NAMESPACES: "Namespace", PODS: "Pod"}
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
DEFAULT_WATCH_TIMEOUT = 1800  # kube-apiserver's --min-request-timeout


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _sorted_map(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """Go encodes maps with sorted keys."""
    return {k: value[k] for k in sorted(value)} if value else {}


def docker_config_data(
    auths: Mapping[str, Mapping[str, Any]], secret_type: str = DOCKERCONFIGJSON
) -> dict[str, str]:
    """The base64 `data` of a registry secret holding `auths` (host -> {"auth": ...})."""
    if secret_type == DOCKERCFG:
        return {".dockercfg": _b64(json.dumps(dict(auths), separators=(",", ":")))}
    return {".dockerconfigjson": _b64(json.dumps({"auths": dict(auths)}, separators=(",", ":")))}


def _managed_field(manager: str, fields: dict[str, Any], stamp: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": stamp,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }


class ApiError(Exception):
    """An API error answered with a Status object."""

    def __init__(self, code: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.extra = code, reason, message, extra

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.extra.get("metadata", {}),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if "details" in self.extra:
            out["details"] = self.extra["details"]
        out["code"] = self.code
        return out


# ---- selectors -------------------------------------------------------------------------
_FIELDS = {
    SECRETS: {
        "type": lambda o: o.get("type", ""),
        "metadata.name": lambda o: o["metadata"]["name"],
        "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    },
    NAMESPACES: {
        "metadata.name": lambda o: o["metadata"]["name"],
        "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    },
    PODS: {
        "metadata.name": lambda o: o["metadata"]["name"],
        "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
        "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
        "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    },
}


@dataclass(frozen=True)
class Filter:
    """fieldSelector + labelSelector + namespace of one request (the watch cache's filter)."""

    resource: str
    namespace: str | None = None
    fields: tuple[tuple[str, str, str], ...] = ()  # (field, op, value), op "=" or "!="
    label_selector: str = ""

    @classmethod
    def parse(
        cls, resource: str, namespace: str | None, field_selector: str, label_selector: str
    ) -> Filter:
        terms: list[tuple[str, str, str]] = []
        for term in filter(None, (t.strip() for t in field_selector.split(","))):
            for op in ("!=", "==", "="):
                if op in term:
                    key, value = term.split(op, 1)
                    terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                    break
            else:
                raise ApiError(400, "BadRequest", f"invalid selector: '{field_selector}'")
            if terms[-1][0] not in _FIELDS[resource]:
                raise ApiError(400, "BadRequest", f"field label not supported: {terms[-1][0]}")
        try:
            parse_selector(label_selector)
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc
        return cls(resource, namespace, tuple(terms), label_selector)

    @property
    def empty(self) -> bool:
        return not self.fields and not self.label_selector

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        getters = _FIELDS[self.resource]
        for key, op, value in self.fields:
            if (getters[key](obj) == value) != (op == "="):
                return False
        return not self.label_selector or parse_selector(self.label_selector).matches(
            meta.get("labels") or {}
        )


# ---- the stored state ------------------------------------------------------------------
@dataclass
class Event:
    rv: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # the object after the change (before it, with the event's RV, if DELETED)
    prev: dict[str, Any] | None


@dataclass
class WatchSession:
    """One open watch connection, as the server's tests can steer it."""

    resource: str
    filter: Filter
    resource_version: str
    command: str | None = None  # end | expire | freeze
    bookmarks_sent: int = 0
    sock: Any = None


class Cluster:
    """etcd and the watch cache: objects with MVCC history, a revision, an event log."""

    def __init__(self, revision: int = 500) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.revision = revision
        self.compacted = 0  # resourceVersions below this are gone (410)
        self._versions: dict[str, dict[str, list[tuple[int, dict[str, Any] | None]]]] = {
            SECRETS: {},
            NAMESPACES: {},
        }
        self._keys: dict[str, list[str]] = {SECRETS: [], NAMESPACES: []}
        self._keys_dirty = {SECRETS: False, NAMESPACES: False}
        self.events: list[Event] = []
        self._event_rvs: list[int] = []
        self.held: Callable[[Filter], bool] | None = None  # watches it selects deliver nothing
        self.bookmark_requests = 0
        self.bookmark_interval: float | None = None  # periodic bookmarks (seconds)

    # ---- reads ----
    def current(self, resource: str, key: str) -> dict[str, Any] | None:
        with self.cond:
            versions = self._versions[resource].get(key)
            return versions[-1][1] if versions else None

    def objects(self, resource: str) -> list[dict[str, Any]]:
        with self.cond:
            out = []
            for key in self._sorted_keys(resource):
                obj = self._versions[resource][key][-1][1]
                if obj is not None:
                    out.append(obj)
            return out

    def _sorted_keys(self, resource: str) -> list[str]:
        if self._keys_dirty[resource]:
            self._keys[resource].sort()
            self._keys_dirty[resource] = False
        return self._keys[resource]

    def _at(self, resource: str, key: str, rv: int) -> dict[str, Any] | None:
        for version_rv, obj in reversed(self._versions[resource][key]):
            if version_rv <= rv:
                return obj
        return None

    def list_page(
        self, flt: Filter, limit: int | None, token: str | None
    ) -> tuple[int, list[dict[str, Any]], str | None, int | None]:
        """(snapshot rv, items, continue token, remainingItemCount) of one list request."""
        prefix = f"{flt.namespace}/" if flt.resource == SECRETS and flt.namespace else ""
        with self.cond:
            start = ""
            snapshot = self.revision
            if token:
                try:
                    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                    snapshot, start = int(decoded["rv"]), str(decoded["start"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ApiError(400, "BadRequest", "continue key is not valid") from exc
                if snapshot < self.compacted:
                    fresh = _continue_token(-1, start)
                    raise ApiError(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter, "
                        "or use the continue token in this response to retrieve the remainder "
                        "of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in "
                        "the list.",
                        metadata={"continue": fresh},
                    )
            keys = self._sorted_keys(flt.resource)
            i = bisect.bisect_left(keys, prefix + start)
            items: list[dict[str, Any]] = []
            last_key: str | None = None
            while i < len(keys) and (limit is None or len(items) < limit):
                key = keys[i]
                i += 1
                if not key.startswith(prefix):
                    break
                obj = self._at(flt.resource, key, snapshot)
                if obj is None:
                    continue
                last_key = key
                if flt.matches(obj):
                    items.append(obj)
            remaining = [
                k
                for k in keys[i:]
                if k.startswith(prefix) and self._at(flt.resource, k, snapshot) is not None
            ]
            if limit is None or not remaining or last_key is None:
                return snapshot, items, None, None
            next_token = _continue_token(snapshot, last_key[len(prefix) :] + "\x00")
            return snapshot, items, next_token, (len(remaining) if flt.empty else None)

    # ---- writes ----
    def _write(
        self, resource: str, key: str, obj: dict[str, Any] | None, kind: str, rv: int | None = None
    ) -> dict[str, Any]:
        with self.cond:
            self.revision = max(self.revision + 1, rv or 0)
            rv = self.revision
            versions = self._versions[resource].setdefault(key, [])
            if not versions:
                self._keys[resource].append(key)
                self._keys_dirty[resource] = True
            prev = versions[-1][1] if versions else None
            if obj is not None:
                obj["metadata"]["resourceVersion"] = str(rv)
                event_obj = obj
            else:
                assert prev is not None
                event_obj = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(rv)}}
            versions.append((rv, obj))
            self.events.append(Event(rv, resource, kind, event_obj, prev))
            self._event_rvs.append(rv)
            self.cond.notify_all()
            return event_obj

    def put(self, resource: str, obj: dict[str, Any], kind: str = "ADDED") -> dict[str, Any]:
        """Store an object as given (a captured one): its resourceVersion becomes the revision."""
        obj = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        key = _key(resource, obj)
        if kind == "DELETED":
            with self.cond:
                self.revision = int(obj["metadata"]["resourceVersion"]) - 1
                return self._write(resource, key, None, "DELETED")
        rv = int(obj["metadata"]["resourceVersion"])
        with self.cond:
            self.revision = rv - 1
            return self._write(resource, key, obj, kind)

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        stamp = _now()
        all_labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
        label_fields: dict[str, Any] = {".": {}, **{f"f:{k}": {} for k in sorted(all_labels)}}
        obj = {
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "",
                "creationTimestamp": stamp,
                "labels": _sorted_map(all_labels),
                "managedFields": [
                    _managed_field(
                        "kubectl-create", {"f:metadata": {"f:labels": label_fields}}, stamp
                    )
                ],
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        with self.cond:
            if self.current(NAMESPACES, name) is not None:
                raise ApiError(409, "AlreadyExists", f'namespaces "{name}" already exists')
            return self._write(NAMESPACES, name, obj, "ADDED")

    def label_namespace(self, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        """Set (or, with None, remove) labels of a namespace."""
        with self.cond:
            current = self._must(NAMESPACES, name)
            merged = {**current["metadata"].get("labels", {}), **labels}
            new_labels = {k: v for k, v in merged.items() if v is not None}
            obj = {
                **current,
                "metadata": {**current["metadata"], "labels": _sorted_map(new_labels)},
            }
            return self._write(NAMESPACES, name, obj, "MODIFIED")

    def delete_namespace(self, name: str) -> None:
        """As the namespace controller: Terminating, its secrets deleted, then the namespace."""
        with self.cond:
            current = self._must(NAMESPACES, name)
            stamp = _now()
            terminating = {
                **current,
                "metadata": {
                    **{k: v for k, v in current["metadata"].items() if k != "managedFields"},
                    "deletionTimestamp": stamp,
                    "managedFields": current["metadata"].get("managedFields", []),
                },
                "status": {"phase": "Terminating"},
            }
            self._write(NAMESPACES, name, _reorder_meta(terminating), "MODIFIED")
            for secret in self.objects(SECRETS):
                if secret["metadata"]["namespace"] == name:
                    self.delete_secret(name, secret["metadata"]["name"])
            self._write(NAMESPACES, name, None, "DELETED")

    def create_secret(
        self,
        namespace: str,
        name: str,
        *,
        secret_type: str = DOCKERCONFIGJSON,
        auths: Mapping[str, Mapping[str, Any]] | None = None,
        data: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        applied: bool = True,
    ) -> dict[str, Any]:
        """A Secret as `kubectl apply` stores it (last-applied-configuration annotation)."""
        obj = self._secret_object(
            namespace, name, secret_type, auths, data, labels, annotations, applied
        )
        with self.cond:
            if self.current(SECRETS, f"{namespace}/{name}") is not None:
                raise ApiError(409, "AlreadyExists", f'secrets "{name}" already exists')
            return self._write(SECRETS, f"{namespace}/{name}", obj, "ADDED")

    def create_secrets(self, objects: Iterable[dict[str, Any]]) -> None:
        """Bulk load of objects from `secret_object` (no existence checks)."""
        with self.cond:
            for obj in objects:
                meta = obj["metadata"]
                self._write(SECRETS, f"{meta['namespace']}/{meta['name']}", obj, "ADDED")

    def secret_object(self, namespace: str, name: str, **kw: Any) -> dict[str, Any]:
        return self._secret_object(
            namespace,
            name,
            kw.get("secret_type", DOCKERCONFIGJSON),
            kw.get("auths"),
            kw.get("data"),
            kw.get("labels"),
            kw.get("annotations"),
            kw.get("applied", True),
        )

    @staticmethod
    def _secret_object(
        namespace: str,
        name: str,
        secret_type: str,
        auths: Mapping[str, Mapping[str, Any]] | None,
        data: Mapping[str, str] | None,
        labels: Mapping[str, str] | None,
        annotations: Mapping[str, str] | None,
        applied: bool,
    ) -> dict[str, Any]:
        if data is None:
            data = docker_config_data(auths or {}, secret_type) if auths is not None else {}
        stamp = _now()
        all_annotations = dict(annotations or {})
        if applied:
            last_applied = {
                "apiVersion": "v1",
                "data": _sorted_map(data),
                "kind": "Secret",
                "metadata": {
                    "annotations": _sorted_map(annotations),
                    **({"labels": _sorted_map(labels)} if labels else {}),
                    "name": name,
                    "namespace": namespace,
                },
                "type": secret_type,
            }
            all_annotations[LAST_APPLIED] = json.dumps(last_applied, separators=(",", ":")) + "\n"
        fields: dict[str, Any] = {}
        if data:
            fields["f:data"] = {".": {}, **{f"f:{k}": {} for k in sorted(data)}}
        meta_fields: dict[str, Any] = {}
        if all_annotations:
            meta_fields["f:annotations"] = {
                ".": {},
                **{f"f:{k}": {} for k in sorted(all_annotations)},
            }
        if labels:
            meta_fields["f:labels"] = {".": {}, **{f"f:{k}": {} for k in sorted(labels)}}
        if meta_fields:
            fields["f:metadata"] = meta_fields
        fields["f:type"] = {}
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "",
            "creationTimestamp": stamp,
        }
        if labels:
            meta["labels"] = _sorted_map(labels)
        if all_annotations:
            meta["annotations"] = _sorted_map(all_annotations)
        manager = "kubectl-client-side-apply" if applied else "kubectl-create"
        meta["managedFields"] = [_managed_field(manager, fields, stamp)]
        obj: dict[str, Any] = {"metadata": meta}
        if data:
            obj["data"] = _sorted_map(data)
        obj["type"] = secret_type
        return obj

    def update_secret(
        self,
        namespace: str,
        name: str,
        *,
        auths: Mapping[str, Mapping[str, Any]] | None = None,
        data: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        secret_type: str | None = None,
    ) -> dict[str, Any]:
        """`kubectl apply` of new data (from `auths`, or raw `data`) and/or labels.

        The type of a Secret is immutable (422), as in the real API server.
        """
        with self.cond:
            current = self._must(SECRETS, f"{namespace}/{name}")
            if secret_type is not None and secret_type != current["type"]:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: type: Invalid value: "{secret_type}": '
                    "field is immutable",
                )
            meta = current["metadata"]
            if auths is not None:
                data = docker_config_data(auths, current["type"])
            annotations = dict(meta.get("annotations") or {})
            applied = annotations.pop(LAST_APPLIED, None) is not None
            obj = self._secret_object(
                namespace,
                name,
                current["type"],
                None,
                current.get("data", {}) if data is None else data,
                meta.get("labels") if labels is None else labels,
                annotations,
                applied,
            )
            obj["metadata"]["uid"] = meta["uid"]
            obj["metadata"]["creationTimestamp"] = meta["creationTimestamp"]
            return self._write(SECRETS, f"{namespace}/{name}", obj, "MODIFIED")

    def delete_secret(self, namespace: str, name: str) -> None:
        with self.cond:
            self._must(SECRETS, f"{namespace}/{name}")
            self._write(SECRETS, f"{namespace}/{name}", None, "DELETED")

    def replace_secret_type(self, namespace: str, name: str, secret_type: str, **kw: Any) -> None:
        """`kubectl replace --force`: the only way to change a Secret's type (delete, create)."""
        self.delete_secret(namespace, name)
        self.create_secret(namespace, name, secret_type=secret_type, **kw)

    def _must(self, resource: str, key: str) -> dict[str, Any]:
        obj = self.current(resource, key)
        if obj is None:
            name = key.rsplit("/", 1)[-1]
            raise ApiError(
                404,
                "NotFound",
                f'{resource} "{name}" not found',
                details={"name": name, "kind": resource},
            )
        return obj

    # ---- etcd compaction / watch cache window ----
    def compact(self) -> int:
        """Forget history up to now: older resourceVersions and continue tokens get 410."""
        with self.cond:
            self.compacted = self.revision
            keep = bisect.bisect_right(self._event_rvs, self.compacted)
            del self.events[:keep]
            del self._event_rvs[:keep]
            for resource, by_key in self._versions.items():
                for key in list(by_key):
                    versions = by_key[key]
                    newer = [v for v in versions if v[0] > self.compacted]
                    older = [v for v in versions if v[0] <= self.compacted][-1:]
                    kept = [v for v in older if v[1] is not None] + newer
                    if kept:
                        by_key[key] = kept
                    else:
                        del by_key[key]
                        self._keys[resource].remove(key)
            self.cond.notify_all()
            return self.compacted

    def events_after(self, rv: int) -> list[Event]:
        with self.cond:
            return self.events[bisect.bisect_right(self._event_rvs, rv) :]


def _continue_token(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _key(resource: str, obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if resource == SECRETS else meta["name"]


_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def _reorder_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """ObjectMeta fields in Go struct order."""
    meta = obj["metadata"]
    ordered = {k: meta[k] for k in _META_ORDER if k in meta}
    return {**obj, "metadata": ordered}


def convert_event(flt: Filter, event: Event) -> dict[str, Any] | None:
    """The watch cache's cacheWatcher.convertToWatchEvent: what one watcher sees of an event."""
    if event.resource != flt.resource:
        return None
    cur_passes = event.type != "DELETED" and flt.matches(event.obj)
    old_passes = event.prev is not None and flt.matches(event.prev)
    kind = KINDS[flt.resource]
    if cur_passes and not old_passes:
        return {"type": "ADDED", "object": _typed(kind, event.obj)}
    if cur_passes and old_passes:
        return {"type": "MODIFIED", "object": _typed(kind, event.obj)}
    if old_passes:
        assert event.prev is not None
        prev = event.prev
        obj = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(event.rv)}}
        return {"type": "DELETED", "object": _typed(kind, obj)}
    return None


def _typed(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "v1", **obj}


def bookmark(resource: str, rv: int) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": KINDS[resource],
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(rv), "creationTimestamp": None},
    }
    if resource == NAMESPACES:
        obj["spec"] = {}
        obj["status"] = {}
    return {"type": "BOOKMARK", "object": obj}


def encode(doc: Any, pretty: bool = False) -> bytes:
    """Go's encoding/json as the API server uses it (HTML characters escaped)."""
    if pretty:
        out = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    else:
        out = orjson.dumps(doc) + b"\n"
    return out.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


# ---- HTTP ------------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError):
                self.request.close()
                raise
        super().setup()
        self.server.api.track(self.request, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.api.track(self.request, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self.server.api.handle(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    # -- response helpers --
    def _headers(self, status: int, extra: Iterable[tuple[str, str]]) -> None:
        self.send_response_only(status)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", self.server.api.flowschema_uid)
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", self.server.api.prioritylevel_uid)
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()

    def send_json(self, status: int, body: bytes) -> None:
        self._headers(status, [("Content-Length", str(len(body)))])
        self.wfile.write(body)
        self.wfile.flush()

    def start_chunked(self) -> None:
        self._headers(200, [("Transfer-Encoding", "chunked")])
        self.wfile.flush()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut on purpose (stop, drop, client gone) are not errors worth a trace."""


class ApiServer:
    """The HTTP(S) front of a Cluster, on 127.0.0.1, in a thread; steerable by tests."""

    def __init__(
        self,
        cluster: Cluster | None = None,
        *,
        token: str = "test-token",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.cluster = cluster or Cluster()
        self.token = token
        self.ssl_context = ssl_context
        self.port = 0
        self.requests: list[Request] = []
        self.list_delay = 0.0  # seconds between reading a list page and sending it
        self.before_list: Callable[[Request], None] | None = None  # test hook per list page
        self.refuse_watches = False  # answer watches with HTTP 500 (a broken aggregator)
        self.flowschema_uid = str(uuid.uuid4())
        self.prioritylevel_uid = str(uuid.uuid4())
        self.sessions: list[WatchSession] = []
        self._conns: set[Any] = set()
        self._lock = threading.Lock()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # ---- lifecycle ----
    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        """Listen (again, on the same port after stop())."""
        self._stopped.clear()
        httpd = _HttpServer(("127.0.0.1", self.port), _Handler)
        if self.ssl_context is not None:
            httpd.socket = self.ssl_context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        httpd.api = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection: the server is unreachable."""
        self._stopped.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self.drop_connections()
        with self.cluster.cond:
            self.cluster.cond.notify_all()

    def track(self, sock: Any, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    # ---- misbehaviour ----
    def drop_connections(self) -> None:
        """Cut every open connection without an HTTP ending (a crashed server, a dead LB)."""
        self._command("drop")
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _command(self, command: str) -> int:
        with self.cluster.cond:
            sessions = [s for s in self.sessions if s.command is None]
            for s in sessions:
                s.command = command
            self.cluster.cond.notify_all()
            return len(sessions)

    def end_watches(self) -> int:
        """End every open watch cleanly (terminating chunk), as at timeoutSeconds."""
        return self._command("end")

    def expire_watches(self) -> int:
        """Compact, then send every open watch an ERROR 410 Expired and end it."""
        self.cluster.compact()
        return self._command("expire")

    def freeze_watches(self) -> int:
        """Stop writing to every open watch and never end it: a half-open connection."""
        return self._command("freeze")

    def send_bookmarks(self) -> None:
        with self.cluster.cond:
            self.cluster.bookmark_requests += 1
            self.cluster.cond.notify_all()

    def open_watches(self, resource: str | None = None) -> int:
        with self.cluster.cond:
            return sum(
                1
                for s in self.sessions
                if s.command is None and (resource is None or s.resource == resource)
            )

    def requests_for(self, resource: str, *, watch: bool) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if r.path.endswith(f"/{resource}") and r.watch == watch
            ]

    # ---- request handling ----
    def handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        req = Request("GET", parts.path, query, {k.lower(): v for k, v in h.headers.items()})
        with self._lock:
            self.requests.append(req)
        pretty = query.get("pretty") == "true" or (
            "pretty" not in query and req.headers.get("user-agent", "").startswith(("curl", "Wget"))
        )
        try:
            scheme, _, credential = req.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or credential.strip() != self.token:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(h, req, pretty)
        except ApiError as err:
            h.send_json(err.code, encode(err.status(), pretty))

    def _route(self, h: _Handler, req: Request, pretty: bool) -> None:
        segments = [s for s in req.path.split("/") if s]
        if segments[:2] != ["api", "v1"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rest = segments[2:]
        if rest == [SECRETS]:
            self._collection(h, req, SECRETS, None, pretty)
        elif rest == [NAMESPACES]:
            self._collection(h, req, NAMESPACES, None, pretty)
        elif len(rest) == 3 and rest[0] == NAMESPACES and rest[2] == SECRETS:
            self._collection(h, req, SECRETS, rest[1], pretty)
        elif len(rest) == 4 and rest[0] == NAMESPACES and rest[2] == SECRETS:
            obj = self.cluster._must(SECRETS, f"{rest[1]}/{rest[3]}")
            h.send_json(200, encode(_typed("Secret", obj), pretty))
        elif len(rest) == 2 and rest[0] == NAMESPACES:
            obj = self.cluster._must(NAMESPACES, rest[1])
            h.send_json(200, encode(_typed("Namespace", obj), pretty))
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _collection(
        self, h: _Handler, req: Request, resource: str, namespace: str | None, pretty: bool
    ) -> None:
        flt = Filter.parse(
            resource,
            namespace,
            req.query.get("fieldSelector", ""),
            req.query.get("labelSelector", ""),
        )
        if req.watch:
            self._watch(h, req, flt)
            return
        if self.before_list is not None:
            self.before_list(req)
        limit_text = req.query.get("limit", "")
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else None
        rv, items, token, remaining = self.cluster.list_page(
            flt, limit, req.query.get("continue") or None
        )
        if self.list_delay:
            time.sleep(self.list_delay)  # the answer is as old as the delay when it lands
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        doc = {
            "kind": f"{KINDS[resource]}List",
            "apiVersion": "v1",
            "metadata": meta,
            "items": items,
        }
        h.send_json(200, encode(doc, pretty))

    def _watch(self, h: _Handler, req: Request, flt: Filter) -> None:
        cluster = self.cluster
        if self.refuse_watches:
            raise ApiError(500, "InternalError", "Internal error occurred: watch refused")
        timeout_text = req.query.get("timeoutSeconds", "")
        timeout = float(timeout_text) if timeout_text.isdigit() else DEFAULT_WATCH_TIMEOUT
        deadline = time.monotonic() + timeout
        bookmarks = req.query.get("allowWatchBookmarks") in ("1", "true")
        rv_text = req.query.get("resourceVersion", "")
        session = WatchSession(flt.resource, flt, rv_text, sock=h.request)
        h.start_chunked()
        h.close_connection = False

        def send(event: Mapping[str, Any]) -> None:
            h.chunk(encode(event))

        with cluster.cond:
            if rv_text not in ("", "0") and int(rv_text) < cluster.compacted:
                initial: list[dict[str, Any]] | None = None
            elif rv_text in ("", "0"):
                initial = [
                    {"type": "ADDED", "object": _typed(KINDS[flt.resource], o)}
                    for o in cluster.objects(flt.resource)
                    if flt.matches(o)
                ]
            else:
                initial = []
            cursor = cluster.revision if rv_text in ("", "0") else int(rv_text)
            seen_bookmarks = cluster.bookmark_requests
            self.sessions.append(session)
        try:
            if initial is None:
                send(_expired(int(rv_text), cluster.compacted))
                h.end_chunked()
                return
            for event in initial:
                send(event)
            last_bookmark = time.monotonic()
            want_bookmark = False
            while True:
                with cluster.cond:
                    while True:
                        if self._stopped.is_set():
                            return
                        if session.command is not None:
                            break
                        now = time.monotonic()
                        held = cluster.held is not None and cluster.held(flt)
                        pending = not held and (
                            cursor < cluster.compacted
                            or (cluster._event_rvs and cluster._event_rvs[-1] > cursor)
                        )
                        want_bookmark = (
                            bookmarks
                            and not held
                            and (
                                cluster.bookmark_requests != seen_bookmarks
                                or (
                                    cluster.bookmark_interval is not None
                                    and now - last_bookmark >= cluster.bookmark_interval
                                )
                            )
                        )
                        if pending or want_bookmark or now >= deadline:
                            break
                        wake = deadline - now
                        if cluster.bookmark_interval is not None and bookmarks:
                            wake = min(wake, cluster.bookmark_interval)
                        cluster.cond.wait(max(0.01, wake))
                    command = session.command
                    held = cluster.held is not None and cluster.held(flt)
                    compacted_past = not held and cursor < cluster.compacted
                    batch = [] if held else cluster.events_after(cursor)
                    seen_bookmarks = cluster.bookmark_requests
                    revision = cluster.revision
                if command == "drop":
                    return
                if command == "freeze":
                    self._stopped.wait()
                    return
                if command == "expire" or compacted_past:
                    send(_expired(cursor, cluster.compacted))
                    h.end_chunked()
                    return
                if command == "end":
                    h.end_chunked()
                    return
                for event in batch:
                    out = convert_event(flt, event)
                    if out is not None:
                        send(out)
                    cursor = event.rv
                if not held:
                    cursor = max(cursor, revision)
                if time.monotonic() >= deadline:
                    if bookmarks:
                        send(bookmark(flt.resource, cursor))
                    h.end_chunked()
                    return
                if want_bookmark:
                    send(bookmark(flt.resource, cursor))
                    session.bookmarks_sent += 1
                    last_bookmark = time.monotonic()
        finally:
            with cluster.cond:
                if session in self.sessions:
                    self.sessions.remove(session)
                if session.command is None:
                    session.command = "closed"


def _expired(rv: int, oldest: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {rv} ({oldest})",
            "reason": "Expired",
            "code": 410,
        },
    }


@contextlib.contextmanager
def held_events(cluster: Cluster, which: Callable[[Filter], bool] | None = None) -> Iterator[None]:
    """Watches (all, or those `which` selects) deliver nothing inside the block."""
    with cluster.cond:
        cluster.held = which or (lambda _flt: True)
    try:
        yield
    finally:
        with cluster.cond:
            cluster.held = None
            cluster.cond.notify_all()


def kubeconfig_text(server: ApiServer, ca_file: str | None) -> str:
    cluster: dict[str, Any] = {"server": server.url}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "tester", "user": {"token": server.token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "tester"}}],
        "current-context": "local",
    }
    return json.dumps(doc, indent=2)  # JSON is YAML


Predicate = Callable[[], Any]
