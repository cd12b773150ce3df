"""Stuck pods recover, on a real cluster with the chart installed (recovery.mode evict).

Real pulls from the suite's private registry (tests/e2e/conftest.py): a pod created before
its namespace has the registry Secret fails with 401 and waits in ErrImagePull /
ImagePullBackOff; once the Secret exists, the recovery controller evicts an owned pod (its
ReplicaSet recreates it, admission injects the Secret, it runs), reports a bare pod with an
Event and leaves it, and leaves opted-out pods and pods with a ready container alone.

Written against the e2e_support helpers of the rewritten suite (Webhook.registry,
.namespace(), .ns(), pod(), deployment(), real_secret(), waiting_reason(), wait_for);
the module is imported as a whole so that this file still collects next to an older
e2e_support (where the whole directory is skipped without `-m e2e`).
"""

from __future__ import annotations

import time
from typing import Any

import e2e_support as e2e
import pytest

# Each test waits for a first pull to fail and then for recovery: more than the suite's 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")
STUCK_TIMEOUT = 120.0  # the first pull and its 401, on a loaded CI box
RECOVERY_BUDGET = 30.0  # issue 12: from the Secret's creation to a replacement Running
EVICTED = "PullSecretRecovery"
MISSING = "MissingPullSecret"


def pods_of(hook: Any, ns: str, app: str) -> list[dict[str, Any]]:
    return [
        p
        for p in hook.kubectl.items("pods", ns, "-l", f"app={app}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def stuck(pod: dict[str, Any] | None) -> bool:
    return e2e.waiting_reason(pod)[0] in PULL_FAILED


def events(hook: Any, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},reason={reason}"
    return list(hook.kubectl.items("events", ns, "--field-selector", selector))


def namespace(hook: Any, suffix: str) -> str:
    ns = hook.namespace(suffix)
    hook.kubectl.apply(hook.ns(suffix), e2e.service_account(ns))
    return ns


def control_pod(hook: Any, ns: str, image: str | None = None) -> None:
    """A bare pod stuck like the one under test (on `image`, default the private image): its
    Event says recovery looked at `ns`."""
    hook.kubectl.apply(e2e.pod(ns, "control", image or hook.registry.image, always=True))
    e2e.wait_for(
        lambda: stuck(hook.kubectl.get("pod", "control", ns)),
        "control stuck",
        timeout=STUCK_TIMEOUT,
    )


def test_a_stuck_deployment_recovers_within_30_s_of_its_secret(webhook: Any) -> None:
    ns = namespace(webhook, "recover-deploy")
    webhook.kubectl.apply(e2e.deployment(ns, "app", webhook.registry.image, replicas=2))

    def all_stuck() -> list[dict[str, Any]] | None:
        pods = pods_of(webhook, ns, "app")
        return pods if len(pods) == 2 and all(stuck(p) for p in pods) else None

    before = e2e.wait_for(all_stuck, "both replicas in ImagePullBackOff", timeout=STUCK_TIMEOUT)
    assert all(e2e.pull_secrets(p) == [] for p in before)
    old = {p["metadata"]["uid"] for p in before}

    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "private-reg"))
    created = time.monotonic()

    def replaced_and_running() -> list[dict[str, Any]] | None:
        pods = pods_of(webhook, ns, "app")
        fresh = [p for p in pods if p["metadata"]["uid"] not in old]
        running = [p for p in fresh if e2e.waiting_reason(p)[0] == "Running"]
        return fresh if len(running) == 2 and len(pods) == 2 else None

    fresh = e2e.wait_for(
        replaced_and_running, "both replicas replaced and Running", timeout=RECOVERY_BUDGET
    )
    assert time.monotonic() - created <= RECOVERY_BUDGET
    assert all(e2e.pull_secrets(p) == ["private-reg"] for p in fresh)  # injected at admission
    for pod in before:
        (event,) = events(webhook, ns, pod["metadata"]["name"], EVICTED)
        assert "private-reg" in event["message"] and webhook.registry.image in event["message"]
        assert webhook.registry.password not in str(event)


def test_a_bare_stuck_pod_gets_an_event_and_stays(webhook: Any) -> None:
    ns = namespace(webhook, "recover-bare")
    webhook.kubectl.apply(e2e.pod(ns, "bare", webhook.registry.image, always=True))

    def stuck_pod() -> dict[str, Any] | None:
        found = webhook.kubectl.get("pod", "bare", ns)
        return found if stuck(found) else None

    pod = e2e.wait_for(stuck_pod, "the bare pod stuck", timeout=STUCK_TIMEOUT)
    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "private-reg"))
    (event,) = e2e.wait_for(
        lambda: events(webhook, ns, "bare", MISSING), "the MissingPullSecret Event"
    )
    assert event["type"] == "Warning"
    assert "private-reg" in event["message"] and "recreate" in event["message"]
    after = webhook.kubectl.get("pod", "bare", ns)
    assert after is not None and after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert e2e.pull_secrets(after) == []  # a pod's imagePullSecrets cannot change
    assert not events(webhook, ns, "bare", EVICTED)


def test_an_opted_out_pod_is_left_alone(webhook: Any) -> None:
    ns = namespace(webhook, "recover-optout")
    deployment = e2e.deployment(ns, "optout", webhook.registry.image, replicas=1)
    deployment["spec"]["template"]["metadata"]["annotations"] = dict(e2e.OPT_OUT)
    webhook.kubectl.apply(deployment)
    (pod,) = e2e.wait_for(
        lambda: [p for p in pods_of(webhook, ns, "optout") if stuck(p)] or None,
        "the opted-out pod stuck",
        timeout=STUCK_TIMEOUT,
    )
    control_pod(webhook, ns)
    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "private-reg"))
    e2e.wait_for(lambda: events(webhook, ns, "control", MISSING), "recovery to act in the ns")
    (still,) = pods_of(webhook, ns, "optout")
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not events(webhook, ns, pod["metadata"]["name"], EVICTED)
    assert not events(webhook, ns, pod["metadata"]["name"], MISSING)


