"""The webhook in front of a real API server: pods leave admission with their pull secrets.

Run against any cluster (docs/live-state.md):  KUBECONFIG=... pytest -m e2e tests/e2e
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from e2e_support import RUN_LABEL, Webhook, wait_for

pytestmark = pytest.mark.e2e

REGISTRY = "registry.example.com"


def docker_config(*hosts: str, password: str = "e2e-not-a-real-password") -> dict[str, str]:
    token = base64.b64encode(f"e2e:{password}".encode()).decode()
    config = {"auths": {h: {"auth": token} for h in hosts}}
    return {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}


def namespace(hook: Webhook, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {RUN_LABEL: hook.run}},
    }


def service_account(ns: str) -> dict[str, Any]:
    """A control plane without controller-manager (envtest) makes no default ServiceAccount."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns},
    }


def registry_secret(ns: str, name: str, *hosts: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/dockerconfigjson",
        "data": docker_config(*hosts),
    }


def pod_spec(*images: str, pull_secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
    }
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return spec


def pod(ns: str, name: str, *images: str, **kw: Any) -> dict[str, Any]:
    annotations = kw.pop("annotations", None)
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec(*images, **kw)}


def pull_secrets(obj: dict[str, Any] | None) -> list[str]:
    assert obj is not None
    return [ref["name"] for ref in obj["spec"].get("imagePullSecrets", [])]


@pytest.fixture(scope="module")
def team(webhook: Webhook) -> str:
    """A namespace with two registry secrets and an Opaque one, known to the webhook."""
    ns = webhook.namespace("team")
    webhook.kubectl.apply(
        namespace(webhook, ns),
        service_account(ns),
        registry_secret(ns, "regcred", REGISTRY),
        registry_secret(ns, "quay", "quay.io"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "settings", "namespace": ns},
            "type": "Opaque",
            "data": {"k": "dg=="},
        },
    )

    # The API server's view of webhook configurations lags a little: wait until a dry-run
    # pod comes back patched (a dry run leaves nothing behind).
    def patched() -> bool:
        out = webhook.kubectl.apply(pod(ns, "probe", f"{REGISTRY}/probe:1"), dry_run=True)
        return pull_secrets(out[0]) == ["regcred"]

    wait_for(patched, "the webhook to patch pods in the suite's namespace")
    return ns


def test_a_pod_gets_the_secrets_its_images_need(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(pod(team, "app", f"{REGISTRY}/team/app:1", "quay.io/org/tool:2"))
    stored = webhook.kubectl.get("pod", "app", team)
    assert sorted(pull_secrets(stored)) == ["quay", "regcred"]


def test_existing_entries_are_kept_first(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(
        pod(team, "own", f"{REGISTRY}/team/app:1", "quay.io/x:1", pull_secrets=("mine",))
    )
    names = pull_secrets(webhook.kubectl.get("pod", "own", team))
    assert names[0] == "mine"
    assert sorted(names[1:]) == ["quay", "regcred"]


def test_a_pod_of_a_public_image_is_left_alone(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(pod(team, "public", "nginx:1.27"))
    assert pull_secrets(webhook.kubectl.get("pod", "public", team)) == []


def test_the_pod_opt_out_annotation(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(
        pod(
            team,
            "opted-out",
            f"{REGISTRY}/team/app:1",
            annotations={"pullsecret-injector.io/inject": "false"},
        )
    )
    assert pull_secrets(webhook.kubectl.get("pod", "opted-out", team)) == []


def test_server_side_dry_run_is_answered_and_leaves_nothing(webhook: Webhook, team: str) -> None:
    out = webhook.kubectl.apply(pod(team, "dry", f"{REGISTRY}/team/app:1"), dry_run=True)
    assert pull_secrets(out[0]) == ["regcred"]
    assert webhook.kubectl.get("pod", "dry", team) is None


def test_pods_of_a_deployment(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": team},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": pod_spec(f"{REGISTRY}/team/web:1"),
                },
            },
        }
    )

    def pods() -> list[dict[str, Any]]:
        out = webhook.kubectl("get", "pods", "-n", team, "-l", "app=web", "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return items if len(items) >= 2 else []

    try:
        made = wait_for(pods, "the Deployment's pods", timeout=60)
    except AssertionError:
        replicasets = webhook.kubectl("get", "replicasets", "-n", team, "-o", "name").stdout
        if not replicasets.strip():
            pytest.skip("no controller-manager in this control plane: Deployments make no pods")
        raise
    for item in made:
        assert pull_secrets(item) == ["regcred"], item["metadata"]["name"]


def test_a_namespace_and_its_workload_in_one_apply(webhook: Webhook) -> None:
    """The webhook has not seen the namespace yet: one live read serves the first pod."""
    ns = webhook.namespace("fresh")
    webhook.kubectl.apply(
        namespace(webhook, ns),
        service_account(ns),
        registry_secret(ns, "pull", REGISTRY),
        pod(ns, "first", f"{REGISTRY}/team/app:1"),
    )
    assert pull_secrets(webhook.kubectl.get("pod", "first", ns)) == ["pull"]


def test_secret_changes_reach_the_next_pods(webhook: Webhook, team: str) -> None:
    webhook.kubectl.apply(registry_secret(team, "late", "ghcr.io"))

    def injected(name: str, image: str) -> list[str]:
        out = webhook.kubectl.apply(pod(team, name, image), dry_run=True)
        return pull_secrets(out[0])

    wait_for(lambda: injected("p1", "ghcr.io/org/x:1") == ["late"], "the added secret")
    webhook.kubectl("delete", "secret", "late", "-n", team)
    wait_for(lambda: injected("p2", "ghcr.io/org/x:1") == [], "the deleted secret to go")
