"""`helm upgrade` and `kubectl rollout restart` of the release while pods are being created:
does every pod created during the rollout leave admission with its secret? (The chart's
failurePolicy is Ignore: an admission lost while a replica goes away is a pod admitted
without its secrets.)
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_support import Webhook, pod, registry_secret, service_account, wait_for
from helpers import ROOT

pytestmark = pytest.mark.e2e

NOWHERE = "psi-e2e-no-such-node"  # pods bound here are stored but never run by any kubelet


class PodLoop:
    """Creates pods one by one, as fast as kubectl allows, until stopped."""

    def __init__(self, hook: Webhook, ns: str, image: str) -> None:
        self.hook, self.ns, self.image = hook, ns, image
        self.created: list[tuple[float, str]] = []  # (time, name) of every stored pod
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            name = f"loop-{n}"
            manifest: dict[str, Any] = pod(self.ns, name, self.image)
            manifest["spec"]["nodeName"] = NOWHERE
            out = self.hook.kubectl("create", "-f", "-", input=manifest, check=False)
            if out.returncode == 0:
                self.created.append((time.monotonic(), name))
            else:
                self.errors.append(out.stderr.strip())

    def __enter__(self) -> PodLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def pods_created_during(
    webhook: Webhook, suffix: str, disruption: Callable[[dict[str, str]], list[str]]
) -> None:
    """Creates pods in a loop before, during and after `disruption` (commands run one after
    the other); every one of them must have its secret."""
    ns = webhook.namespace(suffix)
    host = f"{suffix}.example.com"
    webhook.kubectl.apply(webhook.ns(suffix), service_account(ns), registry_secret(ns, "reg", host))
    wait_for(
        lambda: webhook.kubectl.apply(pod(ns, "probe", f"{host}/a:1"), dry_run=True)[0]["spec"].get(
            "imagePullSecrets"
        ),
        "the webhook to know the namespace",
    )
    env = {**os.environ, "KUBECONFIG": webhook.kubectl.env["KUBECONFIG"]}
    with PodLoop(webhook, ns, f"{host}/app:1") as loop:
        time.sleep(3)  # pods before the disruption too
        started = time.monotonic()
        for command in disruption(env):
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=360, check=False
            )
            assert done.returncode == 0, f"{command}: {done.stderr}"
        finished = time.monotonic()
        time.sleep(3)  # and after it
    during = [name for t, name in loop.created if started <= t <= finished]
    assert len(during) >= 10, f"only {len(during)} pods created during the {suffix}"
    stored = {p["metadata"]["name"]: p for p in webhook.kubectl.items("pods", ns)}
    missing = sorted(
        (name for _, name in loop.created if not stored[name]["spec"].get("imagePullSecrets")),
        key=lambda n: int(n.split("-")[1]),
    )
    print(
        f"{suffix} took {finished - started:.1f}s; pods created: {len(loop.created)} "
        f"({len(during)} during the {suffix}); without their secret: {len(missing)} {missing}; "
        f"create errors: {len(loop.errors)}"
    )
    assert loop.errors == []  # failurePolicy Ignore: no pod creation is refused
    assert missing == [], f"{len(missing)} of {len(loop.created)} pods lack their secret"


def test_every_pod_created_during_an_upgrade_gets_its_secret(webhook: Webhook) -> None:
    """A changed value that changes the pod template: a rolling restart of every replica."""
    chart = str(ROOT / "charts/pullsecret-injector")
    pods_created_during(
        webhook,
        "upgrade",
        lambda env: [
            ["helm", "upgrade", webhook.release, chart, "-n", webhook.release_namespace,
             "--reuse-values", "--set-string", "podAnnotations.psi-e2e/upgraded=" + webhook.run,
             "--wait", "--timeout", "5m"],
        ],
    )  # fmt: skip


def test_every_pod_created_during_a_rollout_restart_gets_its_secret(webhook: Webhook) -> None:
    deployment = webhook.kubectl(
        "get", "deployment", "-n", webhook.release_namespace, "-o", "name",
        "-l", f"app.kubernetes.io/instance={webhook.release}",
    ).stdout.strip()  # fmt: skip
    assert deployment, "the release's Deployment"
    ns = ["-n", webhook.release_namespace]
    pods_created_during(
        webhook,
        "restart",
        lambda env: [
            ["kubectl", *ns, "rollout", "restart", deployment],
            ["kubectl", *ns, "rollout", "status", deployment, "--timeout", "5m"],
        ],
    )
