"""`doctor` against the local API server holding the real chart's objects: a healthy install
passes every check; each fault turns its own check to FAIL (or WARN where it only degrades)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kube_apiserver import kubeconfig_text
from kube_apiserver_ops import OpsApiServer
from kube_apiserver_writes import WritableCluster
from kube_support import Tls
from ops_support import (
    FULLNAME,
    NS,
    PASSWORD,
    Install,
    endpoint_slice,
    install,
    metrics_text,
    put,
)

from webhook.cli import main
from webhook.serve import certs


def doctor(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, *extra: str
) -> tuple[int, dict[str, dict[str, str]], str]:
    code = main(["doctor", "--kubeconfig", str(kubeconfig), "-o", "json", *extra])
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, {c["name"]: c for c in doc["checks"]}, err


def statuses(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


ALL = [
    "webhook-configuration", "namespace-selector", "endpoints", "serving-certificate",
    "rbac", "dry-run", "readiness", "replication",
]  # fmt: skip


def test_a_healthy_install_passes_every_check(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    code, checks, _ = doctor(capsys, kubeconfig)
    assert statuses(checks) == dict.fromkeys(ALL, "PASS"), checks
    assert code == 0
    assert "expires in" in checks["serving-certificate"]["message"]
    assert inst.tls.handshakes >= 1  # it really connected and verified
    assert "got team-a-registry" in checks["dry-run"]["message"]
    assert "exactly what it needs" in checks["rbac"]["message"]
    # the dry-run pod was the only pod request, and a dry run
    assert [w.query.get("dryRun") for w in inst.server.pod_posts] == ["All"]


def test_text_output_has_one_line_per_check_and_a_fix_for_failures(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.server.remove(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{FULLNAME}-abcde")
    code = main(["doctor", "--kubeconfig", str(kubeconfig)])
    out = capsys.readouterr().out
    assert code == 2
    lines = out.splitlines()
    assert lines[0].startswith("pullsecret-injector doctor: release psi")
    assert any(line.startswith("FAIL  endpoints") for line in lines)
    fail_at = next(i for i, line in enumerate(lines) if line.startswith("FAIL  endpoints"))
    assert "fix: kubectl -n pullsecret-injector get pods" in lines[fail_at + 1]
    assert sum(line[:4] in ("PASS", "WARN", "FAIL") for line in lines) == len(ALL)


def test_a_wrong_ca_bundle_fails_the_certificate_check(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    other = certs.generate(["elsewhere"], [])
    config = inst.webhook_config()
    config["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(other.ca_cert_pem).decode()
    put(inst.server, config)
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["serving-certificate"]["status"] == "FAIL"
    assert "does not verify" in checks["serving-certificate"]["message"]
    assert code == 2


def test_no_ready_endpoints_fail_the_endpoints_check(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, endpoint_slice(inst.tls.port, ready=False))
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["endpoints"]["status"] == "FAIL"
    assert "no ready endpoint (1 not ready)" in checks["endpoints"]["message"]
    assert code == 2


@pytest.mark.parametrize(
    ("binding", "missing"),
    [
        ("ClusterRoleBinding/psi-pullsecret-injector", "list secrets"),
        ("ClusterRoleBinding/psi-pullsecret-injector-replication", "create secrets"),
        ("RoleBinding/psi-pullsecret-injector-leader-election", "update leases"),
    ],
)
def test_missing_rbac_fails_the_rbac_check(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str], binding: str, missing: str
) -> None:
    inst, kubeconfig = ops
    kind, name = binding.split("/")
    path, _ = inst.server.find(kind, name)
    inst.server.remove(path)
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["rbac"]["status"] == "FAIL"
    assert missing in checks["rbac"]["message"]
    assert code == 2


def test_more_rbac_than_needed_warns(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "too-much"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NS}],
    })  # fmt: skip
    put(inst.server, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    })  # fmt: skip
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["rbac"]["status"] == "WARN"
    assert "and more: * *.*" in checks["rbac"]["message"]
    assert code == 1


def test_a_namespace_selector_that_selects_kube_system_fails(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    config = inst.webhook_config()
    config["webhooks"][0]["namespaceSelector"] = {}
    put(inst.server, config)
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["namespace-selector"]["status"] == "FAIL"
    assert "selects kube-system, pullsecret-injector" in checks["namespace-selector"]["message"]
    assert code == 2


def test_a_webhook_that_fails_open_fails_the_dry_run(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.server.admit = lambda pod, _ns: pod  # the API server got no patch
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["dry-run"]["status"] == "FAIL"
    assert "did not get team-a-registry" in checks["dry-run"]["message"]
    assert code == 2


def test_not_ready_and_stale_webhooks_fail_readiness(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.server.proxy["/readyz"] = (503, '{"status":"waiting for the first full sync"}')
    _, checks, _ = doctor(capsys, kubeconfig)
    assert checks["readiness"]["status"] == "FAIL"
    assert "HTTP 503" in checks["readiness"]["message"]
    inst.server.proxy["/readyz"] = (200, '{"status":"ready"}')
    inst.server.proxy["/metrics"] = (200, metrics_text(1200.0, 3.0))
    _, checks, _ = doctor(capsys, kubeconfig)
    assert checks["readiness"]["status"] == "FAIL"
    assert "secrets 1200s" in checks["readiness"]["message"]


def test_replication_problems_from_selectors_and_events_warn(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.cluster.create_secret(
        NS, "bad-source", auths={"quay.io": {"auth": "eDp5"}},
        annotations={"pullsecret-injector.io/namespace-selector": "team in (a"},
    )  # fmt: skip
    put(inst.server, {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "project-registry.1", "namespace": NS},
        "involvedObject": {"kind": "Secret", "name": "project-registry", "namespace": NS},
        "reason": "CopyBlocked", "type": "Warning",
        "message": "a Secret named 'project-registry' that pullsecret-injector did not create",
        "lastTimestamp": "2026-12-02T17:00:00Z",
    })  # fmt: skip
    code, checks, _ = doctor(capsys, kubeconfig)
    message = checks["replication"]["message"]
    assert checks["replication"]["status"] == "WARN"
    assert "bad-source: invalid selector 'team in (a'" in message
    assert "project-registry: CopyBlocked" in message
    assert code == 1


def test_an_unreachable_webhook_warns_and_says_what_it_tried(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.tls.stop()
    _, checks, _ = doctor(capsys, kubeconfig, "--timeout", "0.5")
    cert = checks["serving-certificate"]
    assert cert["status"] == "WARN"
    assert (
        "not verified: could not reach the webhook from here (tried 127.0.0.1:" in cert["message"]
    )
    assert "--connect 127.0.0.1:8443" in cert["fix"]


def test_without_the_release_it_fails_first_and_skips_the_rest(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = ops
    code, checks, _ = doctor(capsys, kubeconfig, "--release", "other")
    assert checks["webhook-configuration"]["status"] == "FAIL"
    assert "found releases: psi" in checks["webhook-configuration"]["message"]
    assert {checks[n]["status"] for n in ALL[1:]} == {"WARN"}
    assert code == 2


def test_an_identity_without_review_or_pod_rights_gets_warnings_not_failures(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.server.forbidden = {
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "/api/v1/namespaces/team-a/pods",
    }
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["rbac"]["status"] == "WARN"
    assert checks["dry-run"]["status"] == "WARN"
    assert "could not check: HTTP 403" in checks["rbac"]["message"]
    assert {checks[n]["status"] for n in ALL if n not in ("rbac", "dry-run")} == {"PASS"}
    assert code == 1


def test_the_release_is_found_by_its_labels_when_the_default_has_none(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    config = inst.webhook_config()
    _, deployment = inst.server.find("Deployment", FULLNAME)
    for obj in (config, deployment):  # as `helm install web-psi` would label them
        obj["metadata"]["labels"]["app.kubernetes.io/instance"] = "web-psi"
        put(inst.server, obj)
    code = main(["doctor", "--kubeconfig", str(kubeconfig)])
    out = capsys.readouterr().out
    assert out.startswith("pullsecret-injector doctor: release web-psi, namespace")
    assert "(release 'web-psi' found by its labels; --release psi has none)" in out
    assert code == 0, out


def test_the_dry_run_respects_the_webhooks_secret_selector(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    _, deployment = inst.server.find("Deployment", FULLNAME)
    deployment["spec"]["template"]["spec"]["containers"][0]["args"].append(
        "--secret-selector=registry=shared"
    )
    put(inst.server, deployment)
    _, checks, _ = doctor(capsys, kubeconfig)
    assert checks["dry-run"]["status"] == "WARN"  # team-a-registry is not labelled for it
    assert (
        "no namespace the webhook serves holds a usable registry secret"
        in (checks["dry-run"]["message"])
    )
    assert inst.server.pod_posts == []


def test_with_replication_off_secret_writes_are_more_than_needed(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    _, deployment = inst.server.find("Deployment", FULLNAME)
    for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"] == "PSI_REPLICATION_ENABLED":
            env["value"] = "false"
    put(inst.server, deployment)
    _, checks, _ = doctor(capsys, kubeconfig)
    assert checks["replication"] == {
        "name": "replication", "status": "PASS",
        "message": "replication is off: nothing to check", "fix": "",
    }  # fmt: skip
    assert checks["rbac"]["status"] == "WARN"  # the chart still bound the write role
    assert "and more: create secrets" in checks["rbac"]["message"]


def test_secret_writes_narrowed_to_some_namespaces_are_checked_there(
    tls: Tls, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = OpsApiServer(WritableCluster(), ssl_context=tls.server).start()
    inst = install(server, tmp_path, "replication.secretWriteNamespaces={team-a,team-b}")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(server, str(tls.ca_file)))
    try:
        code, checks, _ = doctor(capsys, kubeconfig)
        assert checks["rbac"]["status"] == "PASS", checks["rbac"]
        # 6 reads, 2 event writes, 3 on the Lease, 4 secret writes in each of 2 namespaces,
        # and recovery's 3 pod reads and the eviction
        assert "23 permissions checked" in checks["rbac"]["message"]
        assert code == 0
        # Found from the RoleBindings that exist: a binding to a role that is gone fails.
        path, _ = server.find("ClusterRole", f"{FULLNAME}-replication")
        server.remove(path)
        _, checks, _ = doctor(capsys, kubeconfig)
        assert checks["rbac"]["status"] == "FAIL"
        assert "create secrets in team-a" in checks["rbac"]["message"]
        assert "create secrets in team-b" in checks["rbac"]["message"]
    finally:
        inst.tls.stop()
        server.stop()


def test_the_dry_run_moves_on_from_refusing_and_terminating_namespaces(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    cluster = inst.cluster
    for ns in ("team-b", "team-c"):
        if ns == "team-c":
            cluster.create_namespace(ns)
        cluster.create_secret(
            ns, f"{ns}-registry", auths={"registry.example.com": {"auth": "eDp5"}}
        )
    inst.server.forbidden = {"/api/v1/namespaces/team-a/pods"}  # e.g. a policy engine
    terminating = cluster.current("namespaces", "team-b")
    assert terminating is not None
    terminating = {**terminating, "status": {"phase": "Terminating"}}
    terminating["metadata"] = {
        **terminating["metadata"],
        "resourceVersion": str(cluster.revision + 1),
    }
    cluster.put("namespaces", terminating, "MODIFIED")
    code, checks, _ = doctor(capsys, kubeconfig)
    assert checks["dry-run"]["status"] == "PASS", checks["dry-run"]
    assert "dry-run pod in team-c" in checks["dry-run"]["message"]
    posted = [w.path for w in inst.server.writes_of("pods", "POST")]  # refused ones too
    assert posted == ["/api/v1/namespaces/team-a/pods", "/api/v1/namespaces/team-c/pods"]
    assert code == 0


def test_recovery_without_its_permissions_fails_the_rbac_check(
    tls: Tls, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = OpsApiServer(WritableCluster(), ssl_context=tls.server).start()
    inst = install(server, tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(server, str(tls.ca_file)))
    try:
        _, checks, _ = doctor(capsys, kubeconfig)
        assert checks["rbac"]["status"] == "PASS", checks["rbac"]
        assert "recovery evict" in checks["rbac"]["message"]
        path, _ = server.find("ClusterRole", f"{FULLNAME}-recovery")
        server.remove(path)
        _, checks, _ = doctor(capsys, kubeconfig)
        assert checks["rbac"]["status"] == "FAIL"
        assert "create pods/eviction" in checks["rbac"]["message"]
        assert "watch pods" in checks["rbac"]["message"]
    finally:
        inst.tls.stop()
        server.stop()


def test_an_identity_that_may_read_nothing_gets_its_own_exit_status(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every read refused: nothing passed and nothing failed. Exit 3, not the 1 of an
    install with a warning, and no check says to fix failures there are none of."""
    inst, kubeconfig = ops
    inst.server.forbidden = {"/api", "/apis"}
    code, checks, _ = doctor(capsys, kubeconfig)
    assert {c["status"] for c in checks.values()} == {"WARN"}
    assert not any("fix the failures above" in (c.get("fix") or "") for c in checks.values())
    assert code == 3
