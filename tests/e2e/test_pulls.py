"""Real pulls from a private registry, through the installed webhook: the kubelet pulls with
what the webhook injected, or gets the registry's 401. Every container is imagePullPolicy
Always, so an image the node cached earlier cannot hide a missing credential.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import (
    OPT_OUT,
    RUN_LABEL,
    SELECTOR,
    Webhook,
    deployment,
    pod,
    pull_secrets,
    real_secret,
    service_account,
    wait_for,
    waiting_reason,
)

pytestmark = pytest.mark.e2e

PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")
PULL_TIMEOUT = 120.0  # a pull from a registry next to the node; generous for a loaded CI box


def running(hook: Webhook, ns: str, name: str) -> bool:
    return waiting_reason(hook.kubectl.get("pod", name, ns))[0] == "Running"


def pull_refused(hook: Webhook, ns: str, name: str) -> str:
    """The message once the pod's pull has failed; raises if it runs instead."""
    reason, message = waiting_reason(hook.kubectl.get("pod", name, ns))
    assert reason != "Running", f"{ns}/{name} runs: it pulled without credentials"
    return message if reason in PULL_FAILED else ""


def events_of(hook: Webhook, ns: str, name: str) -> str:
    return hook.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}",
        "-o", "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}",
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def with_secret(webhook: Webhook) -> str:
    """A namespace holding a registry Secret with the private registry's credentials."""
    ns = webhook.namespace("pull-ok")
    webhook.kubectl.apply(
        webhook.ns("pull-ok"), service_account(ns), real_secret(webhook, ns, "private-reg")
    )

    def injected() -> bool:
        probe = pod(ns, "probe", webhook.registry.image)
        return pull_secrets(webhook.kubectl.apply(probe, dry_run=True)[0]) == ["private-reg"]

    wait_for(injected, "the webhook to know the namespace's registry Secret")
    return ns


def test_a_pod_naming_no_secret_pulls_with_the_namespaces_registry_secret(
    webhook: Webhook, with_secret: str
) -> None:
    ns = with_secret
    stored = webhook.kubectl.apply(pod(ns, "app", webhook.registry.image, always=True))[0]
    assert pull_secrets(stored) == ["private-reg"]
    wait_for(lambda: running(webhook, ns, "app"), "the pod to pull and run", timeout=PULL_TIMEOUT)


def test_the_same_pod_without_a_registry_secret_gets_a_401(webhook: Webhook) -> None:
    ns = webhook.namespace("pull-none")
    webhook.kubectl.apply(webhook.ns("pull-none"), service_account(ns))
    stored = webhook.kubectl.apply(pod(ns, "app", webhook.registry.image, always=True))[0]
    assert pull_secrets(stored) == []
    message = wait_for(lambda: pull_refused(webhook, ns, "app"), "the pull to fail")
    assert "401" in message + events_of(webhook, ns, "app"), message


def test_an_opted_out_pod_is_not_injected_and_cannot_pull(
    webhook: Webhook, with_secret: str
) -> None:
    ns = with_secret
    opted_out = pod(ns, "opted-out", webhook.registry.image, annotations=OPT_OUT, always=True)
    stored = webhook.kubectl.apply(opted_out)[0]
    assert pull_secrets(stored) == []
    message = wait_for(lambda: pull_refused(webhook, ns, "opted-out"), "the pull to fail")
    assert "401" in message + events_of(webhook, ns, "opted-out"), message


def test_a_server_side_dry_run_changes_nothing(webhook: Webhook, with_secret: str) -> None:
    ns = with_secret
    before = webhook.kubectl("get", "secrets,pods", "-n", ns, "-o", "name").stdout
    out = webhook.kubectl.apply(pod(ns, "dry", webhook.registry.image, always=True), dry_run=True)
    assert pull_secrets(out[0]) == ["private-reg"]  # answered as for real...
    assert webhook.kubectl.get("pod", "dry", ns) is None  # ...and nothing stored
    assert webhook.kubectl("get", "secrets,pods", "-n", ns, "-o", "name").stdout == before


def project_source(hook: Webhook, name: str, project: str) -> dict[str, Any]:
    """A source registry with the real credentials, serving this run's namespaces of `project`."""
    selector = f"{RUN_LABEL}={hook.run},field.cattle.io/projectId={project}"
    return real_secret(
        hook, hook.release_namespace, name,
        annotations={SELECTOR: selector}, labels={RUN_LABEL: hook.run},
    )  # fmt: skip


def test_a_deployment_in_a_project_namespace_pulls_with_the_project_registry(
    webhook: Webhook,
) -> None:
    """Both a namespace that existed before the source and one created after it."""
    project = f"p-{webhook.run}"
    early, late = webhook.namespace("project-early"), webhook.namespace("project-late")
    labels = {"field.cattle.io/projectId": project}
    webhook.kubectl.apply(webhook.ns("project-early", **labels), service_account(early))
    webhook.kubectl.apply(project_source(webhook, "project-reg", project))
    webhook.kubectl.apply(webhook.ns("project-late", **labels), service_account(late))
    for ns in (early, late):
        webhook.kubectl.apply(deployment(ns, "web", webhook.registry.image, replicas=2))

    def all_running(ns: str) -> list[dict[str, Any]]:
        pods = webhook.kubectl.items("pods", ns, "-l", "app=web")
        ok = len(pods) >= 2 and all(waiting_reason(p)[0] == "Running" for p in pods)
        return pods if ok else []

    for ns in (early, late):
        pods = wait_for(lambda ns=ns: all_running(ns), f"{ns}'s pods running", timeout=PULL_TIMEOUT)
        assert all(pull_secrets(p) == ["project-reg"] for p in pods)
        assert webhook.kubectl.get("secret", "project-reg", ns) is not None  # the copy
