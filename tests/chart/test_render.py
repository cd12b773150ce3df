"""`helm template` over a matrix of values: valid Kubernetes objects that say what matters.

Every rendered document is validated against the Kubernetes OpenAPI schemas of the oldest
supported release (Chart.yaml kubeVersion >=1.25) and the newest one kubernetes-validate
ships (strict: unknown fields fail). cert-manager and Prometheus Operator objects have no
schema there and are checked structurally.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
from chartlib import FULLNAME, NAMESPACE, RELEASE, Helm, find, kinds
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

CRD_KINDS = {"Issuer", "Certificate", "ServiceMonitor", "PrometheusRule"}
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


@cache
def _existing_ca_pem() -> str:
    from webhook.serve import certs  # noqa: PLC0415

    bundle = certs.generate(certs.service_dns_names(FULLNAME, NAMESPACE))
    return bundle.ca_cert_pem.decode()


CASES: dict[str, list[str]] = {
    "defaults": [],
    "cert-manager": ["certificates.mode=certManager"],
    "cert-manager-clusterissuer": [
        "certificates.mode=certManager",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ],
    "existing-secret": [
        "certificates.mode=existingSecret",
        "certificates.existingSecret.name=my-tls",
    ],
    "selectors": [
        "webhook.excludeNamespaces={monitoring,istio-system}",
        "webhook.namespaceSelector.matchLabels.team=payments",
        "webhook.namespaceSelector.matchExpressions[0].key=env",
        "webhook.namespaceSelector.matchExpressions[0].operator=In",
        "webhook.namespaceSelector.matchExpressions[0].values={prod,staging}",
        "webhook.objectSelector.matchLabels.pullsecret-injector\\.io/inject=enabled",
        "config.secretSelector=pullsecret-injector.io/inject=true",
        "config.privateRegistries={registry.example.com,*.dkr.ecr.eu-west-1.amazonaws.com}",
        "replication.sourceNamespaces={registries,tools}",
        "recovery.mode=event",  # evict is refused with selectors (validate.yaml)
    ],
    "monitoring-and-network": [
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.additionalLabels.release=prometheus",
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "networkPolicy.egress[0].ports[0].port=6443",
    ],
    "replication-off": ["replication.enabled=false"],
    "recovery-off": ["recovery.mode=off"],
    "read-only": ["replication.enabled=false", "recovery.mode=off"],
    "recovery-event-alone": [
        "replication.enabled=false",
        "recovery.mode=event",
        "recovery.evictionsPerMinute=3",
        "webhook.excludeNamespaces={monitoring}",
    ],
    "replication-narrowed": ["replication.secretWriteNamespaces={team-a,team-b}"],
    "fail-closed-ha": [
        "webhook.failurePolicy=Fail",
        "replicaCount=3",
        "priorityClassName=system-cluster-critical",
        "webhook.timeoutSeconds=10",
    ],
    "pdb-max-unavailable": ["podDisruptionBudget.maxUnavailable=1"],
    "pinned-image": [
        "image.repository=registry.example.com/psi",
        "image.digest=sha256:" + "a" * 64,
        "imagePullSecrets[0].name=regcred",
        "fullnameOverride=psi-webhook",
    ],
    "existing-service-account": [
        "serviceAccount.create=false",
        "serviceAccount.name=psi-sa",
    ],
    "rsa-keys": ["certificates.selfSigned.keyType=rsa"],
}


def _render(helm: Helm, case: str) -> list[dict[str, Any]]:
    set_args = CASES[case]
    values = None
    if case == "existing-secret":
        values = {"certificates": {"existingSecret": {"caBundle": _existing_ca_pem()}}}
    return helm.render(*set_args, values=values)


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request: pytest.FixtureRequest, helm: Helm) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(helm, request.param)


def _fullname(case: str) -> str:
    return "psi-webhook" if case == "pinned-image" else FULLNAME


# ---- schema validity ------------------------------------------------------------------------


def test_every_document_is_a_valid_kubernetes_object(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes "
                    f"{version}: {exc.message}"
                )


def test_crd_backed_objects_have_the_fields_their_controllers_need(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            continue
        assert doc["metadata"]["namespace"] == NAMESPACE
        if doc["kind"] == "ServiceMonitor":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            service = find(docs, "Service")
            assert (
                doc["spec"]["selector"]["matchLabels"].items()
                <= service["metadata"]["labels"].items()
            )
            assert doc["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
            (endpoint,) = doc["spec"]["endpoints"]
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
            assert endpoint["path"] == "/metrics"
            assert doc["metadata"]["labels"]["release"] == "prometheus"
        elif doc["kind"] == "PrometheusRule":  # rules: tests/chart/test_prometheus_rules.py
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["metadata"]["labels"]["release"] == "prometheus"
            assert [r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]]
        else:
            assert doc["apiVersion"] == "cert-manager.io/v1"
            spec = doc["spec"]
            if doc["kind"] == "Issuer":
                assert ("selfSigned" in spec) != ("ca" in spec)
            else:
                assert spec["issuerRef"]["name"]
                assert spec["secretName"] == doc["metadata"]["name"]


# ---- the webhook registration ----------------------------------------------------------------


def test_webhook_configuration_says_what_matters(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    fullname = _fullname(case)
    mwc = find(docs, "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] == ("Fail" if case == "fail-closed-ha" else "Ignore")
    assert hook["timeoutSeconds"] == (10 if case == "fail-closed-ha" else 3)
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    service = find(docs, "Service", fullname)
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert hook["clientConfig"]["service"] == {
        "name": fullname,
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": https["port"],
    }


def test_webhook_never_sees_kube_system_its_own_namespace_or_opted_out_ones(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    (hook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    by_name = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name"]
    assert len(by_name) == 1
    assert by_name[0]["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(by_name[0]["values"])
    assert {
        "key": "pullsecret-injector.io/inject",
        "operator": "NotIn",
        "values": ["disabled"],
    } in expressions
    if case == "selectors":
        assert set(by_name[0]["values"]) == {"kube-system", NAMESPACE, "monitoring", "istio-system"}
        assert hook["namespaceSelector"]["matchLabels"] == {"team": "payments"}
        assert {"key": "env", "operator": "In", "values": ["prod", "staging"]} in expressions
        assert hook["objectSelector"] == {
            "matchLabels": {"pullsecret-injector.io/inject": "enabled"}
        }
    else:
        assert "objectSelector" not in hook
        assert "matchLabels" not in hook["namespaceSelector"]


def test_ca_bundle_comes_from_the_certificate_mode(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    mwc = find(docs, "MutatingWebhookConfiguration")
    client = mwc["webhooks"][0]["clientConfig"]
    fullname = _fullname(case)
    if case.startswith("cert-manager"):
        assert "caBundle" not in client  # cert-manager's CA injector fills it in
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{fullname}-tls"
        )
        certificate = find(docs, "Certificate", f"{fullname}-tls")
        assert certificate["spec"]["secretName"] == f"{fullname}-tls"
        assert set(certificate["spec"]["dnsNames"]) == _service_names(fullname)
        assert "server auth" in certificate["spec"]["usages"]
        issuer = certificate["spec"]["issuerRef"]
        if case == "cert-manager-clusterissuer":
            assert issuer == {
                "name": "corp-ca",
                "kind": "ClusterIssuer",
                "group": "cert-manager.io",
            }
            assert kinds(docs).count("Issuer") == 0
        else:
            assert issuer["name"] == f"{fullname}-ca"
            assert find(docs, "Certificate", f"{fullname}-ca")["spec"]["isCA"] is True
    elif case == "existing-secret":
        assert base64.b64decode(client["caBundle"]).decode() == _existing_ca_pem().strip()
        assert not [d for d in docs if d["kind"] == "Secret"]  # the user's Secret is theirs
    else:
        secret = find(docs, "Secret", f"{fullname}-tls")
        assert base64.b64decode(client["caBundle"]) == base64.b64decode(secret["data"]["ca.crt"])


def _service_names(fullname: str) -> set[str]:
    return {
        fullname,
        f"{fullname}.{NAMESPACE}",
        f"{fullname}.{NAMESPACE}.svc",
        f"{fullname}.{NAMESPACE}.svc.cluster.local",
    }


def test_self_signed_certificate_is_a_valid_chain_for_the_service(helm: Helm) -> None:
    docs = helm.render()
    ca_secret = find(docs, "Secret", f"{FULLNAME}-ca")
    tls_secret = find(docs, "Secret", f"{FULLNAME}-tls")
    assert tls_secret["type"] == ca_secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(ca_secret["data"]["tls.crt"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(tls_secret["data"]["tls.crt"]))
    assert base64.b64decode(tls_secret["data"]["ca.crt"]) == base64.b64decode(
        ca_secret["data"]["tls.crt"]
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == _service_names(FULLNAME)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    key = serialization.load_pem_private_key(
        base64.b64decode(tls_secret["data"]["tls.key"]), password=None
    )
    assert key.public_key() == leaf.public_key()
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.days == 1825
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650


# ---- the pods -------------------------------------------------------------------------------

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standard "restricted" (v1.25+), checked as PodSecurity admission does."""
    problems = []
    pod_sc = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is true")
    for volume in spec.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind not in ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} is {kind}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allowPrivilegeEscalation not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{where} may run as root (runAsNonRoot unset)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where} runAsUser 0")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} seccompProfile {seccomp.get('type')}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{where} uses a hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:  # ours, beyond the standard
            problems.append(f"{where} root filesystem writable")
    return problems


