"""`helm uninstall` leaves only what the README's Uninstall section names. Runs last
(tests/e2e/conftest.py sorts it there): the release is gone afterwards."""

from __future__ import annotations

import os
import subprocess

import pytest
from e2e_support import (
    RUN_LABEL,
    SELECTOR,
    Webhook,
    pod,
    pull_secrets,
    registry_secret,
    service_account,
    wait_for,
)

pytestmark = pytest.mark.e2e

KINDS = (
    "deployments,replicasets,pods,services,endpoints,serviceaccounts,secrets,configmaps,"
    "roles,rolebindings,poddisruptionbudgets,networkpolicies,jobs"
)
CLUSTER_KINDS = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations"


def test_uninstall_leaves_only_the_documented_leftovers(webhook: Webhook) -> None:
    hook = webhook
    # A copy made by replication, to see it stay behind (documented: pods may use it).
    ns = hook.namespace("leftover")
    source = registry_secret(
        hook.release_namespace, "leftover-reg", "leftover.example.com",
        annotations={SELECTOR: f"{RUN_LABEL}={hook.run},leftover=yes"},
        labels={RUN_LABEL: hook.run},
    )  # fmt: skip
    hook.kubectl.apply(hook.ns("leftover", leftover="yes"), service_account(ns), source)
    wait_for(lambda: hook.kubectl.get("secret", "leftover-reg", ns), "the copy")

    env = {**os.environ, "KUBECONFIG": hook.kubectl.env["KUBECONFIG"]}
    out = subprocess.run(
        ["helm", "uninstall", hook.release, "-n", hook.release_namespace, "--wait",
         "--timeout", "3m"],
        env=env, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr

    instance = f"app.kubernetes.io/instance={hook.release}"
    # the last `helm test` pod stays, on purpose (README, "Uninstall": Helm 3 reads its
    # logs after the test), until the next test replaces it
    not_test = f"{instance},app.kubernetes.io/component!=test"

    def left() -> list[str]:
        out = hook.kubectl("get", KINDS, "-n", hook.release_namespace, "-l", not_test, "-o", "name")
        return out.stdout.split()

    # --wait returns once the Deployment is gone; its pods take their grace period to go.
    wait_for(lambda: not left(), "the release's objects to go", timeout=90)
    cluster = hook.kubectl("get", CLUSTER_KINDS, "-l", instance, "-o", "name")
    assert cluster.stdout.split() == []
    # What stays, on purpose (README, "Uninstall"): the copies, and the leader Lease.
    copy = hook.kubectl.get("secret", "leftover-reg", ns)
    assert copy is not None
    assert copy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pullsecret-injector"
    assert hook.kubectl.items("leases", hook.release_namespace) != []
    # Nothing calls the webhook any more: a pod is admitted, and admitted unchanged.
    stored = hook.kubectl.apply(pod(ns, "after", "leftover.example.com/app:1"), dry_run=True)[0]
    assert pull_secrets(stored) == []
