"""Project and cluster registries against a real cluster, served by the installed release.

Sources live in the release namespace (the chart's default source namespace). Every source
here selects only this run's namespaces (the run label is part of each selector), so nothing
outside the suite is ever copied into; the session deletes the run's namespaces (copies go
with them) and its sources (they carry the run label).
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import (
    RUN_LABEL,
    SELECTOR,
    Webhook,
    docker_config,
    pod,
    pod_spec,
    pull_secrets,
    registry_secret,
    service_account,
    wait_for,
)

pytestmark = pytest.mark.e2e

MANAGED_BY = "app.kubernetes.io/managed-by"
SOURCE = "pullsecret-injector.io/source"
PROJECT = "field.cattle.io/projectId"


def source(hook: Webhook, name: str, selector: str, host: str, password: str) -> dict[str, Any]:
    """A source registry selecting only this run's namespaces (plus `selector`)."""
    full = f"{RUN_LABEL}={hook.run}" + (f",{selector}" if selector else "")
    return registry_secret(
        hook.release_namespace, name, host, password=password,
        annotations={SELECTOR: full}, labels={RUN_LABEL: hook.run},
    )  # fmt: skip


def namespace(hook: Webhook, name: str, **labels: str) -> dict[str, Any]:
    """A namespace of this run by its full name (hook.namespace(suffix))."""
    suffix = name.removeprefix(f"psi-e2e-{hook.run}-")
    return hook.ns(suffix, **labels)


def copy_of(hook: Webhook, ns: str, name: str) -> dict[str, Any] | None:
    return hook.kubectl.get("secret", name, ns)


@pytest.fixture(scope="module")
def replicating(webhook: Webhook) -> Webhook:
    """One replica of the release leads (holds the replication Lease)."""

    def leader() -> bool:
        leases = webhook.kubectl.items("leases", webhook.release_namespace)
        return any((lease.get("spec") or {}).get("holderIdentity") for lease in leases)

    wait_for(leader, "a replica holding the replication Lease")
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
    assert copy["metadata"]["annotations"][SOURCE] == f"{hook.release_namespace}/cluster-reg"
    assert copy["data"] == docker_config("cluster.example.com", password="c1")


def test_rotation_relabel_and_deletion(replicating: Webhook) -> None:
    hook = replicating
    a1, a2 = hook.namespace("team-a1"), hook.namespace("team-a2")
    hook.kubectl.apply(namespace(hook, a1, team="a"), namespace(hook, a2, team="a"))
    hook.kubectl.apply(source(hook, "team-reg", "team=a", "team.example.com", "v1"))
    wait_for(lambda: copy_of(hook, a1, "team-reg") and copy_of(hook, a2, "team-reg"), "copies")

    hook.kubectl.apply(source(hook, "team-reg", "team=a", "team.example.com", "v2"))
    rotated = docker_config("team.example.com", password="v2")
    wait_for(
        lambda: all(
            (copy_of(hook, ns, "team-reg") or {}).get("data") == rotated for ns in (a1, a2)
        ),
        "every copy rotated",
    )
    hook.kubectl("label", "namespace", a2, "team-")
    wait_for(lambda: copy_of(hook, a2, "team-reg") is None, "copy deleted after the relabel")
    hook.kubectl("delete", "secret", "team-reg", "-n", hook.release_namespace)
    wait_for(lambda: copy_of(hook, a1, "team-reg") is None, "copy deleted with its source")


def test_a_users_secret_of_the_same_name_is_untouched(replicating: Webhook) -> None:
    hook = replicating
    ns = hook.namespace("users")
    users = registry_secret(ns, "shared-reg", "user.example.com", password="mine")
    hook.kubectl.apply(namespace(hook, ns, clash="yes"), users)
    before = copy_of(hook, ns, "shared-reg")
    assert before is not None
    hook.kubectl.apply(source(hook, "shared-reg", "clash=yes", "shared.example.com", "s"))
    wait_for(
        lambda: (
            "CopyBlocked"
            in hook.kubectl("get", "events", "-n", hook.release_namespace, "-o", "json").stdout
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
                "spec": pod_spec("deploy.example.com/web:1"),
            },
        },
    }
    hook.kubectl.apply(namespace(hook, ns, deploy="yes"), service_account(ns), deployment)

    def pods() -> list[dict[str, Any]]:
        items = hook.kubectl.items("pods", ns)
        return items if len(items) >= 2 else []

    found = wait_for(pods, "the Deployment's pods", timeout=60)
    assert all(pull_secrets(p) == ["deploy-reg"] for p in found)
