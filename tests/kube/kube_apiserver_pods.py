"""Pods for the local API server: what the stuck-pod recovery controller reads and writes.

Extends kube_apiserver_writes (which it does not change) as kube-apiserver answers:

- ``GET /api/v1/pods`` and ``/api/v1/namespaces/{ns}/pods`` (list and ``watch=1``) with
  ``fieldSelector`` ``status.phase``, ``metadata.name``, ``metadata.namespace``,
  ``spec.nodeName``; a pod whose phase leaves the selector reaches a watcher as DELETED
  (the watch cache's rule, kube_apiserver.convert_event); ``GET`` of one pod;
- ``POST /api/v1/namespaces/{ns}/pods`` (create), ``DELETE`` of a pod;
- ``PUT``/``PATCH /api/v1/namespaces/{ns}/pods/{name}/status``: the kubelet's status
  writes, which is how tests put a container into ``ImagePullBackOff`` (a real control
  plane without nodes cannot);
- ``POST /api/v1/namespaces/{ns}/pods/{name}/eviction`` (policy/v1 ``Eviction``):
  201 with a ``Status`` Success and the pod deleted; 409 when
  ``deleteOptions.preconditions.uid`` names another pod; 404 when the pod is gone; 429
  ``TooManyRequests`` with the ``DisruptionBudget`` cause while a test's PDB blocks it
  (``PodCluster.pdb_blocked``), as the eviction REST handler answers. Unlike the real one
  it applies a test's block whatever the pod's phase (kube-apiserver skips budgets for
  Pending pods, ``canIgnorePDB``): the tests use it to drive the 429 path, which a real
  cluster answers when the pod's phase moved on between the plan and the eviction.

``PodCluster.on_evicted`` lets a test stand in for a ReplicaSet controller (create the
replacement).
"""

from __future__ import annotations

import contextlib
import copy
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kube_apiserver import PODS, ApiError, Request, _reorder_meta, _typed, encode
from kube_apiserver_writes import (
    WritableApiServer,
    WritableCluster,
    Write,
    _merge,
    _WriteHandler,
)

__all__ = ["PODS", "PodApiServer", "PodCluster"]


