"""Values: `helm lint --strict`, values.schema.json rejections, templates/validate.yaml
failures, and the documentation of every key in values.yaml."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml
from chartlib import CHART, FULLNAME, NAMESPACE, RELEASE, Helm

from webhook.serve import certs

CA_PEM = certs.generate(certs.service_dns_names(FULLNAME, NAMESPACE)).ca_cert_pem.decode()

# ---- helm lint --strict -----------------------------------------------------------------------

LINT_CASES = {
    "selfSigned": [],
    "certManager": ["certificates.mode=certManager"],
    "existingSecret": [
        "certificates.mode=existingSecret",
        "certificates.existingSecret.name=my-tls",
        "certificates.existingSecret.caBundle=" + base64.b64encode(CA_PEM.encode()).decode(),
    ],
    "everything-on": [
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "networkPolicy.enabled=true",
        "webhook.failurePolicy=Fail",
        "replicaCount=3",
    ],
}


@pytest.mark.parametrize("case", sorted(LINT_CASES))
def test_helm_lint_strict_passes(helm: Helm, case: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for pair in LINT_CASES[case]:
        args += ["--set", pair]
    result = helm.run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout


def test_helm_lint_strict_fails_on_a_broken_chart(helm: Helm) -> None:
    """Lint can fail: an unknown value key is an error, not a warning."""
    result = helm.run("lint", "--strict", str(CHART), "--set", "replicas=3")
    assert result.returncode != 0
    assert "replicas" in result.stdout + result.stderr


PROM_RULE = "metrics.prometheusRule.enabled=true"
ALERT_KEYS = (
    "failingOpen",
    "apiServerFailingOpen",
    "staleClusterState",
    "certificateExpiring",
    "replicationErrors",
)

# ---- values.schema.json ------------------------------------------------------------------------

SCHEMA_REJECTS = {
    "unknown top-level key": (["replicas=2"], "additional properties 'replicas' not allowed"),
    "unknown nested key": (
        ["webhook.failurePolicies=Fail"],
        "additional properties 'failurePolicies' not allowed",
    ),
    "wrong type": (["replicaCount=two"], "got string, want integer"),
    "boolean as string": (["replication.enabled=yes"], "got string, want boolean"),
    "failurePolicy enum": (["webhook.failurePolicy=Deny"], "failurePolicy"),
    "timeout above the API limit": (["webhook.timeoutSeconds=31"], "timeoutSeconds"),
    "zero replicas": (["replicaCount=0"], "replicaCount"),
    "certificate mode enum": (["certificates.mode=vault"], "mode"),
    "privileged port": (["ports.https=443"], "https"),
    "bad digest": (["image.digest=latest"], "digest"),
    "bad namespace name": (["webhook.excludeNamespaces={Bad_NS}"], "excludeNamespaces"),
    "bad selector operator": (
        [
            "webhook.objectSelector.matchExpressions[0].key=a",
            "webhook.objectSelector.matchExpressions[0].operator=Equals",
        ],
        "operator",
    ),
    "bad duration": (["certificates.certManager.duration=90d"], "duration"),
    # serve has no --workers any more: one process per pod, replicas scale it
    "workers per pod": (["config.workers=2"], "additional properties 'workers' not allowed"),
    "unknown tuning key": (["tuning.watch.timeout=5"], "additional properties 'timeout' not"),
    "zero page size": (["tuning.watch.pageSize=0"], "pageSize"),
    "no writes per second": (["tuning.replication.qps=0"], "qps"),
    "unknown PrometheusRule key": (
        [PROM_RULE, "metrics.prometheusRule.labels.a=b"],
        "additional properties 'labels'",
    ),
    "unknown alert": (
        [PROM_RULE, "metrics.prometheusRule.alerts.podsStuck.enabled=true"],
        "podsStuck",
    ),
    "bad alert duration": ([PROM_RULE, "metrics.prometheusRule.alerts.failingOpen.for=ten"], "for"),
    "error ratio above 1": (
        [PROM_RULE, "metrics.prometheusRule.alerts.failingOpen.errorRatio=5"],
        "errorRatio",
    ),
    "severity in ruleLabels": (
        [PROM_RULE, "metrics.prometheusRule.ruleLabels.severity=page"],
        "severity",
    ),
    "runbook URL with its own anchor": (
        [PROM_RULE, "metrics.prometheusRule.runbookBaseUrl=https://x.example/runbooks#top"],
        "runbookBaseUrl",
    ),
    "recovery mode enum": (["recovery.mode=delete"], "mode"),
    "no evictions per minute": (["recovery.evictionsPerMinute=0"], "evictionsPerMinute"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REJECTS))
def test_schema_rejects_bad_values(helm: Helm, case: str) -> None:
    set_args, message = SCHEMA_REJECTS[case]
    result = helm.template(*set_args)
    assert result.returncode != 0, f"{case}: rendered anyway"
    assert "values don't meet the specifications of the schema" in result.stderr or (
        "schema" in result.stderr
    )
    assert message in result.stderr, result.stderr


def test_schema_forbids_unknown_keys_at_every_level_of_the_chart() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: dict[str, object], path: str) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            if node.get("additionalProperties") is not False:
                open_objects.append(path or "<root>")
            for key, child in props.items():
                if isinstance(child, dict):
                    walk(child, f"{path}.{key}")

    walk(schema, "")
    assert open_objects == []


# ---- templates/validate.yaml --------------------------------------------------------------------

VALIDATE_FAILS = {
    "fail-closed with one replica": (
        ["webhook.failurePolicy=Fail", "replicaCount=1"],
        "Set replicaCount to 2 or more",
    ),
    "fail-closed without PDB": (
        ["webhook.failurePolicy=Fail", "podDisruptionBudget.enabled=false"],
        "Set podDisruptionBudget.enabled=true, or use webhook.failurePolicy=Ignore",
    ),
    "PDB that blocks drains": (
        ["replicaCount=2", "podDisruptionBudget.minAvailable=2"],
        "node drains hang",
    ),
    "PDB with neither bound": (
        ["podDisruptionBudget.minAvailable=null"],
        "needs podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable",
    ),
    "existingSecret name with selfSigned": (
        ["certificates.existingSecret.name=my-tls"],
        "two certificate modes at once. To use your own Secret set "
        "certificates.mode=existingSecret",
    ),
    "issuerRef with existingSecret": (
        [
            "certificates.mode=existingSecret",
            "certificates.existingSecret.name=my-tls",
            "certificates.existingSecret.caBundle=" + base64.b64encode(CA_PEM.encode()).decode(),
            "certificates.certManager.issuerRef.name=corp-ca",
        ],
        "certificates.certManager.issuerRef.name is set but certificates.mode=existingSecret",
    ),
    "existingSecret without name": (
        ["certificates.mode=existingSecret"],
        "needs certificates.existingSecret.name",
    ),
    "existingSecret without caBundle": (
        ["certificates.mode=existingSecret", "certificates.existingSecret.name=my-tls"],
        "--set-file certificates.existingSecret.caBundle=ca.crt",
    ),
    "existingSecret with a caBundle that is no certificate": (
        [
            "certificates.mode=existingSecret",
            "certificates.existingSecret.name=my-tls",
            "certificates.existingSecret.caBundle=" + base64.b64encode(b"hello").decode(),
        ],
        "neither a PEM certificate nor the base64 encoding of one",
    ),
    "certificate outliving its CA": (
        ["certificates.selfSigned.validityDays=4000"],
        "a certificate cannot outlive the CA",
    ),
    "renewal on every upgrade": (
        ["certificates.selfSigned.validityDays=30", "certificates.selfSigned.renewBeforeDays=30"],
        "every upgrade would re-issue the certificate",
    ),
    "source namespaces without replication": (
        ["replication.enabled=false", "replication.sourceNamespaces={registries}"],
        "Set replication.enabled=true, or remove replication.sourceNamespaces",
    ),
    "write namespaces without replication": (
        ["replication.enabled=false", "replication.secretWriteNamespaces={a}"],
        "remove replication.secretWriteNamespaces",
    ),
    "RBAC on the default ServiceAccount": (
        ["serviceAccount.create=false"],
        'to the namespace\'s "default" ServiceAccount',
    ),
    "one port for two servers": (
        ["ports.https=8080"],
        "Change one of them",
    ),
    "lease timings out of order": (
        ["tuning.leaderElection.renewDeadlineSeconds=20"],
        "Set retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
    ),
    "copies at admission outlasting the API server's wait": (
        ["tuning.replication.admissionTimeoutSeconds=3"],
        "Lower admissionTimeoutSeconds or raise webhook.timeoutSeconds",
    ),
    "a live read outlasting the API server's wait": (
        ["tuning.liveReadTimeoutSeconds=5"],
        "Lower liveReadTimeoutSeconds or raise webhook.timeoutSeconds",
    ),
    "a live read and the copies together outlasting the API server's wait": (
        ["tuning.replication.admissionTimeoutSeconds=2"],  # 1 + 2 + 0.5 against 3
        "Lower the two waits or raise webhook.timeoutSeconds",
    ),
    "recovery evicting pods the API server never sends to the webhook": (
        ["webhook.objectSelector.matchLabels.team=a"],
        "Set recovery.mode=event (report only) or off, or drop the selectors",
    ),
    "recovery with a namespace selector": (
        ["webhook.namespaceSelector.matchLabels.team=a"],
        "Set recovery.mode=event (report only) or off, or drop the selectors",
    ),
    "a PDB allowing no eviction (maxUnavailable 0)": (
        ["podDisruptionBudget.minAvailable=null", "podDisruptionBudget.maxUnavailable=0"],
        "Set maxUnavailable to 1 or more, or disable the PodDisruptionBudget",
    ),
    "a PDB allowing no eviction (minAvailable 100%)": (
        ["podDisruptionBudget.minAvailable=100%"],
        "Lower minAvailable (e.g. 50%), or disable the PodDisruptionBudget",
    ),
    "a PrometheusRule without a rule": (
        [PROM_RULE, *(f"metrics.prometheusRule.alerts.{a}.enabled=false" for a in ALERT_KEYS)],
        "Enable an alert, or set metrics.prometheusRule.enabled=false",
    ),
    "grace period shorter than the shutdown": (
        ["terminationGracePeriodSeconds=19"],  # 5 preStop + 5 drain + 10 in flight = 20
        "Raise terminationGracePeriodSeconds to 20 or more",
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_FAILS))
def test_contradictory_values_fail_with_what_to_change(helm: Helm, case: str) -> None:
    set_args, message = VALIDATE_FAILS[case]
    result = helm.template(*set_args)
    assert result.returncode != 0, f"{case}: rendered anyway"
    assert "validate.yaml" in result.stderr
    assert message in result.stderr, result.stderr


def test_the_fixes_the_messages_suggest_do_render(helm: Helm) -> None:
    """The way out each message names is itself accepted."""
    for fix in (
        ["webhook.failurePolicy=Fail", "replicaCount=2"],
        ["replicaCount=3", "podDisruptionBudget.minAvailable=2"],
        ["podDisruptionBudget.minAvailable=null", "podDisruptionBudget.maxUnavailable=1"],
        ["serviceAccount.create=false", "serviceAccount.name=psi"],
        ["replication.enabled=false"],
        ["tuning.replication.admissionTimeoutSeconds=2", "webhook.timeoutSeconds=4"],
        ["tuning.replication.admissionTimeoutSeconds=2", "replication.enabled=false"],
        ["webhook.objectSelector.matchLabels.team=a", "recovery.mode=event"],
        ["webhook.namespaceSelector.matchLabels.team=a", "recovery.mode=off"],
        ["podDisruptionBudget.minAvailable=null", "podDisruptionBudget.maxUnavailable=1"],
        ["podDisruptionBudget.minAvailable=50%"],
        ["certificates.selfSigned.validityDays=3650"],
        [f"metrics.prometheusRule.alerts.{a}.enabled=false" for a in ALERT_KEYS],
    ):
        result = helm.template(*fix)
        assert result.returncode == 0, f"{fix}: {result.stderr}"


def test_existing_ca_bundle_accepts_pem_text_or_base64(helm: Helm) -> None:
    base = ["certificates.mode=existingSecret", "certificates.existingSecret.name=my-tls"]
    for value in (CA_PEM, base64.b64encode(CA_PEM.encode()).decode()):
        docs = [
            d
            for d in yaml.safe_load_all(
                helm.template(
                    *base, values={"certificates": {"existingSecret": {"caBundle": value}}}
                ).stdout
            )
            if d
        ]
        (mwc,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
        ca = base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]).decode()
        assert ca.strip() == CA_PEM.strip()


# ---- values.yaml documents every key ------------------------------------------------------------

# Objects passed through to Kubernetes as they are: their inner keys are Kubernetes' own
# fields, documented by the comment on the object itself.
PASS_THROUGH = {
    "updateStrategy",
    "resources",
    "podSecurityContext",
    "containerSecurityContext",
    "nodeSelector",
    "tests.resources",
}


def test_every_values_key_has_a_comment() -> None:
    """A comment right above each key, or above a run of sibling keys that share it, or on
    the parent when the keys directly follow it (e.g. matchLabels/matchExpressions)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_re = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):")
    stack: list[tuple[int, str]] = []
    documented: dict[int, bool] = {}  # line number of a key -> has documentation
    undocumented = []
    for n, line in enumerate(lines):
        m = key_re.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m["key"]])
        parent = ".".join(k for _, k in stack)
        stack.append((indent, m["key"]))
        if any(parent == p or parent.startswith(p + ".") for p in PASS_THROUGH):
            continue
        j = n - 1
        while j >= 0 and (prev := key_re.match(lines[j])) and len(prev["indent"]) == indent:
            j -= 1
        above = lines[j] if j >= 0 else ""
        parent_key = key_re.match(above)
        documented[n] = above.strip().startswith("#") or bool(
            parent_key and len(parent_key["indent"]) < indent and documented.get(j)
        )
        if not documented[n]:
            undocumented.append(path)
    assert undocumented == [], "\n".join(undocumented)


