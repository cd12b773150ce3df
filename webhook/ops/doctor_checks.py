"""`doctor`'s checks of an install, but the dry run (doctor_dry_run.py): each returns one
Check; a request it may not make raises (doctor.py turns that into a WARN)."""

from __future__ import annotations

import base64
import socket
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from webhook.kubelet.labels import SelectorError, parse_selector
from webhook.ops.doctor_model import (
    CERT_WARN_DAYS,
    REPLICATION_REASONS,
    SELECTOR_ANNOTATION,
    SYNC_FAIL_SECONDS,
    SYNC_METRIC,
    SYNC_WARN_SECONDS,
    UPGRADE,
    WEBHOOK_NAME,
    Check,
    ForbiddenError,
    Install,
    Options,
    Status,
    label_value,
    namespace_labels,
    service_port,
)
from webhook.ops.explain import PART_OF_SELECTOR, WEBHOOK_CONFIGS, label_selector

if TYPE_CHECKING:
    from webhook.cluster.apiclient import RawApi


def check_configuration(api: RawApi, opts: Options, install: Install) -> Check:
    name = "webhook-configuration"
    body = api.request("GET", WEBHOOK_CONFIGS, query={"labelSelector": PART_OF_SELECTOR})
    configs = [c for c in body.get("items") or () if isinstance(c, dict)]
    mine = [c for c in configs if label_value(c, "app.kubernetes.io/instance") == opts.release]
    discovered = ""
    if not mine and len(configs) == 1 and not opts.release_given:
        mine = configs
        found = label_value(configs[0], "app.kubernetes.io/instance")
        discovered = f" (release {found!r} found by its labels; --release {opts.release} has none)"
        install.release = found
    if not mine:
        others = sorted(label_value(c, "app.kubernetes.io/instance") for c in configs)
        return Check(
            name,
            Status.FAIL,
            f"no MutatingWebhookConfiguration of release {opts.release!r}"
            + (f" (found releases: {', '.join(others)})" if others else ""),
            f"install the chart: helm install {opts.release} charts/pullsecret-injector "
            f"-n {opts.namespace} --create-namespace (or pass --release)",
        )
    install.config = mine[0]
    hooks = [w for w in mine[0].get("webhooks") or () if isinstance(w, dict)]
    hook = next((w for w in hooks if w.get("name") == WEBHOOK_NAME), hooks[0] if hooks else None)
    if hook is None:
        return Check(
            name, Status.FAIL, f"{install.config_name} has no webhooks",
            f"helm upgrade {install.release} to restore it",
        )  # fmt: skip
    install.hook = hook
    ref = install.service_ref
    if not ref:
        return Check(
            name,
            Status.FAIL,
            f"{install.config_name}: webhook {hook.get('name')} calls a URL, not the Service",
            f"helm upgrade {install.release}: the chart always calls its Service",
        )
    install.namespace = str(ref.get("namespace") or opts.namespace)
    return Check(
        name,
        Status.PASS,
        f"{install.config_name}{discovered}: {hook.get('name')} calls "
        f"{install.namespace}/{ref.get('name')}:{ref.get('port', 443)}{ref.get('path', '')} "
        f"(failurePolicy {hook.get('failurePolicy', 'Fail')}, "
        f"timeout {hook.get('timeoutSeconds', 10)}s)",
    )


def check_namespace_selector(api: RawApi, install: Install) -> Check:
    name = "namespace-selector"
    assert install.hook is not None
    try:
        selector = label_selector(install.hook.get("namespaceSelector"))
    except SelectorError as exc:
        return Check(name, Status.FAIL, f"invalid namespaceSelector: {exc}", UPGRADE)
    selected = []
    for ns in sorted({"kube-system", install.namespace}):
        labels = namespace_labels(api, ns)
        if selector.matches(labels):
            selected.append(ns)
    if selected:
        return Check(
            name,
            Status.FAIL,
            f"the namespaceSelector ({selector.text or 'everything'}) selects "
            f"{', '.join(selected)}: the webhook's own pods could wait on themselves",
            f"helm upgrade {install.release}: the chart excludes kube-system and the release "
            f"namespace (someone edited {install.config_name})",
        )
    return Check(
        name,
        Status.PASS,
        f"kube-system and {install.namespace} are excluded ({selector.text})",
    )


