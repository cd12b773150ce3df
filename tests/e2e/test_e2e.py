"""The installed webhook in front of a real API server: pods leave admission with their pull
secrets (these use made-up registries: what is stored, not what is pulled; test_pulls.py
pulls for real). Run with scripts/e2e, or see tests/e2e/conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import (
    OPT_OUT,
    Webhook,
    pod,
    pod_spec,
    pull_secrets,
    registry_secret,
    service_account,
    wait_for,
)

pytestmark = pytest.mark.e2e

REGISTRY = "registry.example.com"


@pytest.fixture(scope="module")
def team(webhook: Webhook) -> str:
    """A namespace with two registry secrets and an Opaque one, known to the webhook."""
    ns = webhook.namespace("team")
    webhook.kubectl.apply(
        webhook.ns("team"),
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
            annotations=OPT_OUT,
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
        items = webhook.kubectl.items("pods", team, "-l", "app=web")
        return items if len(items) >= 2 else []

    made = wait_for(pods, "the Deployment's pods", timeout=60)
    for item in made:
        assert pull_secrets(item) == ["regcred"], item["metadata"]["name"]


def test_a_namespace_and_its_workload_in_one_apply(webhook: Webhook) -> None:
    """The webhook has not seen the namespace yet: one live read serves the first pod."""
    ns = webhook.namespace("fresh")
    webhook.kubectl.apply(
        webhook.ns("fresh"),
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
