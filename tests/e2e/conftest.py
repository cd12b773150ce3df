"""End-to-end suite against a real cluster: runs only with KUBECONFIG set and `-m e2e`.

Options (environment):
  KUBECONFIG         the cluster (required)
  PSI_E2E_PORT       the webhook's HTTPS port on this host (default: a free port)
  PSI_E2E_HOST       the address the API server uses to reach this host (default 127.0.0.1:
                     an API server on this host; for kind, the host's address on the kind
                     docker network, e.g. 172.18.0.1)

The `webhook` fixture runs `serve` on this host and registers it with a webhook
configuration that selects only the suite's namespaces; at the end it deletes that
configuration first, then the run's namespaces, then stops `serve`.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from e2e_support import HERE, RUN_LABEL, Kubectl, Webhook, is_ip
from serve_process import free_port, serve_env, spawn


def _skip_reason(config: pytest.Config) -> str | None:
    markexpr = " ".join(str(config.getoption("markexpr") or "").split())
    if "e2e" not in markexpr or "not e2e" in markexpr:
        return "end-to-end tests run only with `-m e2e` and KUBECONFIG set (they need a cluster)"
    if not os.environ.get("KUBECONFIG"):
        return (
            "KUBECONFIG is not set: the end-to-end suite needs a cluster (see docs/live-state.md)"
        )
    if shutil.which("kubectl") is None:
        return "kubectl is not on PATH"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason(config)
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """The webhook running on this host, registered with the cluster; all cleaned up after."""
    from webhook.serve import certs  # noqa: PLC0415

    kubeconfig = os.environ["KUBECONFIG"]
    kubectl = Kubectl(kubeconfig)
    host = os.environ.get("PSI_E2E_HOST", "127.0.0.1")
    run = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("e2e")
    bundle = certs.generate(
        ["localhost"] + ([] if is_ip(host) else [host]),
        ["127.0.0.1"] + ([host] if is_ip(host) and host != "127.0.0.1" else []),
    )
    paths = certs.write_bundle(bundle, tmp / "certs")
    serve = spawn(
        tmp / "webhook.log",
        "--kubeconfig", kubeconfig,
        "--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"]),
        "--release-namespace", f"psi-e2e-{run}-release",
        host="127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0",
        port=int(os.environ.get("PSI_E2E_PORT") or free_port()),
        env=serve_env(),
    )  # fmt: skip
    config_name = f"psi-e2e-{run}"
    hook = Webhook(run, kubectl, f"https://{host}:{serve.port}/mutate", serve.ops_url)
    try:
        serve.wait_ready(60, interval=0.5, probe_timeout=2)
        kubectl.apply(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": config_name, "labels": {RUN_LABEL: run}},
                "webhooks": [
                    {
                        "name": "pods.pullsecret-injector.io",
                        "admissionReviewVersions": ["v1", "v1beta1"],
                        "sideEffects": "NoneOnDryRun",
                        # Fail, not the product's Ignore: an unreachable webhook must fail
                        # the suite, not pass it silently with pods left unpatched.
                        "failurePolicy": "Fail",
                        "reinvocationPolicy": "IfNeeded",
                        "timeoutSeconds": 10,
                        "clientConfig": {
                            "url": hook.url,
                            "caBundle": base64.b64encode(bundle.ca_cert_pem).decode(),
                        },
                        "rules": [
                            {
                                "operations": ["CREATE"],
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["pods"],
                                "scope": "Namespaced",
                            }
                        ],
                        # Only the suite's namespaces: the rest of the cluster is untouched.
                        "namespaceSelector": {"matchLabels": {RUN_LABEL: run}},
                    }
                ],
            }
        )
        yield hook
    finally:
        # The webhook configuration first: nothing may call a webhook that is going away.
        # (check=False: a failed cleanup must not hide the failure that led here.)
        kubectl(
            "delete", "mutatingwebhookconfiguration", config_name, "--ignore-not-found", check=False
        )
        kubectl("delete", "namespace", "-l", f"{RUN_LABEL}={run}", "--wait=false", check=False)
        serve.stop(20)