def check_endpoints(api: RawApi, install: Install) -> Check:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    name = "endpoints"
    svc_name, ns = install.service_name, install.namespace
    try:
        install.service = api.request("GET", f"/api/v1/namespaces/{ns}/services/{svc_name}")
    except ApiException as exc:
        if exc.status != 404:
            raise
        return Check(
            name, Status.FAIL,
            f"the Service {ns}/{svc_name} that {install.config_name} calls does not exist",
            UPGRADE,
        )  # fmt: skip
    port = service_port(install.service, install.service_ref.get("port", 443))
    if port is None:
        return Check(
            name, Status.FAIL,
            f"Service {ns}/{svc_name} has no port {install.service_ref.get('port', 443)}",
            UPGRADE,
        )  # fmt: skip
    slices = api.request(
        "GET",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        query={"labelSelector": f"kubernetes.io/service-name={svc_name}"},
    )
    ready: list[tuple[str, int]] = []
    not_ready = 0
    for sl in slices.get("items") or ():
        ports = [
            p.get("port")
            for p in sl.get("ports") or ()
            if p.get("name", "") == port.get("name", "")
        ]
        for ep in sl.get("endpoints") or ():
            if (ep.get("conditions") or {}).get("ready") is False:
                not_ready += 1
                continue
            ready.extend((str(a), int(p)) for a in ep.get("addresses") or () for p in ports if p)
    install.endpoints = ready
    if not ready:
        return Check(
            name,
            Status.FAIL,
            f"Service {ns}/{svc_name} has no ready endpoint"
            + (f" ({not_ready} not ready)" if not_ready else ""),
            f"kubectl -n {ns} get pods -l app.kubernetes.io/instance={install.release} and "
            f"kubectl -n {ns} describe deploy {svc_name}: the webhook pods are not Ready",
        )
    shown = ", ".join(f"{a}:{p}" for a, p in ready[:5])
    return Check(
        name,
        Status.PASS if not not_ready else Status.WARN,
        f"Service {ns}/{svc_name}: {len(ready)} ready endpoint(s) ({shown})"
        + (f", {not_ready} not ready" if not_ready else ""),
        "" if not not_ready else f"kubectl -n {ns} get pods: some webhook pods are not Ready",
    )


def check_certificate(install: Install, opts: Options) -> Check:
    name = "serving-certificate"
    assert install.hook is not None
    raw = (install.hook.get("clientConfig") or {}).get("caBundle")
    if not raw:
        return Check(
            name,
            Status.FAIL,
            f"{install.config_name} has no caBundle: the API server cannot verify the webhook",
            "with certificates.mode=certManager check cert-manager's cainjector; otherwise "
            f"helm upgrade {install.release}",
        )
    try:
        pem = base64.b64decode(raw).decode()
        context = ssl.create_default_context(cadata=pem)
    except (ValueError, ssl.SSLError) as exc:
        return Check(name, Status.FAIL, f"the caBundle is not PEM certificates ({exc})", UPGRADE)
    targets: list[tuple[str, int]] = []
    if opts.connect is not None:
        targets.append(opts.connect)
    else:
        service = install.service or {}
        ip = str((service.get("spec") or {}).get("clusterIP") or "")
        port = service_port(service, install.service_ref.get("port", 443))
        if ip and ip != "None" and port is not None:
            targets.append((ip, int(port.get("port", 443))))
        targets.extend(install.endpoints)
    tried: list[str] = []
    for host, port_number in targets:
        outcome = _probe_tls(context, host, port_number, install.dns_name, opts.timeout)
        if isinstance(outcome, str):
            tried.append(f"{host}:{port_number} ({outcome})")
            continue
        if isinstance(outcome, ssl.SSLCertVerificationError):
            return Check(
                name,
                Status.FAIL,
                f"the certificate served at {host}:{port_number} does not verify against "
                f"{install.config_name}'s caBundle as {install.dns_name}: "
                f"{outcome.verify_message or outcome}",
                "the caBundle and the serving Secret disagree: helm upgrade "
                f"{install.release} re-issues both (certManager: check the cainjector)",
            )
        days = (outcome - datetime.now(UTC)).total_seconds() / 86400
        text = (
            f"the certificate served at {host}:{port_number} verifies against the caBundle as "
            f"{install.dns_name}; it expires in {days:.0f} days ({outcome:%Y-%m-%d})"
        )
        if days < CERT_WARN_DAYS:
            return Check(
                name, Status.WARN, text,
                f"renew it: helm upgrade {install.release} (selfSigned renews within "
                "renewBeforeDays; certManager renews by itself: check the Certificate)",
            )  # fmt: skip
        return Check(name, Status.PASS, text)
    return Check(
        name,
        Status.WARN,
        "not verified: could not reach the webhook from here (tried "
        + (", ".join(tried) or "nothing: no address")
        + "); the caBundle parses as PEM certificates",
        f"run doctor inside the cluster, or kubectl -n {install.namespace} port-forward "
        f"svc/{install.service_name} 8443:{install.service_ref.get('port', 443)} and pass "
        "--connect 127.0.0.1:8443",
    )


