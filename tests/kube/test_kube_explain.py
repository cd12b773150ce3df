"""`explain KIND/NAME` against the local API server holding the chart's objects, and a grep of
every command's output and logs for the test secrets' password."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops_support import PASSWORD, Install, put

from webhook.cli import main


def stuck_pod(
    ns: str, name: str, image: str, *, secrets: tuple[str, ...] = (), owned: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}}
    if owned:
        meta["ownerReferences"] = [
            {"kind": "ReplicaSet", "name": "web-5d8f", "uid": "u1", "controller": True}
        ]
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "app", "image": image, "ready": False,
            "state": {"waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{image}"',
            }},
        }]},
    }  # fmt: skip


WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "team-a"},
    "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1"}]},
    }},
}  # fmt: skip


def explain(
    capsys: pytest.CaptureFixture[str], kubeconfig: Path, *argv: str
) -> tuple[int, str, str]:
    code = main(["explain", "--kubeconfig", str(kubeconfig), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_stuck_pod_that_a_secret_in_scope_would_fix(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-a", "web-1", "registry.example.com/team/web:1", owned=True))
    code, out, _ = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a")
    assert code == 0
    assert "pod/web-1 in namespace team-a" in out
    assert "webhook: psi-pullsecret-injector is called for pods in this namespace" in out
    assert "has: no imagePullSecrets" in out
    assert "if created now: would get team-a-registry" in out
    assert "pulling: ImagePullBackOff: Back-off pulling image" in out
    assert "verdict: fixable now: team-a-registry in scope has credentials for it" in out
    assert (
        "the recovery controller (recovery.mode evict, the default) evicts it and its "
        "ReplicaSet web-5d8f recreates it with them" in out
    )


def test_a_stuck_bare_pod_is_left_to_its_author(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-a", "bare-1", "registry.example.com/team/web:1"))
    _, out, _ = explain(capsys, kubeconfig, "pod/bare-1", "-n", "team-a")
    assert "verdict: fixable now: team-a-registry in scope has credentials for it" in out
    assert "the recovery controller never deletes a bare pod" in out
    assert "evicts it" not in out


def test_a_stuck_pod_that_already_has_the_secret_is_not_a_missing_secret(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    pod = stuck_pod("team-a", "w2", "registry.example.com/x:1", secrets=("team-a-registry",))
    put(inst.server, pod)
    _, out, _ = explain(capsys, kubeconfig, "pod/w2", "-n", "team-a")
    assert "has: team-a-registry" in out
    assert "would get nothing more" in out
    assert "verdict: not a missing secret: the pod already uses team-a-registry" in out
    assert "recovery controller" not in out  # said only where recreating would help


def test_a_stuck_pod_with_no_secret_in_scope(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-b", "lonely", "registry.example.com/x:1"))
    _, out, _ = explain(capsys, kubeconfig, "pod/lonely", "-n", "team-b")
    assert "no secret in scope has credentials for registry.example.com/x" in out
    assert "verdict: no registry secret in namespace 'team-b' has credentials for it" in out


def test_a_namespace_the_webhook_never_sees(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    inst.cluster.create_secret(
        "kube-system", "reg", auths={"registry.example.com": {"auth": "eDp5"}}
    )
    put(inst.server, stuck_pod("kube-system", "sys", "registry.example.com/x:1"))
    _, out, _ = explain(capsys, kubeconfig, "pod/sys", "-n", "kube-system")
    assert "its namespaceSelector excludes this namespace" in out
    assert "would get nothing more (the webhook is not called for it)" in out
    assert "the webhook is not called for this pod: add the secret to the workload" in out


def test_a_deployment_explains_its_template_and_its_stuck_pods(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, WEB)
    put(inst.server, stuck_pod("team-a", "web-abc", "registry.example.com/web:1", owned=True,
                               labels={"app": "web"}))  # fmt: skip
    put(inst.server, stuck_pod("team-a", "other", "registry.example.com/web:1"))
    code, out, _ = explain(capsys, kubeconfig, "deploy/web", "-n", "team-a", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["target"] == "deployment/web (its pod template)"
    assert doc["would_add"] == ["team-a-registry"]
    assert len(doc["pods"]) == 1 and doc["pods"][0].startswith("pod/web-abc app: ImagePullBackOff")
    assert "fixable now" in doc["pods"][0]


def test_unknown_kinds_and_missing_objects_are_clear_errors(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = ops
    code, _, err = explain(capsys, kubeconfig, "svc/web", "-n", "team-a")
    assert code == 2 and "'svc' is not a kind with a pod template" in err
    code, _, err = explain(capsys, kubeconfig, "pod/nope", "-n", "team-a")
    assert code == 2 and "pod/nope in team-a: HTTP 404" in err


def test_no_command_prints_or_logs_a_credential(
    ops: tuple[Install, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-a", "web-1", "registry.example.com/team/web:1"))
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(stuck_pod("team-a", "new", "registry.example.com/a:1")))
    caplog.set_level(logging.DEBUG)
    outputs = []
    for argv in (
        ["mutate", "--explain", "-f", str(manifest), "--kubeconfig", str(kubeconfig)],
        ["explain", "pod/web-1", "-n", "team-a", "--kubeconfig", str(kubeconfig)],
        ["explain", "pod/web-1", "-n", "team-a", "-o", "json", "--kubeconfig", str(kubeconfig)],
        ["doctor", "--kubeconfig", str(kubeconfig)],
        ["doctor", "-o", "json", "--kubeconfig", str(kubeconfig)],
    ):
        main(argv)
        out, err = capsys.readouterr()
        outputs.append(out + err)
    assert "team-a-registry" in outputs[0] and "team-a-registry" in outputs[1]  # they did work
    text = "\n".join(outputs) + "\n".join(
        r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records
    )
    auth = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, auth, base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in text
    assert '"auth"' not in text


def test_the_namespace_defaults_to_the_kubeconfig_context_s(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-a", "web-1", "registry.example.com/team/web:1"))
    config = json.loads(kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = "team-a"
    kubeconfig.write_text(json.dumps(config))
    code, out, err = explain(capsys, kubeconfig, "pod/web-1")
    assert code == 0, err
    assert out.startswith("pod/web-1 in namespace team-a")


def test_mutate_reads_the_live_cluster_through_kubeconfig_env(
    ops: tuple[Install, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, kubeconfig = ops
    manifest = tmp_path / "deploy.json"
    manifest.write_text(json.dumps(WEB))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    code = main(["mutate", "-f", str(manifest)])
    out = capsys.readouterr().out
    assert code == 0
    spec = yaml.safe_load(out)["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "team-a-registry"}]
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert main(["mutate", "-f", str(manifest)]) == 2
    assert "cluster access" in capsys.readouterr().err


def test_a_namespace_scoped_identity_can_mutate_and_explain(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inst, kubeconfig = ops
    inst.server.forbidden = {  # cluster-wide reads and the Namespace object itself
        "/api/v1/secrets", "/api/v1/namespaces$", "/api/v1/namespaces/team-a$",
        "/apis/admissionregistration.k8s.io/",
    }  # fmt: skip
    put(inst.server, stuck_pod("team-a", "web-1", "registry.example.com/team/web:1"))
    manifest = tmp_path / "deploy.json"
    manifest.write_text(json.dumps(WEB))
    assert main(["mutate", "-f", str(manifest), "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "team-a-registry"}
    ]
    code, out, err = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a")
    assert code == 0, err
    assert "could not read MutatingWebhookConfigurations: assuming the webhook is called" in out
    assert "this identity may not read the Namespace, so its labels" in out
    assert "verdict: fixable now: team-a-registry" in out
    # the webhook configuration readable, the Namespace not: "is called", said as assumed
    inst.server.forbidden.discard("/apis/admissionregistration.k8s.io/")
    code, out, err = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a")
    assert code == 0, err
    assert (
        "is called for pods in this namespace, assuming so: this identity may not read the "
        "Namespace" in out
    )
    # and the requests really were refused: a cluster-wide list fails
    inst.server.forbidden.add("/api/v1/namespaces/team-a/secrets")
    assert main(["mutate", "-f", str(manifest), "--kubeconfig", str(kubeconfig)]) == 2
    assert "HTTP 403" in capsys.readouterr().err


def test_explain_decides_with_the_installed_webhooks_secret_selector(
    ops: tuple[Install, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """config.secretSelector narrows what the webhook injects: explain reads it from the
    webhook's Deployment, unless told otherwise on its command line."""
    inst, kubeconfig = ops
    put(inst.server, stuck_pod("team-a", "web-1", "registry.example.com/team/web:1", owned=True))
    code, out, _ = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a")
    assert code == 0 and "would get team-a-registry" in out
    assert "decided with: no secret selector, as the installed webhook" in out
    (deployment,) = [d for d in inst.docs if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["args"].append(
        "--secret-selector=tier=gold"
    )
    put(inst.server, deployment)
    code, out, _ = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a")
    assert code == 0 and "would get nothing more" in out
    assert "decided with: secret selector 'tier=gold', as the installed webhook" in out
    code, out, _ = explain(capsys, kubeconfig, "pod/web-1", "-n", "team-a", "--secret-selector", "")
    assert code == 0 and "would get team-a-registry" in out
    assert "decided with: as given on the command line" in out
