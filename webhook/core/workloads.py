"""Workloads: every kind that makes pods from a pod template, and the pod(s) it makes.

Pure: objects in, objects out. The webhook sees only Pods (the API server calls it for
each pod a controller creates); an admin has Deployments, CronJobs and Helm output. This
module maps each workload to the pod its controller would create from its template
(namespace from the workload's metadata, or a default), applies a pod-level JSON Patch
to the template inside the workload, and names the API paths of each kind for a live
read (`explain deploy/NAME`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Kind:
    """One workload kind: where its pod template is and how to read one from the API."""

    kind: str
    template_path: tuple[str, ...]  # keys from the object to its pod template; () for a Pod
    api_prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    resource: str  # plural, as in the API path
    aliases: tuple[str, ...]  # what `kubectl get` accepts: short names, singular, plural

    def path(self, namespace: str, name: str) -> str:
        return f"{self.api_prefix}/namespaces/{namespace}/{self.resource}/{name}"


KINDS: tuple[Kind, ...] = (
    Kind("Pod", (), "/api/v1", "pods", ("po", "pod", "pods")),
    Kind(
        "Deployment",
        ("spec", "template"),
        "/apis/apps/v1",
        "deployments",
        ("deploy", "deployment", "deployments"),
    ),
    Kind(
        "StatefulSet",
        ("spec", "template"),
        "/apis/apps/v1",
        "statefulsets",
        ("sts", "statefulset", "statefulsets"),
    ),
    Kind(
        "DaemonSet",
        ("spec", "template"),
        "/apis/apps/v1",
        "daemonsets",
        ("ds", "daemonset", "daemonsets"),
    ),
    Kind(
        "ReplicaSet",
        ("spec", "template"),
        "/apis/apps/v1",
        "replicasets",
        ("rs", "replicaset", "replicasets"),
    ),
    Kind(
        "ReplicationController",
        ("spec", "template"),
        "/api/v1",
        "replicationcontrollers",
        ("rc", "replicationcontroller", "replicationcontrollers"),
    ),
    Kind("Job", ("spec", "template"), "/apis/batch/v1", "jobs", ("job", "jobs")),
    Kind(
        "CronJob",
        ("spec", "jobTemplate", "spec", "template"),
        "/apis/batch/v1",
        "cronjobs",
        ("cj", "cronjob", "cronjobs"),
    ),
    Kind("PodTemplate", ("template",), "/api/v1", "podtemplates", ("podtemplate", "podtemplates")),
)
_BY_KIND = {k.kind: k for k in KINDS}
_BY_ALIAS = {alias: k for k in KINDS for alias in (*k.aliases, k.kind.lower())}


class WorkloadError(ValueError):
    """A KIND/NAME that names no workload kind, or a workload without a usable template."""


def kind_of(obj: Mapping[str, Any]) -> Kind | None:
    """The workload kind of an object, None for anything else (Secret, Service, ...)."""
    kind = obj.get("kind")
    return _BY_KIND.get(kind) if isinstance(kind, str) else None


def parse_ref(text: str) -> tuple[Kind, str]:
    """`deploy/web` -> (Deployment, "web"); accepts kubectl's names (`pod`, `sts`, `cj`...)."""
    kind_text, sep, name = text.partition("/")
    if not sep or not name or "/" in name:
        raise WorkloadError(f"{text!r}: expected KIND/NAME, e.g. pod/web or deploy/web")
    kind = _BY_ALIAS.get(kind_text.lower().split(".", 1)[0])
    if kind is None:
        known = ", ".join(k.aliases[0] for k in KINDS)
        raise WorkloadError(f"{kind_text!r} is not a kind with a pod template ({known})")
    return kind, name


@dataclass(frozen=True, slots=True)
class WorkloadPod:
    """The pod a workload's controller would create, as the webhook would receive it."""

    kind: Kind
    name: str  # the workload's name (or generateName)
    namespace: str
    pod: dict[str, Any]  # a Pod object: template metadata and spec

    @property
    def label(self) -> str:
        return f"{self.kind.kind.lower()}/{self.name}"


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def pod_of(obj: Mapping[str, Any], default_namespace: str) -> WorkloadPod | None:
    """The pod of a workload (a Pod is its own); None for other kinds or no template."""
    kind = kind_of(obj)
    if kind is None:
        return None
    meta = _metadata(obj)
    name = str(meta.get("name") or meta.get("generateName") or "<unnamed>")
    namespace = str(meta.get("namespace") or default_namespace)
    if kind.kind == "Pod":
        return WorkloadPod(kind, name, namespace, dict(obj))
    template: Any = obj
    for key in kind.template_path:
        template = template.get(key) if isinstance(template, Mapping) else None
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        return None
    pod_meta = dict(_metadata(template))
    pod_meta.setdefault("generateName", f"{name}-")
    pod_meta["namespace"] = namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(dict(template["spec"])),
    }
    return WorkloadPod(kind, name, namespace, pod)


def workload_patch(kind: Kind, pod_patch: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A pod's JSON Patch moved under the workload's template (`/spec/...` -> its path)."""
    prefix = "".join(f"/{key}" for key in kind.template_path)
    return [{**op, "path": prefix + str(op["path"])} for op in pod_patch]


def input_namespaces(objects: Iterable[Mapping[str, Any]], default_namespace: str) -> set[str]:
    """The namespaces whose registry secrets decide for these objects (workloads' and
    AdmissionReviews'): all a live read for `mutate` needs."""
    out: set[str] = set()
    for obj in objects:
        if obj.get("kind") == "AdmissionReview":
            request = obj.get("request")
            ns = request.get("namespace") if isinstance(request, Mapping) else None
            if isinstance(ns, str) and ns:
                out.add(ns)
        elif (found := pod_of(obj, default_namespace)) is not None:
            out.add(found.namespace)
    return out
