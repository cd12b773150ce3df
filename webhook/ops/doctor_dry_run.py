"""`doctor`'s dry run: a server-side dry-run Pod (admitted, never persisted) in a served
namespace, with an image one of its registry secrets serves, must come back patched."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from webhook.core.injection import decide
from webhook.core.model import RegistrySecret
from webhook.ops.doctor_model import (
    Check,
    Install,
    Options,
    Status,
    namespace_state,
)
from webhook.ops.explain import label_selector

if TYPE_CHECKING:
    from webhook.cluster.apiclient import RawApi


def probe_image(secret: RegistrySecret) -> str | None:
    """An image reference that the secret's first matchable key serves."""
    for key in secret.keys:
        text = key.key.split("://", 1)[-1].rstrip("/").replace("*", "doctor")
        if text in ("index.docker.io/v1", "index.docker.io", "docker.io", "registry-1.docker.io"):
            return "docker.io/pullsecret-injector/doctor-probe:0"
        if text and key.matchable and not key.legacy:  # a legacy key may hold a glob class
            return f"{text}/pullsecret-injector-doctor-probe:0"
    return None


def _dry_run_targets(api: RawApi, install: Install) -> Iterator[tuple[str, str, str]]:
    """(namespace, secret, image), one per served, active namespace whose registry secret
    the webhook would inject for the image, as the webhook itself decides."""
    from webhook.cluster.livestate import iter_registry_secrets  # noqa: PLC0415

    assert install.hook is not None
    selector = label_selector(install.hook.get("namespaceSelector"))
    served: dict[str, bool] = {}
    for secret in iter_registry_secrets(api):
        ns = secret.namespace
        if not secret.usable or ns == install.namespace or served.get(ns) is False:
            continue
        if ns not in served:
            labels, active = namespace_state(api, ns)
            served[ns] = active and selector.matches(labels)
            if not served[ns]:
                continue
        image = probe_image(secret)
        if image is None:
            continue
        decision = decide(_probe_pod(image), ns, {secret.name: secret}, install.policy)
        if secret.name in decision.add:
            served[ns] = False  # one try per namespace
            yield ns, secret.name, image


PROBE_LABELS = {"app.kubernetes.io/name": "pullsecret-injector-doctor"}


def _probe_pod(image: str) -> dict[str, Any]:
    """The dry-run pod: meets the restricted Pod Security Standard and quotas that demand
    limits, so that only the webhook decides what comes back."""
    limits = {"cpu": "10m", "memory": "16Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "pullsecret-injector-doctor-", "labels": dict(PROBE_LABELS)},
        "spec": {
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "resources": {"requests": limits, "limits": limits},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def check_dry_run(api: RawApi, install: Install, opts: Options) -> Check:
    name = "dry-run"
    if not opts.dry_run:
        return Check(name, Status.WARN, "skipped (--no-dry-run)", "run doctor without --no-dry-run")
    assert install.hook is not None
    if not label_selector(install.hook.get("objectSelector")).matches(PROBE_LABELS):
        return Check(
            name, Status.WARN,
            f"not run: {install.config_name}'s objectSelector does not select the probe pod",
            "try a pod your objectSelector selects with kubectl apply --dry-run=server",
        )  # fmt: skip
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    from webhook.cluster.livestate import describe  # noqa: PLC0415

    refused: list[str] = []
    for ns, secret, image in _dry_run_targets(api, install):
        try:
            pod = api.request(
                "POST",
                f"/api/v1/namespaces/{ns}/pods",
                query={"dryRun": "All"},
                body=_probe_pod(image),
            )
        except ApiException as exc:
            # Refused by RBAC, a policy engine, a quota...: another namespace may take it.
            refused.append(f"{ns}: {describe(exc)}")
            if len(refused) < _DRY_RUN_TRIES:
                continue
            return Check(
                name, Status.WARN,
                "not run: the API server refused the dry-run pod in " + "; ".join(refused),
                "let this identity create pods (dry run) in a served namespace, or make one "
                "admit a plain pod",
            )  # fmt: skip
        return _dry_run_verdict(install, ns, secret, image, pod)
    if refused:
        return Check(
            name, Status.WARN,
            "not run: the API server refused the dry-run pod in " + "; ".join(refused),
            "let this identity create pods (dry run) in a served namespace",
        )  # fmt: skip
    return Check(
        name,
        Status.WARN,
        "not run: no namespace the webhook serves holds a usable registry secret",
        "create a registry secret in a served namespace (kubectl create secret "
        "docker-registry ...) and run doctor again",
    )


_DRY_RUN_TRIES = 3


def _dry_run_verdict(
    install: Install, ns: str, secret: str, image: str, pod: Mapping[str, Any]
) -> Check:
    name = "dry-run"
    got = [e.get("name") for e in (pod.get("spec") or {}).get("imagePullSecrets") or ()]
    if secret in got:
        return Check(
            name,
            Status.PASS,
            f"a server-side dry-run pod in {ns} with image {image} got {secret}",
        )
    return Check(
        name,
        Status.FAIL,
        f"a server-side dry-run pod in {ns} with image {image} did not get {secret} "
        f"(got: {', '.join(map(str, got)) or 'none'}): the API server did not call the "
        "webhook, or the webhook failed open",
        f"see the endpoints and serving-certificate checks, then kubectl -n {install.namespace} "
        f"logs deploy/{install.service_name}",
    )