def _stamp(offset: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


class PodCluster(WritableCluster):
    """The writable cluster with Pods, their status subresource and evictions."""

    def __init__(self, revision: int = 500) -> None:
        super().__init__(revision)
        self._versions[PODS] = {}
        self._keys[PODS] = []
        self._keys_dirty[PODS] = False
        self.pdb_blocked: set[str] = set()  # "ns/name" of pods a PDB protects now
        self.evictions: list[tuple[str, str, int]] = []  # (ns, name, HTTP status)
        self.evicted_at: dict[str, float] = {}  # "ns/name" -> time.monotonic() of the eviction
        self.on_evicted: Callable[[dict[str, Any]], None] | None = None

    # ---- objects ----
    def pod_object(
        self,
        namespace: str,
        name: str,
        *images: str,
        owner: tuple[str, str] | None = None,  # (kind, name) of a controller owner
        owner_uid: str | None = None,
        pull_secrets: tuple[str, ...] = (),
        annotations: Mapping[str, str] | None = None,
        init_images: tuple[str, ...] = (),
        created_offset: float = 0.0,
    ) -> dict[str, Any]:
        """A Pod as the API server stores it right after creation (Pending, unscheduled)."""
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "",
            "creationTimestamp": _stamp(created_offset),
            "labels": {"app": name.rsplit("-", 1)[0]},
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        if owner is not None:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner[0],
                    "name": owner[1],
                    "uid": owner_uid or f"uid-{owner[0]}-{owner[1]}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        meta["managedFields"] = [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": meta["creationTimestamp"],
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:containers": {}}},
            },
        ]

        def container(prefix: str, i: int, image: str) -> dict[str, Any]:
            return {
                "name": f"{prefix}{i}",
                "image": image,
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }

        spec: dict[str, Any] = {
            "containers": [container("c", i, im) for i, im in enumerate(images)],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        }
        if init_images:
            spec["initContainers"] = [container("i", i, im) for i, im in enumerate(init_images)]
        if pull_secrets:
            spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
        status = {"phase": "Pending", "qosClass": "BestEffort"}
        return {"metadata": meta, "spec": spec, "status": status}

    def create_pod(self, namespace: str, name: str, *images: str, **kw: Any) -> dict[str, Any]:
        obj = self.pod_object(namespace, name, *images, **kw)
        with self.cond:
            self._namespace_ready(namespace, PODS, name)
            if self.current(PODS, f"{namespace}/{name}") is not None:
                raise ApiError(409, "AlreadyExists", f'pods "{name}" already exists')
            return self._write(PODS, f"{namespace}/{name}", obj, "ADDED")

    def create_pods(self, objects: list[dict[str, Any]]) -> None:
        """Bulk load of objects from `pod_object` (no checks)."""
        with self.cond:
            for obj in objects:
                meta = obj["metadata"]
                self._write(PODS, f"{meta['namespace']}/{meta['name']}", obj, "ADDED")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.current(PODS, f"{namespace}/{name}")

    def pods_in(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            o["metadata"]["name"]: o
            for o in self.objects(PODS)
            if o["metadata"]["namespace"] == namespace
        }

    # ---- the kubelet's status writes ----
    def set_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        with self.cond:
            current = self._must(PODS, f"{namespace}/{name}")
            obj = copy.deepcopy(current)
            obj["status"] = _merge(obj.get("status") or {}, dict(status))
            return self._write(PODS, f"{namespace}/{name}", obj, "MODIFIED")

    def pull_fails(
        self, namespace: str, name: str, reason: str = "ImagePullBackOff", *, ready: bool = False
    ) -> dict[str, Any]:
        """Every container waits on a failed pull (the kubelet's status after a 401)."""
        return self.set_status(namespace, name, self.waiting_status(namespace, name, reason, ready))

    def waiting_status(
        self, namespace: str, name: str, reason: str, ready: bool = False
    ) -> dict[str, Any]:
        pod = self._must(PODS, f"{namespace}/{name}")
        spec = pod["spec"]

        def status(c: Mapping[str, Any], first: bool) -> dict[str, Any]:
            message = (
                f'Back-off pulling image "{c["image"]}"'
                if reason == "ImagePullBackOff"
                else f'failed to pull and unpack image "{c["image"]}": 401 Unauthorized'
            )
            # with ready=True the first container runs and is ready, the others wait
            if ready and first:
                return {
                    "name": c["name"],
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "image": c["image"],
                    "imageID": "",
                    "containerID": "containerd://x",
                    "state": {"running": {"startedAt": _stamp()}},
                }
            return {
                "name": c["name"],
                "ready": False,
                "restartCount": 0,
                "started": False,
                "image": c["image"],
                "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}},
            }

        out: dict[str, Any] = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "hostIP": "10.0.0.2",
            "podIP": "10.244.0.9",
            "startTime": _stamp(),
            "containerStatuses": [
                status(c, i == 0) for i, c in enumerate(spec.get("containers", []))
            ],
        }
        if spec.get("initContainers"):
            out["initContainerStatuses"] = [status(c, False) for c in spec["initContainers"]]
        return out

    # ---- evictions ----
    def evict(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        key = f"{namespace}/{name}"
        with self.cond:
            try:
                current = self._must(PODS, key)
            except ApiError:
                self.evictions.append((namespace, name, 404))
                raise
            pre = ((body.get("deleteOptions") or {}).get("preconditions")) or {}
            uid = current["metadata"]["uid"]
            if pre.get("uid") and pre["uid"] != uid:
                self.evictions.append((namespace, name, 409))
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on Pod "{name}": Precondition failed: '
                    f"UID in precondition: {pre['uid']}, UID in object meta: {uid}",
                    details={"name": name, "kind": "Pod"},
                )
            if key in self.pdb_blocked:
                self.evictions.append((namespace, name, 429))
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": "The disruption budget web-pdb needs 1 healthy "
                                "pods and has 1 currently",
                            }
                        ]
                    },
                )
            self.evictions.append((namespace, name, 201))
            self.evicted_at[key] = time.monotonic()
            self._write(PODS, key, None, "DELETED")
        if self.on_evicted is not None:
            self.on_evicted(current)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }


