"""What `explain` and `doctor` read from the local API server, besides Secrets and Namespaces.

kube_apiserver.py serves Secrets and Namespaces; kube_apiserver_writes.py adds writes.
This extends the writable server, without changing either, with:

- any other object, stored by its API path (``put``): ``GET`` of one object, and of its
  collection with ``labelSelector`` and simple ``fieldSelector`` terms (dotted paths,
  ``=``/``!=``), namespaced or cluster-wide — Pods, Deployments, CronJobs, Services,
  EndpointSlices, Events, MutatingWebhookConfigurations, RBAC objects, ...;
- ``POST .../subjectaccessreviews``, answered by evaluating the stored RBAC objects
  (ClusterRoles, Roles and their bindings) as kube-apiserver's RBAC authorizer does for
  users, groups and ServiceAccounts; ``"*"`` verbs, groups and resources match anything;
- ``POST /api/v1/namespaces/{ns}/pods?dryRun=All``: the pod goes through ``admit`` (the
  test's stand-in for the admission chain) and is returned, never stored; a pod create
  without dryRun is refused (doctor must never make one);
- ``GET .../services/{name}:{port}/proxy/{path}``: the answer registered in ``proxy``;
- 403 ``Forbidden`` for any request whose path starts with one of ``forbidden`` (or is
  one, for an entry ending in ``$``): an identity without that permission.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kube_apiserver import ApiError, Request, encode
from kube_apiserver_writes import WritableApiServer, Write

from webhook.kubelet.labels import parse_selector

Admit = Callable[[dict[str, Any], str], dict[str, Any]]


def _dig(obj: Mapping[str, Any], dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    return "" if cur is None else str(cur)


def _rule_matches(
    rule: Mapping[str, Any], verb: str, group: str, resource: str, name: str = ""
) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    names = rule.get("resourceNames") or []  # a rule with names allows those names only
    return (
        has("verbs", verb)
        and has("apiGroups", group)
        and has("resources", resource)
        and (not names or name in names)
    )


class OpsApiServer(WritableApiServer):
    """The writable API server, plus generic objects, SubjectAccessReviews, dry-run pods
    and the service proxy."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.objects: dict[str, dict[str, Any]] = {}  # API path of the object -> object
        self.proxy: dict[str, tuple[int, str]] = {}  # path after /proxy -> (status, body)
        self.admit: Admit = lambda pod, _ns: pod
        self.reviews: list[dict[str, Any]] = []
        self.pod_posts: list[Write] = []
        self.forbidden: set[str] = set()  # path prefixes (exact paths: "...$") answered 403
        self._objects_lock = threading.Lock()

    # ---- tests' side ----
    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` in the collection at API path `collection` (replacing one of its name)."""
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {}).setdefault("resourceVersion", "1")
        with self._objects_lock:
            self.objects[f"{collection}/{obj['metadata']['name']}"] = obj
        return obj

    def remove(self, path: str) -> None:
        with self._objects_lock:
            del self.objects[path]

    def find(self, kind: str, name: str) -> tuple[str, dict[str, Any]]:
        with self._objects_lock:
            for path, obj in self.objects.items():
                if obj.get("kind") == kind and obj["metadata"]["name"] == name:
                    return path, obj
        raise KeyError(f"{kind}/{name}")

    def allowed(self, user: str, groups: list[str], attrs: Mapping[str, Any]) -> bool:
        """kube-apiserver's RBAC authorizer over the stored roles and bindings."""
        verb, group = str(attrs.get("verb", "")), str(attrs.get("group", ""))
        resource, namespace = str(attrs.get("resource", "")), str(attrs.get("namespace", ""))
        if attrs.get("subresource"):  # RBAC names a subresource as resource/subresource
            resource = f"{resource}/{attrs['subresource']}"
        with self._objects_lock:
            objects = list(self.objects.values())
        roles = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objects
            if o.get("kind") in ("ClusterRole", "Role")
        }
        for binding in objects:
            kind = binding.get("kind")
            if kind not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            bound_ns = binding["metadata"].get("namespace", "")
            if kind == "RoleBinding" and bound_ns != namespace:
                continue
            if not any(self._subject(s, user, groups) for s in binding.get("subjects") or ()):
                continue
            ref = binding["roleRef"]
            role_ns = bound_ns if ref["kind"] == "Role" else ""
            role = roles.get((ref["kind"], role_ns, ref["name"]))
            if role is None:
                continue
            name = str(attrs.get("name", ""))
            if any(_rule_matches(r, verb, group, resource, name) for r in role.get("rules") or ()):
                return True
        return False

    @staticmethod
    def _subject(subject: Mapping[str, Any], user: str, groups: list[str]) -> bool:
        if subject.get("kind") == "ServiceAccount":
            return user == f"system:serviceaccount:{subject.get('namespace')}:{subject['name']}"
        if subject.get("kind") == "User":
            return user == subject.get("name")
        return subject.get("name") in groups

    def _refuse(self, method: str, path: str) -> None:
        if any(
            path == rule[:-1] if rule.endswith("$") else path.startswith(rule)
            for rule in self.forbidden
        ):
            raise ApiError(
                403, "Forbidden",
                f'{method} {path} is forbidden: User "tester" cannot do that',
            )  # fmt: skip

    # ---- reads ----
    def _route(self, h: Any, req: Request, pretty: bool) -> None:
        self._refuse("get", req.path)
        if "/proxy/" in req.path and "/services/" in req.path:
            status, body = self.proxy.get(req.path.split("/proxy", 1)[1], (503, "no endpoints"))
            h.send_json(status, body.encode())
            return
        with self._objects_lock:
            obj = self.objects.get(req.path.rstrip("/"))
            items = [
                o
                for path, o in self.objects.items()
                if path.rsplit("/", 1)[0] == req.path.rstrip("/")
                or (  # a cluster-wide list of a namespaced collection
                    "/namespaces/" in path
                    and path.split("/namespaces/")[0] + "/" + path.split("/")[-2] == req.path
                )
            ]
        if obj is not None:
            h.send_json(200, encode(obj, pretty))
            return
        if items or self._known_collection(req.path):
            h.send_json(200, encode(self._list(items, req), pretty))
            return
        super()._route(h, req, pretty)

    def _known_collection(self, path: str) -> bool:
        last = path.rstrip("/").rsplit("/", 1)[-1]
        return last in {
            "pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs",
            "cronjobs", "replicationcontrollers", "podtemplates", "services", "events",
            "endpointslices", "mutatingwebhookconfigurations", "rolebindings",
        }  # fmt: skip

    def _list(self, items: list[dict[str, Any]], req: Request) -> dict[str, Any]:
        selector = parse_selector(req.query.get("labelSelector", ""))
        terms = []
        for term in filter(None, req.query.get("fieldSelector", "").split(",")):
            negate = "!=" in term
            key, value = term.split("!=" if negate else "=", 1)
            terms.append((key, value, negate))
        out = [
            o
            for o in items
            if selector.matches(o["metadata"].get("labels") or {})
            and all((_dig(o, k) == v) != neg for k, v, neg in terms)
        ]
        return {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"},
            "items": out,
        }

    # ---- writes ----
    def _dispatch(self, w: Write, manager: str) -> tuple[int, dict[str, Any]]:
        self._refuse(w.method.lower(), w.path)
        s = w.segments
        if s == ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]:
            spec = (w.body or {}).get("spec") or {}
            self.reviews.append(spec)
            allowed = self.allowed(
                str(spec.get("user", "")), list(spec.get("groups") or []),
                spec.get("resourceAttributes") or {},
            )  # fmt: skip
            return 201, {**w.body, "status": {"allowed": allowed}}
        if s[:2] == ["api", "v1"] and len(s) == 5 and s[4] == "pods" and w.method == "POST":
            self.pod_posts.append(w)
            if w.query.get("dryRun") != "All":
                raise ApiError(403, "Forbidden", "this test server refuses real pod creates")
            pod = copy.deepcopy(w.body)
            pod["metadata"] = {**pod["metadata"], "namespace": s[3], "name": "dry-run-pod"}
            return 201, self.admit(pod, s[3])
        return super()._dispatch(w, manager)