def _probe_tls(
    context: ssl.SSLContext, host: str, port: int, server_name: str, timeout: float
) -> datetime | ssl.SSLCertVerificationError | str:
    """The served certificate's not-after if it verifies; the error, or why unreachable."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=server_name) as tls,
        ):
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        return exc
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__ if not str(exc) else str(exc)[:80]
    not_after = str((cert or {}).get("notAfter", ""))
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


# What the webhook's ServiceAccount needs: (verb, group, resource, namespace or "" = cluster).
_READS = [(v, "", r, "") for r in ("secrets", "namespaces") for v in ("get", "list", "watch")]
_SECRET_WRITES = ("create", "update", "patch", "delete")
_REPLICATION = [
    *[(v, "", "secrets", "") for v in _SECRET_WRITES],
    *[(v, "", "events", "") for v in ("create", "patch")],
]
# The controllers' Lease: created by any name, read and renewed by its own (the chart's Role)
LEASE_NAME = "pullsecret-injector"
_LEASES = (
    ("create", "leases"),
    ("get", f"leases#{LEASE_NAME}"),
    ("update", f"leases#{LEASE_NAME}"),
)
# Stuck-pod recovery (recovery.mode evict or event): the Pending pods, evictions, Events.
_RECOVERY = [
    *[(v, "", "pods", "") for v in ("get", "list", "watch")],
    ("create", "", "pods/eviction", ""),
    ("create", "", "events", ""),
]
# What it must not have: more than it needs is a risk (it runs on every pod creation).
_EXCESS = [
    ("*", "*", "*", ""),
    ("update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""),
    ("create", "", "pods", ""),
    ("delete", "", "pods", ""),  # recovery evicts (PDBs apply); it never deletes a pod
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
]


def check_rbac(api: RawApi, install: Install) -> Check:
    name = "rbac"
    sa, ns = install.service_account, install.namespace
    need = list(_READS)
    if install.recovery:
        need += [a for a in _RECOVERY if a not in need]
    if install.replication or install.recovery:  # one Lease for both controllers
        need += [(verb, "coordination.k8s.io", res, ns) for verb, res in _LEASES]
    if install.replication:
        need += [a for a in _REPLICATION if a not in need]
        narrowed = _narrowed_write_namespaces(api, install)
        if narrowed:  # replication.secretWriteNamespaces: the writes are granted there only
            need = [a for a in need if not (a[2] == "secrets" and a[0] in _SECRET_WRITES)]
            need += [(v, "", "secrets", n) for n in narrowed for v in _SECRET_WRITES]
    excess = list(_EXCESS)
    if not install.replication:
        excess.append(("create", "", "secrets", ""))
    missing = [a for a in need if not _allowed(api, sa, ns, a)]
    extra = [a for a in excess if _allowed(api, sa, ns, a)]
    who = f"ServiceAccount {ns}/{sa}"
    if missing:
        return Check(
            name,
            Status.FAIL,
            f"{who} lacks: {', '.join(_show(a) for a in missing)}",
            f"helm upgrade {install.release} --set rbac.create=true (or grant them in the "
            "ClusterRole/Role bound to it)",
        )
    if extra:
        return Check(
            name,
            Status.WARN,
            f"{who} has what it needs, and more: {', '.join(_show(a) for a in extra)}",
            f"kubectl get clusterrolebindings,rolebindings -A -o wide | grep {sa}: remove the "
            "binding that grants more",
        )
    return Check(
        name,
        Status.PASS,
        f"{who} has exactly what it needs ({len(need)} permissions checked by "
        f"SubjectAccessReview, {len(excess)} it must not have are denied"
        + (", replication on" if install.replication else ", replication off")
        + (f", recovery {install.recovery})" if install.recovery else ", recovery off)"),
    )


def _narrowed_write_namespaces(api: RawApi, install: Install) -> list[str]:
    """The namespaces of the chart's `<fullname>-replication` RoleBindings, which exist
    only when replication.secretWriteNamespaces narrows the secret writes."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        body = api.request(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            query={"labelSelector": f"app.kubernetes.io/instance={install.release}"},
        )
    except ApiException as exc:
        if exc.status != 403:
            raise
        return []  # not allowed to look: the chart's default, cluster-wide writes, is checked
    wanted = f"{install.config_name}-replication"
    return sorted(
        str(b["metadata"].get("namespace"))
        for b in body.get("items") or ()
        if isinstance(b, dict) and b.get("metadata", {}).get("name") == wanted
    )


def _show(attrs: tuple[str, str, str, str]) -> str:
    verb, group, resource, ns = attrs
    resource, _, name = resource.partition("#")
    res = f"{resource}.{group}" if group else resource
    return f"{verb} {res}" + (f" {name}" if name else "") + (f" in {ns}" if ns else "")