class _NoDelayHandler(_WriteHandler):
    """TCP_NODELAY on every connection, as Go's net/http (kube-apiserver) sets by default.

    Without it a response's headers and body leave in two segments, Nagle holds the second
    until the client ACKs the first, and the client delays that ACK by 40 ms: every write
    would take 40 ms longer than on a real API server (the benchmark would measure that).
    """

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PodApiServer(WritableApiServer):
    """The writable API server answering Pods, their status and evictions too."""

    cluster: PodCluster

    def __init__(self, cluster: PodCluster | None = None, **kw: Any) -> None:
        super().__init__(cluster or PodCluster(), **kw)

    def start(self) -> PodApiServer:
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = _NoDelayHandler  # no request can have come in yet
        return self

    def _route(self, h: Any, req: Request, pretty: bool) -> None:
        s = [x for x in req.path.split("/") if x]
        if s == ["api", "v1", PODS]:
            self._collection(h, req, PODS, None, pretty)
            return
        if s[:3] == ["api", "v1", "namespaces"] and len(s) >= 5 and s[4] == PODS:
            if len(s) == 5:
                self._collection(h, req, PODS, s[3], pretty)
                return
            if len(s) == 6:
                obj = self.cluster._must(PODS, f"{s[3]}/{s[5]}")
                h.send_json(200, encode(_typed("Pod", obj), pretty))
                return
        super()._route(h, req, pretty)

    def _dispatch(self, w: Write, manager: str) -> tuple[int, dict[str, Any]]:
        s = w.segments
        if not (s[:3] == ["api", "v1", "namespaces"] and len(s) >= 5 and s[4] == PODS):
            return super()._dispatch(w, manager)
        c = self.cluster
        namespace = s[3]
        if len(s) == 5 and w.method == "POST":
            if not isinstance(w.body, Mapping):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            meta = w.body.get("metadata") or {}
            obj = c.pod_object(namespace, str(meta.get("name", "")), "busybox")
            obj["spec"] = {**obj["spec"], **(w.body.get("spec") or {})}
            obj["metadata"].update({k: v for k, v in meta.items() if k != "namespace"})
            with c.cond:
                c._namespace_ready(namespace, PODS, obj["metadata"]["name"])
                return 201, _typed(
                    "Pod",
                    c._write(
                        PODS, f"{namespace}/{obj['metadata']['name']}", _reorder_meta(obj), "ADDED"
                    ),
                )
        if len(s) == 6 and w.method == "DELETE":
            options = w.body if isinstance(w.body, Mapping) else {}
            return 200, c.delete_object(PODS, namespace, s[5], options)
        if len(s) == 7 and s[6] == "eviction" and w.method == "POST":
            body = w.body if isinstance(w.body, Mapping) else {}
            if (
                body.get("apiVersion") not in ("policy/v1", "policy/v1beta1")
                or body.get("kind") != "Eviction"
            ):
                raise ApiError(400, "BadRequest", "the body must be a policy/v1 Eviction")
            return 201, c.evict(namespace, s[5], body)
        if len(s) == 7 and s[6] == "status" and w.method in ("PUT", "PATCH"):
            body = w.body if isinstance(w.body, Mapping) else {}
            status = body.get("status") if w.method == "PUT" else (body.get("status") or {})
            return 200, _typed("Pod", c.set_status(namespace, s[5], status or {}))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
