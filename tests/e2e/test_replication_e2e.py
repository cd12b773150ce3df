"""Project and cluster registries against a real cluster (`-m e2e`, KUBECONFIG set).

Uses the suite's webhook (tests/e2e/conftest.py): `serve` on this host with the release
namespace `psi-e2e-<run>-release`, which is also its source namespace and holds its
Lease. Every source here selects only this run's namespaces (the run label is part of
each selector), so nothing outside the suite is ever copied into; the conftest deletes
every namespace of the run at the end (copies go with their namespaces).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from e2e_support import RUN_LABEL, Webhook, wait_for

pytestmark = pytest.mark.e2e

SELECTOR = "pullsecret-injector.io/namespace-selector"
MANAGED_BY = "app.kubernetes.io/managed-by"
SOURCE = "pullsecret-injector.io/source"
PROJECT = "field.cattle.io/projectId"


def docker_config(host: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"e2e:{password}".encode()).decode()
    config = {"auths": {host: {"auth": token}}}
    return {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}


def namespace(hook: Webhook, name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {RUN_LABEL: hook.run, **labels}},
    }


def service_account(ns: str) -> dict[str, Any]:
    """envtest-style control planes (no controller-manager) make no default ServiceAccount."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns},
    }


def source(hook: Webhook, name: str, selector: str, host: str, password: str) -> dict[str, Any]:
    """A source registry selecting only this run's namespaces (plus `selector`)."""
    full = f"{RUN_LABEL}={hook.run}" + (f",{selector}" if selector else "")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": hook.namespace("release"),
            "annotations": {SELECTOR: full},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": docker_config(host, password),
    }


def pod(ns: str, name: str, *images: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)],
        },
    }


def pull_secrets(obj: dict[str, Any]) -> list[str]:
    return [e["name"] for e in obj["spec"].get("imagePullSecrets") or []]


def copy_of(hook: Webhook, ns: str, name: str) -> dict[str, Any] | None:
    return hook.kubectl.get("secret", name, ns)


@pytest.fixture(scope="module")
def replicating(webhook: Webhook) -> Webhook:
    """The webhook's release namespace (its source namespace and Lease) exists."""
    metrics = httpx.get(webhook.ops_url + "/metrics", timeout=5).text
    if "pullsecret_injector_replication_leader" not in metrics:
        pytest.skip("this `serve` runs no replication controller")
    webhook.kubectl.apply(namespace(webhook, webhook.namespace("release")))
    wait_for(
        lambda: (
            "pullsecret_injector_replication_leader 1.0"
            in httpx.get(webhook.ops_url + "/metrics", timeout=5).text
        ),
        "the webhook leading (Lease taken)",
    )
    return webhook


def test_a_namespace_and_its_pod_applied_together_get_the_cluster_registry(
    replicating: Webhook,
) -> None:
    hook = replicating
    # (scoped to namespaces labelled for this test, so that the suite's other namespaces
    # keep exactly the secrets their own tests expect)
    hook.kubectl.apply(source(hook, "cluster-reg", "wide=yes", "cluster.example.com", "c1"))
    ns = hook.namespace("together")
    stored = hook.kubectl.apply(
        namespace(hook, ns, wide="yes"),
        service_account(ns),
        pod(ns, "first", "cluster.example.com/app:1"),
    )
    assert pull_secrets(stored[-1]) == ["cluster-reg"]  # the very first pod
    copy = copy_of(hook, ns, "cluster-reg")
    assert copy is not None
    assert copy["metadata"]["labels"][MANAGED_BY] == "pullsecret-injector"
    assert copy["metadata"]["annotations"][SOURCE] == f"{hook.namespace('release')}/cluster-reg"
    assert copy["data"] == docker_config("cluster.example.com", "c1")