def _allowed(api: RawApi, sa: str, ns: str, attrs: tuple[str, str, str, str]) -> bool:
    verb, group, resource, namespace = attrs
    resource, _, name = resource.partition("#")  # "resource#name": that object only
    resource, _, subresource = resource.partition("/")
    resource_attrs = {"verb": verb, "group": group, "resource": resource}
    if name:
        resource_attrs["name"] = name
    if subresource:
        resource_attrs["subresource"] = subresource
    if namespace:
        resource_attrs["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{ns}:{sa}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{ns}",
                "system:authenticated",
            ],
            "resourceAttributes": resource_attrs,
        },
    }
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    answer = api.request("POST", path, body=review)
    return bool((answer.get("status") or {}).get("allowed"))


def check_readiness(api: RawApi, install: Install) -> Check:
    name = "readiness"
    service = install.service or {}
    port = next(
        (p for p in (service.get("spec") or {}).get("ports") or () if p.get("name") == "metrics"),
        None,
    )
    if port is None:
        return Check(name, Status.WARN, "the Service has no port named metrics", UPGRADE)
    proxy = f"/api/v1/namespaces/{install.namespace}/services/{install.service_name}:metrics/proxy"
    status, body = api.get_text(f"{proxy}/readyz")
    if status == 403:
        raise ForbiddenError("services/proxy is forbidden")
    if status != 200:
        return Check(
            name,
            Status.FAIL,
            f"/readyz through the service proxy answered HTTP {status}: {body.strip()[:120]}",
            f"kubectl -n {install.namespace} logs deploy/{install.service_name}: it has not "
            "completed its first full sync of Secrets and Namespaces",
        )
    status, metrics = api.get_text(f"{proxy}/metrics")
    ages = {m[0]: float(m[1]) for m in SYNC_METRIC.findall(metrics)} if status == 200 else {}
    if not ages:
        return Check(
            name, Status.WARN, f"/readyz ok; no last_sync_age in /metrics (HTTP {status})",
            f"kubectl -n {install.namespace} logs deploy/{install.service_name}",
        )  # fmt: skip
    worst = max(ages.values())
    shown = ", ".join(f"{k} {v:.0f}s" for k, v in sorted(ages.items()))
    text = f"/readyz ok; last_sync_age: {shown} (one replica, as the service proxy picked it)"
    if worst >= SYNC_FAIL_SECONDS or worst >= SYNC_WARN_SECONDS:
        return Check(
            name,
            Status.FAIL if worst >= SYNC_FAIL_SECONDS else Status.WARN,
            text + ": its picture of the cluster is stale",
            f"kubectl -n {install.namespace} logs deploy/{install.service_name} | grep "
            "'list/watch failed': the watches cannot reach the API server",
        )
    return Check(name, Status.PASS, text)


def check_replication(api: RawApi, install: Install) -> Check:
    name = "replication"
    if not install.replication:
        return Check(name, Status.PASS, "replication is off: nothing to check")
    from webhook.cluster.livestate import list_items, registry_secrets  # noqa: PLC0415

    problems: list[str] = []
    sources: set[tuple[str, str]] = set()
    for ns in install.source_namespaces:
        for secret in registry_secrets(api, ns):
            text = secret.annotations.get(SELECTOR_ANNOTATION)
            if text is None:
                continue
            sources.add((ns, secret.name))
            try:
                parse_selector(text)
            except SelectorError as exc:
                problems.append(f"{ns}/{secret.name}: invalid selector {text!r} ({exc})")
        seen: set[tuple[str, str]] = set()
        query = {"fieldSelector": "involvedObject.kind=Secret,type=Warning"}
        for event in sorted(
            list_items(api, f"/api/v1/namespaces/{ns}/events", query),
            key=lambda e: str(e.get("lastTimestamp") or ""),
            reverse=True,
        ):
            involved = str((event.get("involvedObject") or {}).get("name"))
            reason = str(event.get("reason"))
            if reason not in REPLICATION_REASONS or (ns, involved) not in sources:
                continue
            if reason == "InvalidNamespaceSelector" or (involved, reason) in seen:
                continue  # the annotation itself was checked above; one line per problem
            seen.add((involved, reason))
            problems.append(f"{ns}/{involved}: {reason}: {str(event.get('message'))[:200]}")
    where = ", ".join(install.source_namespaces)
    if problems:
        return Check(
            name,
            Status.WARN,
            f"{len(problems)} problem(s) with the sources in {where}: " + "; ".join(problems),
            "fix the pullsecret-injector.io/namespace-selector annotation, or rename the "
            "source or the clashing secret (kubectl describe secret shows the Events)",
        )
    return Check(
        name,
        Status.PASS,
        f"{len(sources)} source(s) in {where}: no invalid selector, no clash reported",
    )
