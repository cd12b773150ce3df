"""`doctor`'s findings: the Install it checks, each Check's verdict, and the small reads
the checks share (webhook/ops/doctor.py runs them; doctor_checks.py and
doctor_dry_run.py are the checks)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from webhook.core.injection import Policy
from webhook.core.model import string_map

if TYPE_CHECKING:
    from webhook.cluster.apiclient import RawApi

WEBHOOK_NAME = "inject.pullsecret-injector.io"
SELECTOR_ANNOTATION = "pullsecret-injector.io/namespace-selector"  # = replication's
REPLICATION_REASONS = frozenset(
    {"InvalidNamespaceSelector", "UnusableRegistrySecret", "CopyBlocked", "CopyNameConflict"}
)
CERT_WARN_DAYS = 30
SYNC_WARN_SECONDS = 300.0  # a healthy watch hears an event or bookmark every minute or so
SYNC_FAIL_SECONDS = 900.0
SYNC_METRIC = re.compile(
    r'^pullsecret_injector_last_sync_age_seconds\{resource="(\w+)"\}\s+([0-9.eE+-]+)\s*$', re.M
)

UPGRADE = "helm upgrade the release to restore the chart's objects"


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check status, not a password
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    release: str = "psi"
    namespace: str = "pullsecret-injector"
    release_given: bool = False  # --release given: no discovery of another release
    connect: tuple[str, int] | None = None  # HOST:PORT reaching the webhook's HTTPS port
    timeout: float = 3.0
    dry_run: bool = True


@dataclass(slots=True)
class Install:
    """What doctor found of the release, filled in as the checks go."""

    release: str
    namespace: str
    config: dict[str, Any] | None = None
    hook: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None
    endpoints: list[tuple[str, int]] = field(default_factory=list)

    @property
    def config_name(self) -> str:
        return str((self.config or {}).get("metadata", {}).get("name", "?"))

    @property
    def service_ref(self) -> dict[str, Any]:
        ref = ((self.hook or {}).get("clientConfig") or {}).get("service")
        return ref if isinstance(ref, dict) else {}

    @property
    def service_name(self) -> str:
        return str(self.service_ref.get("name", ""))

    @property
    def dns_name(self) -> str:
        """The name the API server dials and verifies: <service>.<namespace>.svc."""
        return f"{self.service_name}.{self.namespace}.svc"

    def _container(self) -> dict[str, Any]:
        spec = ((self.deployment or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        containers = spec.get("containers") or [{}]
        first: dict[str, Any] = containers[0]
        return first

    @property
    def service_account(self) -> str:
        spec = ((self.deployment or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        return str(spec.get("serviceAccountName") or "default")

    @property
    def replication(self) -> bool:
        for env in self._container().get("env") or ():
            if env.get("name") == "PSI_REPLICATION_ENABLED":
                return str(env.get("value", "true")).lower() not in ("false", "0", "no")
        return True

    @property
    def recovery(self) -> str:
        """The stuck-pod recovery mode the webhook runs with ("" when off)."""
        modes = self._args("--recovery-mode")
        mode = modes[-1] if modes else "evict"  # serve's default
        return "" if mode == "off" else mode

    def _args(self, flag: str) -> list[str]:
        """The values of `--flag=value` arguments of the webhook container, in order."""
        prefix = f"{flag}="
        return [
            str(a)[len(prefix) :]
            for a in self._container().get("args") or ()
            if str(a).startswith(prefix)
        ]

    @property
    def source_namespaces(self) -> list[str]:
        return self._args("--source-namespace") or [self.namespace]

    @property
    def secret_selector(self) -> str | None:
        """config.secretSelector, as the webhook was started with it."""
        selectors = self._args("--secret-selector")
        return selectors[-1] if selectors else None

    @property
    def private_registries(self) -> tuple[str, ...]:
        return tuple(self._args("--private-registry"))

    @property
    def policy(self) -> Policy:
        """The webhook's own secret selector and private registries, as it decides."""
        return Policy.build(self.secret_selector, self.private_registries)


def find_deployment(api: RawApi, install: Install) -> None:
    """The release's webhook Deployment into `install` (None when none can be read)."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    selector = f"app.kubernetes.io/instance={install.release},app.kubernetes.io/component=webhook"
    try:
        body = api.request(
            "GET",
            f"/apis/apps/v1/namespaces/{install.namespace}/deployments",
            query={"labelSelector": selector},
        )
    except ApiException:
        install.deployment = None
        return
    items = [d for d in body.get("items") or () if isinstance(d, dict)]
    install.deployment = items[0] if items else None


class ForbiddenError(Exception):
    """A request this identity may not make: the check warns instead of failing."""


def label_value(obj: Mapping[str, Any], key: str) -> str:
    return str(string_map((obj.get("metadata") or {}).get("labels")).get(key, ""))


def namespace_labels(api: RawApi, name: str) -> dict[str, str]:
    return namespace_state(api, name)[0]


def namespace_state(api: RawApi, name: str) -> tuple[dict[str, str], bool]:
    """(labels, active) of a namespace; one missing has only its name label."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        obj = api.request("GET", f"/api/v1/namespaces/{name}")
    except ApiException as exc:
        if exc.status != 404:
            raise
        return {"kubernetes.io/metadata.name": name}, False
    active = (obj.get("status") or {}).get("phase", "Active") == "Active"
    return string_map((obj.get("metadata") or {}).get("labels")), active


def service_port(service: Mapping[str, Any], port: Any) -> dict[str, Any] | None:
    for p in (service.get("spec") or {}).get("ports") or ():
        if p.get("port") == port:
            found: dict[str, Any] = p
            return found
    return None
