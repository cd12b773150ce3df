"""The live cluster's registry Secrets and Namespaces, read once into a Store (for the CLI).

`mutate --kubeconfig`, `explain` and `doctor` answer from the cluster as it is now, with
one paginated list per collection instead of the watcher's list+watch. Every Secret is
reduced as the watchers reduce it (`secret_views.reduce_secret`: namespace, name,
type, labels, our annotations and the registry keys) the moment its page is parsed, and the
page is dropped: no password, token or `auth` value is kept, printed or logged. A
credential never has to be exported to a file to ask what a pod would get.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webhook.cluster.apiclient import RawApi, api_status, load_api_client
from webhook.cluster.secret_views import ParseCache, reduce_secret
from webhook.cluster.store import Store
from webhook.core.model import RegistrySecret, string_map
from webhook.kubelet.dockerconfig import REGISTRY_SECRET_TYPES

log = logging.getLogger(__name__)

_PAGE = 500
NAME_LABEL = "kubernetes.io/metadata.name"
_TIMEOUT = (5.0, 30.0)


class ClusterAccessError(RuntimeError):
    """The cluster cannot be reached or read: a message fit for the command line."""


def connect(kubeconfig: Path | None, context: str | None) -> RawApi:
    """A JSON client from --kubeconfig/--context, KUBECONFIG, ~/.kube/config or in-cluster."""
    try:
        return RawApi(load_api_client(kubeconfig, context))
    except (ConfigException, OSError) as exc:
        raise ClusterAccessError(f"cluster access: {exc}") from exc


def context_namespace(kubeconfig: Path | None, context: str | None) -> str:
    """The namespace of the kubeconfig's context (current, or `context`), as kubectl picks
    it; `default` when it names none or there is no kubeconfig (in-cluster)."""
    from kubernetes import config as k8s_config  # noqa: PLC0415

    config_file = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG")
    if not config_file:
        default = Path("~/.kube/config").expanduser()
        config_file = str(default) if default.is_file() else None
    if not config_file:
        return "default"
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise ClusterAccessError(f"cluster access: {exc}") from exc
    chosen = (
        next((c for c in contexts or () if c.get("name") == context), None) if context else current
    )
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def describe(exc: BaseException) -> str:
    """An API error for a person: status and the Status message, never a whole body."""
    if isinstance(exc, ApiException):
        message = str(api_status(exc).get("message") or "")
        return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"


def list_items(
    api: RawApi, path: str, query: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a (paginated) list."""
    token = ""
    while True:
        params = {"limit": str(_PAGE), **(query or {})}
        if token:
            params["continue"] = token
        page = api.request("GET", path, query=params, timeout=_TIMEOUT)
        items = page.get("items")
        yield from (i for i in items or () if isinstance(i, dict))
        meta = page.get("metadata")
        token = str(meta.get("continue") or "") if isinstance(meta, dict) else ""
        if not token:
            return


def iter_registry_secrets(api: RawApi, namespace: str | None = None) -> Iterator[RegistrySecret]:
    """The registry Secrets of one namespace (or all), each reduced to its registry keys by
    the watcher's own reduction the moment its page is parsed (a parser fault becomes a
    secret that is never injected, as in the watcher); the page's copy is cleared."""
    path = f"/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"
    cache = ParseCache()
    for secret_type in REGISTRY_SECRET_TYPES:
        for obj in list_items(api, path, {"fieldSelector": f"type={secret_type}"}):
            secret = reduce_secret(obj, cache)
            obj.clear()
            if secret is not None:
                yield secret


def registry_secrets(api: RawApi, namespace: str | None = None) -> list[RegistrySecret]:
    """iter_registry_secrets, as a list."""
    return list(iter_registry_secrets(api, namespace))


def namespace_labels(
    api: RawApi, namespace: str | None = None, assumed: set[str] | None = None
) -> dict[str, dict[str, str]]:
    """Namespace name -> labels, of one namespace or all.

    One namespace an identity may not read (a namespace-scoped user's) gets the label every
    namespace carries, its name: enough for a namespaceSelector that excludes by name. Its
    name goes into `assumed`: its other labels (an opt-out among them) are unknown.
    """
    if namespace is not None:
        try:
            obj = api.request("GET", f"/api/v1/namespaces/{namespace}", timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status != 403:
                raise
            if assumed is not None:
                assumed.add(namespace)
            return {namespace: {NAME_LABEL: namespace}}
        meta = obj.get("metadata")
        return {namespace: string_map(meta.get("labels") if isinstance(meta, dict) else None)}
    out: dict[str, dict[str, str]] = {}
    for obj in list_items(api, "/api/v1/namespaces"):
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            out[meta["name"]] = string_map(meta.get("labels"))
    return out


def fill_store(store: Store, api: RawApi, namespaces_read: Iterable[str] | None = None) -> set[str]:
    """Read the registry Secrets and Namespaces into `store`: of the given namespaces only
    (what a namespace-scoped identity may read), or of the whole cluster (None). Returns the
    namespaces whose labels are assumed (their object could not be read: namespace_labels)."""
    scope = None if namespaces_read is None else sorted(set(namespaces_read))
    namespaces: dict[str, dict[str, str]] = {}
    secrets: list[RegistrySecret] = []
    assumed: set[str] = set()
    try:
        for ns in scope if scope is not None else [None]:
            namespaces.update(namespace_labels(api, ns, assumed))
            secrets.extend(registry_secrets(api, ns))
    except ApiException as exc:
        raise ClusterAccessError(
            f"reading registry secrets and namespaces: {describe(exc)}"
        ) from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, timed out, TLS
        raise ClusterAccessError(f"reaching the API server: {exc}") from exc
    for secret in secrets:
        namespaces.setdefault(secret.namespace, {})
    store.replace_namespaces(namespaces)
    store.replace_secrets(secrets)
    store.mark_synced("secrets")
    store.mark_synced("namespaces")
    log.debug(
        "cluster state read",
        extra={"secret_count": len(secrets), "namespace_count": len(namespaces), "scope": scope},
    )
    return assumed