def test_restricted_checker_catches_violations() -> None:
    """The checker itself can fail (else the tests below would prove nothing)."""
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}],
            }
        ],
    }
    assert len(restricted_violations(bad)) == 10


def test_webhook_and_test_pods_meet_the_restricted_standard(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    deployment = find(docs, "Deployment")
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []
    for pod in (d for d in docs if d["kind"] == "Pod"):
        assert restricted_violations(pod["spec"]) == [], pod["metadata"]["name"]


def test_token_is_mounted_only_where_the_api_is_called(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    if case != "existing-service-account":
        assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    for test_pod in (d for d in docs if d["kind"] == "Pod"):
        assert test_pod["spec"]["automountServiceAccountToken"] is False


def test_deployment_is_highly_available_and_probed_on_the_plain_port(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    deployment = find(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == (3 if case == "fail-closed-ha" else 2)
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 8080}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert "cpu" not in container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    replication_off = case in ("replication-off", "read-only", "recovery-event-alone")
    assert env["PSI_REPLICATION_ENABLED"]["value"] == str(not replication_off).lower()
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    tls = volumes[mounts["/etc/pullsecret-injector/tls"]]["secret"]
    assert [i["key"] for i in tls["items"]] == ["tls.crt", "tls.key"]  # never a CA key
    expected_secret = "my-tls" if case == "existing-secret" else f"{_fullname(case)}-tls"
    assert tls["secretName"] == expected_secret
    if case == "pinned-image":
        assert container["image"] == "registry.example.com/psi@sha256:" + "a" * 64
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    else:
        assert container["image"] == "pullsecret-injector:0.1.0"


def test_server_flags_follow_the_values(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    case, docs = rendered
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "serve" not in args  # the image's ENTRYPOINT is `pullsecret-injector serve`
    assert "--cert-file=/etc/pullsecret-injector/tls/tls.crt" in args
    assert "--key-file=/etc/pullsecret-injector/tls/tls.key" in args
    assert f"--release-namespace={NAMESPACE}" in args
    assert "--port=8443" in args
    assert "--metrics-port=8080" in args
    if case == "selectors":
        assert "--secret-selector=pullsecret-injector.io/inject=true" in args
        assert [a for a in args if a.startswith("--private-registry=")] == [
            "--private-registry=registry.example.com",
            "--private-registry=*.dkr.ecr.eu-west-1.amazonaws.com",
        ]
        assert [a for a in args if a.startswith("--source-namespace=")] == [
            "--source-namespace=registries",
            "--source-namespace=tools",
        ]
    else:
        assert not [a for a in args if a.startswith(("--secret-selector", "--private-registry"))]


def test_service_and_pdb_select_the_webhook_pods(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"https", "metrics"}
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    if case == "pdb-max-unavailable":
        assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1}
        assert "minAvailable" not in pdb["spec"]
    else:
        assert pdb["spec"]["minAvailable"] == 1


# ---- RBAC -----------------------------------------------------------------------------------

READ = {
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "namespaces", "get"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}
REPLICATION = {
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
    ("", "events", "create"),
    ("", "events", "patch"),
}
RECOVERY = {
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods/eviction", "create"),
    ("", "events", "create"),
}
LEADER_ELECTION = {  # any Lease created; only the controllers' own read and renewed
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases#pullsecret-injector", "get"),
    ("coordination.k8s.io", "leases#pullsecret-injector", "update"),
}


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        names = rule.get("resourceNames") or [""]  # "resource#name": that object only
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), "no wildcards"
                    for name in names:
                        out.add((group, f"{resource}#{name}" if name else resource, verb))
    return out


def _effective(docs: list[dict[str, Any]], sa: str) -> dict[str, set[tuple[str, str, str]]]:
    """Grants by scope ("cluster" or a namespace) that the bindings give the ServiceAccount."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    scopes: dict[str, set[tuple[str, str, str]]] = {}
    for binding in (d for d in docs if d["kind"].endswith("RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
        ]
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]  # a binding to a missing role fails here
        scope = (
            "cluster"
            if binding["kind"] == "ClusterRoleBinding"
            else binding["metadata"]["namespace"]
        )
        scopes.setdefault(scope, set()).update(_grants(role))
    return scopes


def test_rbac_grants_exactly_the_documented_permissions(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    case, docs = rendered
    sa = "psi-sa" if case == "existing-service-account" else _fullname(case)
    scopes = _effective(docs, sa)
    if case == "read-only":
        assert scopes == {"cluster": READ}
    elif case in ("replication-off", "recovery-event-alone"):
        assert scopes == {"cluster": READ | RECOVERY, NAMESPACE: LEADER_ELECTION}
    elif case == "recovery-off":
        assert scopes == {"cluster": READ | REPLICATION, NAMESPACE: LEADER_ELECTION}
    elif case == "replication-narrowed":
        writes = REPLICATION - {("", "events", "create"), ("", "events", "patch")}
        assert scopes == {
            "cluster": READ | RECOVERY | {("", "events", "patch")},
            NAMESPACE: LEADER_ELECTION,
            "team-a": writes,
            "team-b": writes,
        }
    else:
        assert scopes == {"cluster": READ | REPLICATION | RECOVERY, NAMESPACE: LEADER_ELECTION}


def test_recovery_flags_follow_the_values(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    case, docs = rendered
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    flags = [a for a in container["args"] if a.startswith("--recovery-")]
    if case in ("recovery-off", "read-only"):
        assert flags == ["--recovery-mode=off"]
    elif case == "recovery-event-alone":
        assert flags == [
            "--recovery-mode=event",
            "--recovery-evictions-per-minute=3",
            "--recovery-exclude-namespace=monitoring",
        ]
    elif case == "selectors":
        assert flags == [
            "--recovery-mode=event",
            "--recovery-evictions-per-minute=10",
            "--recovery-exclude-namespace=monitoring",
            "--recovery-exclude-namespace=istio-system",
        ]
    else:
        assert flags == ["--recovery-mode=evict", "--recovery-evictions-per-minute=10"]


def test_recovery_rbac_never_grants_pod_deletes_or_writes(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for role in (d for d in docs if d["kind"].endswith("Role")):
        for _group, resource, verb in _grants(role):
            if resource.startswith("pods"):
                assert (resource, verb) in {
                    ("pods", "get"),
                    ("pods", "list"),
                    ("pods", "watch"),
                    ("pods/eviction", "create"),
                }, (role["metadata"]["name"], resource, verb)


def test_no_service_account_is_created_when_an_existing_one_is_named(helm: Helm) -> None:
    docs = helm.render(*CASES["existing-service-account"])
    assert "ServiceAccount" not in kinds(docs)
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "psi-sa"


# ---- optional objects ------------------------------------------------------------------------


def test_optional_objects_are_off_by_default(helm: Helm) -> None:
    docs = helm.render()
    assert kinds(docs) == sorted(
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",  # recovery (on by default: recovery.mode evict)
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Pod",  # the helm test hook
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )


def test_network_policy_opens_the_webhook_port_and_restricts_the_rest(helm: Helm) -> None:
    docs = helm.render(*CASES["monitoring-and-network"])
    policy = find(docs, "NetworkPolicy")
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    webhook_rule, metrics_rule = policy["spec"]["ingress"]
    assert webhook_rule == {"ports": [{"port": "https", "protocol": "TCP"}]}  # any source
    test_pod = {  # `helm test` calls /mutate and /readyz: let in wherever a rule narrows
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "pullsecret-injector",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "test",
            }
        }
    }
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        test_pod,
    ]
    test_labels = find(docs, "Pod")["metadata"]["labels"]
    assert test_pod["podSelector"]["matchLabels"].items() <= test_labels.items()
    narrowed = find(
        helm.render(
            "networkPolicy.enabled=true", "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/8"
        ),
        "NetworkPolicy",
    )
    assert narrowed["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}, test_pod]
    dns, api = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api == {"ports": [{"port": 6443}]}


def test_helm_test_pod_is_a_hook_replaced_by_the_next_run(helm: Helm) -> None:
    """Not deleted when it ends: Helm 3 reads its logs for `helm test --logs` afterwards
    (helm/helm#9098), as Kyverno's chart keeps its test pods."""
    docs = helm.render()
    pod = find(docs, "Pod")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["PSI_HOST"] == f"{FULLNAME}.{NAMESPACE}.svc"
    assert "Pod" not in kinds(helm.render("tests.enabled=false"))


def test_only_hooks_are_tests(helm: Helm) -> None:
    """Uninstall removes every release resource; the only hook is the test pod."""
    for case in CASES:
        for doc in _render(helm, case):
            hook = doc["metadata"].get("annotations", {}).get("helm.sh/hook")
            assert hook in (None, "test"), f"{case}: {doc['kind']} is a {hook} hook"
            if doc["kind"] == "MutatingWebhookConfiguration":
                assert hook is None
            assert "helm.sh/resource-policy" not in doc["metadata"].get("annotations", {})


def test_release_name_is_used_for_every_name(helm: Helm) -> None:
    docs = helm.render(release="other")
    for doc in docs:
        assert doc["metadata"]["name"].startswith("other-pullsecret-injector"), doc["kind"]
    assert RELEASE != "other"


def test_supported_kubernetes_versions(helm: Helm) -> None:
    assert helm.template(extra=["--kube-version", "1.25.0"]).returncode == 0
    too_old = helm.template(extra=["--kube-version", "1.24.9"])
    assert too_old.returncode != 0
    assert "kubeVersion" in too_old.stderr or ">=1.25.0-0" in too_old.stderr


LONG_NAME = "a" * 63  # fullnameOverride at the 63-character limit


def test_the_ca_common_name_fits_x509_and_cert_manager_with_the_longest_name(
    helm: Helm,
) -> None:
    """cert-manager refuses a commonName over 64 characters (and X.509 bounds it there)."""
    issuers = [
        d
        for d in helm.render(f"fullnameOverride={LONG_NAME}", "certificates.mode=certManager")
        if d["kind"] == "Certificate"
    ]
    assert issuers and all(len(d["spec"].get("commonName", "")) <= 64 for d in issuers)
    bundle = find(helm.render(f"fullnameOverride={LONG_NAME}"), "MutatingWebhookConfiguration")[
        "webhooks"
    ][0]["clientConfig"]["caBundle"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle))
    (cn,) = ca.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert len(str(cn.value)) <= 64 and str(cn.value).endswith("-ca")


def test_host_network_replaces_one_replica_at_a_time(helm: Helm) -> None:
    """A surge pod needs free host ports on a node of its own; a cluster with a replica on
    every node has none, and the rollout would hang."""
    strategy = find(helm.render("hostNetwork=true"), "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    default = find(helm.render(), "Deployment")["spec"]["strategy"]
    assert default["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_the_leader_election_role_names_the_lease_the_controllers_use(helm: Helm) -> None:
    """get and update only on the controllers' own Lease (cert-manager's chart names its
    Lease the same way); create cannot be narrowed by name in RBAC."""
    from webhook.ops.doctor_checks import LEASE_NAME  # noqa: PLC0415
    from webhook.replication.reconcile import ReplicationOptions  # noqa: PLC0415
    from webhook.replication.recovery import RecoveryOptions  # noqa: PLC0415

    role = next(
        d
        for d in helm.render()
        if d["kind"] == "Role" and d["metadata"]["name"].endswith("leader-election")
    )
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert [(r["resourceNames"], sorted(r["verbs"])) for r in named] == [
        ([LEASE_NAME], ["get", "update"])
    ]
    assert ReplicationOptions().lease_name == RecoveryOptions().lease_name == LEASE_NAME
