"""End-to-end suite against a real cluster with the chart installed: `pytest -m e2e tests/e2e`
(scripts/e2e installs the chart from a private registry, then runs this).

Environment:
  KUBECONFIG                    the cluster (required)
  PSI_E2E_RELEASE               the Helm release (default psi)
  PSI_E2E_RELEASE_NAMESPACE     its namespace (default pullsecret-injector): the webhook's
                                source namespace for project/cluster registries
  PSI_E2E_REGISTRY, PSI_E2E_REGISTRY_USER, PSI_E2E_REGISTRY_PASSWORD
                                a private registry the nodes reach, and its credentials
  PSI_E2E_PRIVATE_IMAGE         an image there that runs (`sleep`) and is pulled only with them
All required: a missing one fails the suite rather than skipping the tests that need it.

Every namespace the suite makes carries RUN_LABEL=<run id>; the session deletes them at the
end. tests/e2e/test_uninstall.py runs last: it uninstalls the release.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from e2e_support import RUN_LABEL, Kubectl, Registry, Webhook

REQUIRED = (
    "KUBECONFIG",
    "PSI_E2E_REGISTRY",
    "PSI_E2E_REGISTRY_USER",
    "PSI_E2E_REGISTRY_PASSWORD",
    "PSI_E2E_PRIVATE_IMAGE",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The uninstall test last, whatever order the files were named in."""
    items.sort(key=lambda item: item.path.name == "test_uninstall.py")


@pytest.fixture(scope="session")
def webhook() -> Iterator[Webhook]:
    """The installed release, with the run's namespaces deleted after the session."""
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"the e2e suite needs {', '.join(missing)} (see scripts/e2e)", pytrace=False)
    if shutil.which("kubectl") is None or shutil.which("helm") is None:
        pytest.fail("kubectl and helm must be on PATH (scripts/e2e puts them there)", False)
    kubectl = Kubectl(os.environ["KUBECONFIG"])
    hook = Webhook(
        run=uuid.uuid4().hex[:8],
        kubectl=kubectl,
        release=os.environ.get("PSI_E2E_RELEASE", "psi"),
        release_namespace=os.environ.get("PSI_E2E_RELEASE_NAMESPACE", "pullsecret-injector"),
        registry=Registry(
            os.environ["PSI_E2E_REGISTRY"],
            os.environ["PSI_E2E_REGISTRY_USER"],
            os.environ["PSI_E2E_REGISTRY_PASSWORD"],
            os.environ["PSI_E2E_PRIVATE_IMAGE"],
        ),
    )
    ready = kubectl(
        "get", "deployment", "-n", hook.release_namespace,
        "-l", f"app.kubernetes.io/instance={hook.release}",
        "-o", "jsonpath={.items[0].status.readyReplicas}",
        check=False,
    )  # fmt: skip
    if ready.returncode != 0 or not ready.stdout.strip():
        pytest.fail(
            f"no ready release {hook.release} in {hook.release_namespace}: install the chart "
            f"first (scripts/e2e)\n{ready.stderr}",
            pytrace=False,
        )
    try:
        yield hook
    finally:
        # check=False: a failed cleanup must not hide the failure that led here.
        kubectl("delete", "namespace", "-l", f"{RUN_LABEL}={hook.run}", "--wait=false", check=False)
        kubectl(
            "delete", "secret", "-n", hook.release_namespace, "-l", f"{RUN_LABEL}={hook.run}",
            check=False,
        )  # fmt: skip
