"""`helm upgrade` of the release while pods are being created: does every pod created during
the rollout leave admission with its secret? (The chart's failurePolicy is Ignore: an
admission lost while a replica goes away is a pod admitted without its secrets.)
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
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


def test_every_pod_created_during_an_upgrade_gets_its_secret(webhook: Webhook) -> None:
    ns = webhook.namespace("upgrade")
    host = "upgrade.example.com"
    webhook.kubectl.apply(
        webhook.ns("upgrade"), service_account(ns), registry_secret(ns, "reg", host)
    )
    wait_for(
        lambda: webhook.kubectl.apply(pod(ns, "probe", f"{host}/a:1"), dry_run=True)[0]["spec"].get(
            "imagePullSecrets"
        ),
        "the webhook to know the namespace",
    )
    env = {**os.environ, "KUBECONFIG": webhook.kubectl.env["KUBECONFIG"]}
    with PodLoop(webhook, ns, f"{host}/app:1") as loop:
        time.sleep(3)  # pods before the upgrade too
        started = time.monotonic()
        # A changed value that changes the pod template: a rolling restart of every replica.
        upgrade = subprocess.run(
            [
                "helm", "upgrade", webhook.release, str(ROOT / "charts/pullsecret-injector"),
                "-n", webhook.release_namespace, "--reuse-values",
                "--set", "podAnnotations.psi-e2e/upgraded=" + webhook.run,
                "--wait", "--timeout", "5m",
            ],
            env=env, capture_output=True, text=True, timeout=360, check=False,
        )  # fmt: skip
        finished = time.monotonic()
        time.sleep(3)  # and after it
    assert upgrade.returncode == 0, upgrade.stderr
    during = [name for t, name in loop.created if started <= t <= finished]
    assert len(during) >= 10, f"only {len(during)} pods created during the upgrade"
    stored = {p["metadata"]["name"]: p for p in webhook.kubectl.items("pods", ns)}
    missing = sorted(
        (name for _, name in loop.created if not stored[name]["spec"].get("imagePullSecrets")),
        key=lambda n: int(n.split("-")[1]),
    )
    print(
        f"upgrade took {finished - started:.1f}s; pods created: {len(loop.created)} "
        f"({len(during)} during the upgrade); without their secret: {len(missing)} {missing}; "
        f"create errors: {len(loop.errors)}"
    )
    assert loop.errors == []  # failurePolicy Ignore: no pod creation is refused
    assert missing == [], f"{len(missing)} of {len(loop.created)} pods lack their secret"
