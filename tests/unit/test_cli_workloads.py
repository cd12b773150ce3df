"""`mutate` on every workload kind with a pod template, from files, stdin and Helm output."""

from __future__ import annotations

import io
import subprocess
import tempfile
from typing import Any

import pytest
import yaml
from chart.chartlib import CHART, find_helm
from helpers import EXAMPLES, FIXTURES

from webhook.cli import main
from webhook.core.workloads import (
    KINDS,
    WorkloadError,
    input_namespaces,
    parse_ref,
    pod_of,
    workload_patch,
)

CLUSTER = str(EXAMPLES / "cluster.yaml")
MULTI = str(FIXTURES / "workloads" / "multi-kind.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def template_secrets(obj: dict[str, Any]) -> list[str]:
    found = pod_of(obj, "default")
    assert found is not None, obj["kind"]
    return [e["name"] for e in found.pod["spec"].get("imagePullSecrets") or []]


@pytest.fixture(autouse=True)
def _no_live_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)


def test_every_kind_with_a_pod_template_is_patched_where_its_pods_come_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "mutate", "-f", MULTI, "--objects", CLUSTER)
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    got = {f"{d['kind']}/{d['metadata']['name']}": template_secrets(d) for d in docs}
    assert got == {
        "Pod/bare": ["example-registry", "explicit-regcred"],
        "Deployment/web": ["example-registry", "explicit-regcred"],
        "StatefulSet/db": ["example-registry", "explicit-regcred", "ghcr-org"],  # init too
        "DaemonSet/agent": ["ghcr-org"],
        "ReplicaSet/rs": ["explicit-regcred", "example-registry"],  # kept first, appended
        "ReplicationController/rc": ["dockerhub"],
        "Job/migrate": ["example-registry", "explicit-regcred"],
        "CronJob/nightly": ["ghcr-org"],
        "PodTemplate/tpl": ["example-registry", "explicit-regcred"],
        "Deployment/opted-out": [],  # the template's opt-out annotation
    }
    assert {k.kind for k in KINDS} <= {d["kind"] for d in docs}
    cron = next(d for d in docs if d["kind"] == "CronJob")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-org"}]
    assert "imagePullSecrets" not in cron["spec"]  # the patch went under the template only
    assert "skipped 2 object(s) without a pod template: ConfigMap, Service" in err


def test_explain_names_the_workload_and_its_template(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "mutate", "--explain", "-f", MULTI, "--objects", CLUSTER)
    assert "# pod template of cronjob/nightly in namespace team-a: adds ghcr-org" in out
    assert "ghcr.io/org/report uses ghcr-org (keyring match); added ghcr-org" in out
    assert "# pod template of deployment/opted-out in namespace team-a: pod annotation" in out
    assert len(list(yaml.safe_load_all(out))) == 10


def test_stdin_is_read_with_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "sys.stdin", io.StringIO((FIXTURES / "workloads" / "multi-kind.yaml").read_text())
    )
    code, out, _ = run(capsys, "mutate", "-f", "-", "--objects", CLUSTER)
    assert code == 0
    assert len(list(yaml.safe_load_all(out))) == 10


def test_helm_template_output_of_this_chart_through_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    helm = find_helm()
    if helm is None:
        pytest.fail("helm not found: run `bash .ci/install-helm.sh`", pytrace=False)
    rendered = subprocess.run(
        [helm, "template", "psi", str(CHART), "-n", "team-a",
         "--set", "image.repository=registry.example.com/psi/pullsecret-injector"],
        capture_output=True, text=True, timeout=120, check=True,
        env={"HELM_CACHE_HOME": "/tmp/psi-helm-cache", "HOME": tempfile.gettempdir()},
    ).stdout  # fmt: skip
    keys = [
        d["data"]["tls.key"] for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Secret"
    ]
    assert len(keys) == 2  # the chart's CA and serving keys are in the input...
    monkeypatch.setattr("sys.stdin", io.StringIO(rendered))
    code, out, err = run(capsys, "mutate", "-f", "-", "--objects", CLUSTER)
    assert code == 0
    assert not [k for k in keys if k in out]  # ...and never echoed: only workloads are
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out)}
    assert sorted(docs) == [
        "Deployment/psi-pullsecret-injector",
        "Pod/psi-pullsecret-injector-test",
    ]
    for doc in docs.values():
        assert template_secrets(doc) == ["example-registry", "explicit-regcred"]
    assert "MutatingWebhookConfiguration" in err and "Secret" in err


def test_a_workload_without_a_template_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert pod_of({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}, "d") is None


def test_patches_move_under_the_template() -> None:
    cron = next(k for k in KINDS if k.kind == "CronJob")
    patch = [{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "a"}]}]
    assert workload_patch(cron, patch)[0]["path"] == (
        "/spec/jobTemplate/spec/template/spec/imagePullSecrets"
    )


@pytest.mark.parametrize(
    ("ref", "kind"),
    [("pod/x", "Pod"), ("po/x", "Pod"), ("deploy/x", "Deployment"), ("deployment/x", "Deployment"),
     ("deployments.apps/x", "Deployment"), ("sts/x", "StatefulSet"), ("ds/x", "DaemonSet"),
     ("rs/x", "ReplicaSet"), ("rc/x", "ReplicationController"), ("job/x", "Job"),
     ("cronjob/x", "CronJob"), ("cj/x", "CronJob"), ("podtemplate/x", "PodTemplate")],
)  # fmt: skip
def test_kubectl_kind_names_are_understood(ref: str, kind: str) -> None:
    assert parse_ref(ref)[0].kind == kind
    assert parse_ref(ref)[1] == "x"


@pytest.mark.parametrize("ref", ["svc/x", "pod", "pod/", "deploy/a/b"])
def test_other_refs_are_refused(ref: str) -> None:
    with pytest.raises(WorkloadError):
        parse_ref(ref)


def test_the_namespaces_a_live_read_needs() -> None:
    objects = [
        *yaml.safe_load_all((FIXTURES / "workloads" / "multi-kind.yaml").read_text()),
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": {}},  # -n
        {"kind": "AdmissionReview", "request": {"namespace": "team-b"}},
        {"kind": "Secret", "metadata": {"name": "s", "namespace": "secrets-only"}},
    ]
    assert input_namespaces(objects, "dflt") == {"team-a", "team-b", "dflt"}