def test_a_pod_with_a_ready_container_is_left_alone(webhook: Any) -> None:
    """c0 pulls with a secret that serves only its own repository and runs (ready); c1 is on
    another repository of the same registry and gets a 401. A registry-wide secret then
    serves c1, but the pod is serving: it is not touched."""
    ns = namespace(webhook, "recover-ready")
    reg = webhook.registry
    repository = reg.image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    other = f"{reg.host}/psi-e2e-recovery/absent:1"
    only_c0 = e2e.registry_secret(ns, "c0-only", repository, user=reg.user, password=reg.password)
    webhook.kubectl.apply(only_c0)
    deployment = e2e.deployment(ns, "half", reg.image, replicas=1)
    deployment["spec"]["template"]["spec"] = e2e.pod_spec(reg.image, other, always=True)
    webhook.kubectl.apply(deployment)

    def serving_and_stuck() -> dict[str, Any] | None:
        for p in pods_of(webhook, ns, "half"):
            statuses = (p.get("status") or {}).get("containerStatuses") or []
            ready = any(s.get("ready") for s in statuses)
            if ready and stuck(p):
                return p
        return None

    pod = e2e.wait_for(serving_and_stuck, "c0 ready, c1 stuck", timeout=STUCK_TIMEOUT)
    assert e2e.pull_secrets(pod) == ["c0-only"]
    control_pod(webhook, ns, other)  # (c0-only serves the private image: it would run)
    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "whole-registry"))
    e2e.wait_for(lambda: events(webhook, ns, "control", MISSING), "recovery to act in the ns")
    (still,) = pods_of(webhook, ns, "half")
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not events(webhook, ns, pod["metadata"]["name"], EVICTED)


def _repository(image: str) -> str:
    """`host/path` of an image reference (tag and digest cut)."""
    name = image.split("@", 1)[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def test_a_pod_whose_init_container_finished_is_recovered(webhook: Any) -> None:
    """The kubelet reports an init container that exited 0 as ready; the pod, its app
    container stuck, serves nothing and is recovered like any other (it used to be
    skipped as "ready" for ever). The init container runs the webhook's own image, served
    by a secret for that repository only; the app's image needs a registry-wide one."""
    ns = namespace(webhook, "recover-init")
    reg = webhook.registry
    (release,) = webhook.kubectl.items(
        "deployments",
        webhook.release_namespace,
        "-l",
        f"app.kubernetes.io/instance={webhook.release}",
    )
    tool = release["spec"]["template"]["spec"]["containers"][0]["image"]
    webhook.kubectl.apply(
        e2e.registry_secret(
            ns, "tool-only", _repository(tool), user=reg.user, password=reg.password
        )
    )
    deployment = e2e.deployment(ns, "initdone", reg.image, replicas=1)
    deployment["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": tool, "command": ["pullsecret-injector", "--help"]}
    ]
    webhook.kubectl.apply(deployment)

    def init_done_app_stuck() -> dict[str, Any] | None:
        for p in pods_of(webhook, ns, "initdone"):
            inits = (p.get("status") or {}).get("initContainerStatuses") or []
            done = inits and all(
                ((s.get("state") or {}).get("terminated") or {}).get("exitCode") == 0 for s in inits
            )
            if done and stuck(p):
                return p
        return None

    before = e2e.wait_for(init_done_app_stuck, "init done, app stuck", timeout=STUCK_TIMEOUT)
    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "private-reg"))

    def replaced_and_running() -> dict[str, Any] | None:
        pods = pods_of(webhook, ns, "initdone")
        fresh = [p for p in pods if p["metadata"]["uid"] != before["metadata"]["uid"]]
        running = [p for p in fresh if e2e.waiting_reason(p)[0] == "Running"]
        return running[0] if running and len(pods) == 1 else None

    fresh = e2e.wait_for(replaced_and_running, "the replacement Running", timeout=RECOVERY_BUDGET)
    assert "private-reg" in e2e.pull_secrets(fresh)
    (event,) = events(webhook, ns, before["metadata"]["name"], EVICTED)
    assert "private-reg" in event["message"]


def test_a_stuck_job_pod_gets_an_event_and_its_job_keeps_the_attempt(webhook: Any) -> None:
    """The Job controller counts a deleted pod as a failed attempt: an eviction would fail
    a Job with backoffLimit 0. Its pod is reported (Event), never evicted."""
    ns = namespace(webhook, "recover-job")
    spec = {**e2e.pod_spec(webhook.registry.image, always=True), "restartPolicy": "Never"}
    webhook.kubectl.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once", "namespace": ns},
            "spec": {
                "backoffLimit": 0,
                "template": {"metadata": {"labels": {"app": "once"}}, "spec": spec},
            },
        }
    )
    (pod,) = e2e.wait_for(
        lambda: [p for p in pods_of(webhook, ns, "once") if stuck(p)] or None,
        "the Job's pod stuck",
        timeout=STUCK_TIMEOUT,
    )
    webhook.kubectl.apply(e2e.real_secret(webhook, ns, "private-reg"))
    name = pod["metadata"]["name"]
    (event,) = e2e.wait_for(lambda: events(webhook, ns, name, MISSING), "the Event")
    assert "failed attempt" in event["message"] and "private-reg" in event["message"]
    assert not events(webhook, ns, name, EVICTED)
    job = webhook.kubectl.get("job", "once", ns)
    assert job is not None and not (job.get("status") or {}).get("failed")
    (still,) = pods_of(webhook, ns, "once")
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