def test_values_yaml_parses_and_matches_the_documented_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicaCount"] == 2
    assert values["webhook"]["failurePolicy"] == "Ignore"
    assert values["webhook"]["timeoutSeconds"] == 3
    assert values["replication"]["enabled"] is True
    assert values["recovery"] == {"mode": "evict", "evictionsPerMinute": 10}
    assert values["serviceAccount"]["automountServiceAccountToken"] is False
    assert values["podDisruptionBudget"]["enabled"] is True
    assert values["certificates"]["mode"] == "selfSigned"


# ---- NOTES.txt -----------------------------------------------------------------------------------


def _notes(helm: Helm, namespace: str, *set_args: str) -> str:
    args = ["install", "--dry-run=client", RELEASE, str(CHART), "--namespace", namespace]
    for pair in set_args:
        args += ["--set", pair]
    result = helm.run(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_tell_how_to_check_that_it_works(helm: Helm) -> None:
    notes = _notes(helm, NAMESPACE)
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE} --logs" in notes
    assert "--dry-run=server -o jsonpath='{.spec.imagePullSecrets}" in notes
    assert "/metrics" in notes
    assert "inject.pullsecret-injector.io/injected-secrets" in notes
    assert "WARNING" not in notes


def test_notes_say_what_stuck_pod_recovery_does_and_where_to_see_it(helm: Helm) -> None:
    notes = _notes(helm, NAMESPACE)
    assert "recovery.mode=evict" in notes and "at most 10 a minute" in notes
    assert "--field-selector reason=PullSecretRecovery" in notes
    event_only = _notes(helm, NAMESPACE, "recovery.mode=event")
    assert "recovery.mode=event" in event_only and "evicted" not in event_only
    assert "Stuck pods" not in _notes(helm, NAMESPACE, "recovery.mode=off")


def test_notes_warn_about_an_install_into_default(helm: Helm) -> None:
    notes = _notes(helm, "default")
    assert 'WARNING: installed in the "default" namespace' in notes


def test_notes_follow_the_certificate_mode(helm: Helm) -> None:
    assert "issued and renewed by cert-manager" in _notes(
        helm, NAMESPACE, "certificates.mode=certManager"
    )
    assert "system-cluster-critical" in _notes(
        helm, NAMESPACE, "webhook.failurePolicy=Fail", "replicaCount=3"
    )