def test_rotation_relabel_and_deletion(replicating: Webhook) -> None:
    hook = replicating
    a1, a2 = hook.namespace("team-a1"), hook.namespace("team-a2")
    hook.kubectl.apply(namespace(hook, a1, team="a"), namespace(hook, a2, team="a"))
    hook.kubectl.apply(source(hook, "team-reg", "team=a", "team.example.com", "v1"))
    wait_for(lambda: copy_of(hook, a1, "team-reg") and copy_of(hook, a2, "team-reg"), "copies")

    hook.kubectl.apply(source(hook, "team-reg", "team=a", "team.example.com", "v2"))
    rotated = docker_config("team.example.com", "v2")
    wait_for(
        lambda: all(
            (copy_of(hook, ns, "team-reg") or {}).get("data") == rotated for ns in (a1, a2)
        ),
        "every copy rotated",
    )
    hook.kubectl("label", "namespace", a2, "team-")
    wait_for(lambda: copy_of(hook, a2, "team-reg") is None, "copy deleted after the relabel")
    hook.kubectl("delete", "secret", "team-reg", "-n", hook.namespace("release"))
    wait_for(lambda: copy_of(hook, a1, "team-reg") is None, "copy deleted with its source")


def test_a_users_secret_of_the_same_name_is_untouched(replicating: Webhook) -> None:
    hook = replicating
    ns = hook.namespace("users")
    users = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shared-reg", "namespace": ns},
        "type": "kubernetes.io/dockerconfigjson",
        "data": docker_config("user.example.com", "mine"),
    }
    hook.kubectl.apply(namespace(hook, ns, clash="yes"), users)
    before = copy_of(hook, ns, "shared-reg")
    assert before is not None
    hook.kubectl.apply(source(hook, "shared-reg", "clash=yes", "shared.example.com", "s"))
    wait_for(
        lambda: (
            "CopyBlocked"
            in hook.kubectl("get", "events", "-n", hook.namespace("release"), "-o", "json").stdout
        ),
        "the clash reported on the source",
    )
    after = copy_of(hook, ns, "shared-reg")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == users["data"]


def test_projects_stay_isolated(replicating: Webhook) -> None:
    hook = replicating
    hook.kubectl.apply(
        source(hook, "project-a-reg", f"{PROJECT}=p-e2e-a", "shared.example.org", "a"),
        source(hook, "project-b-reg", f"{PROJECT}=p-e2e-b", "shared.example.org", "b"),
    )
    a, b = hook.namespace("project-a"), hook.namespace("project-b")
    in_a = hook.kubectl.apply(
        namespace(hook, a, **{PROJECT: "p-e2e-a"}),
        service_account(a),
        pod(a, "web", "shared.example.org/web:1"),
    )[-1]
    in_b = hook.kubectl.apply(
        namespace(hook, b, **{PROJECT: "p-e2e-b"}),
        service_account(b),
        pod(b, "web", "shared.example.org/web:1"),
    )[-1]
    assert pull_secrets(in_a) == ["project-a-reg"]
    assert pull_secrets(in_b) == ["project-b-reg"]
    assert copy_of(hook, a, "project-b-reg") is None
    assert copy_of(hook, b, "project-a-reg") is None


def test_a_deployments_pods_in_a_new_namespace_get_the_copy(replicating: Webhook) -> None:
    hook = replicating
    hook.kubectl.apply(source(hook, "deploy-reg", "deploy=yes", "deploy.example.com", "d"))
    ns = hook.namespace("deploy")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "web", "image": "deploy.example.com/web:1"}],
                },
            },
        },
    }
    hook.kubectl.apply(namespace(hook, ns, deploy="yes"), service_account(ns), deployment)

    def pods() -> list[dict[str, Any]]:
        out = json.loads(hook.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)
        items: list[dict[str, Any]] = out["items"]
        return items if len(items) >= 2 else []

    try:
        found = wait_for(pods, "the Deployment's pods", timeout=60)
    except AssertionError:
        if not hook.kubectl("get", "replicasets", "-n", ns, "-o", "name").stdout.strip():
            pytest.skip("no controller-manager in this control plane: Deployments make no pods")
        raise
    assert all(pull_secrets(p) == ["deploy-reg"] for p in found)
