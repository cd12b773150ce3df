"""The pure parts of `explain` and `doctor`: label selectors as the API server evaluates
them, whether the webhook is called, the verdicts on stuck pods, probe images, reports."""

from __future__ import annotations

import importlib
import tomllib
from typing import Any

import pytest
from helpers import ROOT, registry_secret

from webhook.cluster.store import Store
from webhook.core.injection import Policy, decide
from webhook.kubelet.labels import SelectorError, parse_selector
from webhook.ops.doctor import exit_code, render
from webhook.ops.doctor_dry_run import probe_image
from webhook.ops.doctor_model import Check, Install, Status
from webhook.ops.explain import explain_pod, label_selector, webhook_scope

CHART_SELECTOR = {
    "matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
         "values": ["kube-system", "psi"]},
        {"key": "pullsecret-injector.io/inject", "operator": "NotIn", "values": ["disabled"]},
    ]
}  # fmt: skip


def ns(name: str, **labels: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **labels}


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (None, {}, True),  # no selector: everything, as the API server treats it
        ({}, ns("kube-system"), True),
        (CHART_SELECTOR, ns("kube-system"), False),
        (CHART_SELECTOR, ns("psi"), False),
        (CHART_SELECTOR, ns("team-a"), True),
        (CHART_SELECTOR, ns("team-a", **{"pullsecret-injector.io/inject": "disabled"}), False),
        ({"matchLabels": {"team": "a"}}, ns("x", team="a"), True),
        ({"matchLabels": {"team": "a"}}, ns("x", team="b"), False),
        ({"matchLabels": {"team": ""}}, ns("x", team=""), True),  # "team=" as text
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, ns("x", team=""), True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, ns("x"), True),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["1", "2"]}]},
         ns("x", t="2"), True),
    ],
)  # fmt: skip
def test_label_selector_objects_match_as_the_api_server_does(
    selector: Any, labels: dict[str, str], selected: bool
) -> None:
    parsed = label_selector(selector)
    assert parsed.matches(labels) is selected
    # its text is a valid string selector meaning the same (used as ?labelSelector=)
    assert parse_selector(parsed.text).matches(labels) is selected


def test_an_unknown_operator_is_an_error() -> None:
    with pytest.raises(SelectorError):
        label_selector({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


def config(**hook: Any) -> dict[str, Any]:
    return {"metadata": {"name": "psi-pullsecret-injector"}, "webhooks": [hook]}


def test_webhook_scope_says_why_the_webhook_is_or_is_not_called() -> None:
    called, why = webhook_scope(None, ns("a"), {})
    assert called and "assuming" in why
    called, why = webhook_scope([], ns("a"), {})
    assert not called and "no pullsecret-injector MutatingWebhookConfiguration" in why
    called, why = webhook_scope([config(namespaceSelector=CHART_SELECTOR)], ns("psi"), {})
    assert not called and "namespaceSelector excludes this namespace" in why
    hook = config(objectSelector={"matchLabels": {"inject": "yes"}})
    called, why = webhook_scope([hook], ns("a"), {"app": "x"})
    assert not called and "objectSelector (inject=yes) does not select this pod" in why
    called, _ = webhook_scope([hook], ns("a"), {"inject": "yes"})
    assert called


def stuck(*secrets: str, owned: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if owned:
        meta["ownerReferences"] = [
            {"kind": "ReplicaSet", "name": "r", "uid": "u", "controller": True}
        ]
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "registry.example.com/a:1"}]}
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    waiting = {"reason": "ErrImagePull", "message": "401 Unauthorized"}
    status = {"containerStatuses": [{"name": "c", "state": {"waiting": waiting}}]}
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.fixture
def store() -> Store:
    s = Store()
    s.replace_secrets([registry_secret("team", "reg", "registry.example.com")])
    return s


def verdict(store: Store, pod: dict[str, Any], *, called: bool = True) -> str:
    ex = explain_pod("pod/p", pod, "team", store, Policy(), webhook=(called, "why"))
    assert ex.images[0].pull_error == "ErrImagePull: 401 Unauthorized"
    assert ex.images[0].verdict is not None
    return ex.images[0].verdict


def test_verdicts_on_a_failed_pull(store: Store) -> None:
    bare = verdict(store, stuck())
    assert bare.startswith("fixable now: reg in scope has credentials for it")
    assert "recreate it (delete and apply again)" in bare
    assert "the recovery controller never deletes a bare pod" in bare
    owned = verdict(store, stuck(owned=True))
    assert "the recovery controller (recovery.mode evict, the default) evicts it" in owned
    assert "ReplicaSet r recreates it" in owned
    has = verdict(store, stuck("reg"))
    assert has.startswith("not a missing secret: the pod already uses reg")
    assert "recovery controller" not in has


def test_the_recovery_outlook_follows_the_recovery_rules(store: Store) -> None:
    ready = stuck(owned=True)
    ready["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    ready["status"]["containerStatuses"].append(
        {"name": "side", "ready": True, "state": {"running": {}}}
    )
    assert "leaves it alone (a container is ready)" in verdict(store, ready)
    going = stuck(owned=True)
    going["metadata"]["deletionTimestamp"] = "2026-12-02T18:00:00Z"
    assert "going away already" in verdict(store, going)
    outside = verdict(store, stuck(), called=False)
    assert "the webhook is not called for this pod" in outside
    assert verdict(Store(), stuck()).startswith("no registry secret in namespace 'team'")


def test_a_pod_that_pulls_fine_gets_no_verdict(store: Store) -> None:
    pod = stuck()
    del pod["status"]
    ex = explain_pod("pod/p", pod, "team", store, Policy())
    assert ex.images[0].pull_error is None and ex.images[0].verdict is None
    assert ex.would_add == ["reg"] and not ex.stuck


PROBE = "/pullsecret-injector-doctor-probe:0"


@pytest.mark.parametrize(
    ("host", "image"),
    [
        ("https://index.docker.io/v1/", "docker.io/pullsecret-injector/doctor-probe:0"),
        ("registry.example.com", "registry.example.com" + PROBE),
        ("*.internal.example.org", "doctor.internal.example.org" + PROBE),
        ("ghcr.io/org", "ghcr.io/org" + PROBE),
        ("registry.example.com:5000", "registry.example.com:5000" + PROBE),
    ],
)
def test_the_probe_image_is_one_the_secret_serves(host: str, image: str) -> None:
    secret = registry_secret("ns", "s", host)
    assert probe_image(secret) == image
    pod = {"spec": {"containers": [{"name": "probe", "image": image}]}}
    assert decide(pod, "ns", {"s": secret}, Policy()).add == ("s",)  # as the webhook decides


def test_exit_status_and_report() -> None:
    checks = [
        Check("a", Status.PASS, "fine", "never shown"),
        Check("bb", Status.WARN, "meh", "do this"),
    ]
    assert exit_code(checks[:1]) == 0
    assert exit_code(checks) == 1
    assert exit_code([*checks, Check("c", Status.FAIL, "bad", "do that")]) == 2
    assert exit_code(checks[1:]) == 3  # nothing verified: no PASS, no FAIL
    text = render(checks, Install("psi", "ns"))
    assert text.splitlines() == [
        "pullsecret-injector doctor: release psi, namespace ns",
        "PASS  a   fine",
        "WARN  bb  meh",
        "          fix: do this",
        "1 passed, 1 warning(s), 0 failure(s)",
    ]


def test_install_reads_the_webhooks_flags_from_its_deployment() -> None:
    inst = Install("psi", "psi-ns")
    assert inst.source_namespaces == ["psi-ns"] and inst.replication
    inst.deployment = {"spec": {"template": {"spec": {
        "serviceAccountName": "sa",
        "containers": [{
            "args": ["--source-namespace=a", "--source-namespace=b", "--secret-selector=x=y"],
            "env": [{"name": "PSI_REPLICATION_ENABLED", "value": "false"}],
        }],
    }}}}  # fmt: skip
    assert inst.service_account == "sa"
    assert inst.source_namespaces == ["a", "b"]
    assert not inst.replication
    assert inst.policy.secret_selector is not None
    assert inst.policy.secret_selector.text == "x=y"


def test_the_kubectl_plugin_is_the_same_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-pullsecrets"] == "webhook.cli:kubectl_main"  # kubectl's naming
    module, _, function = scripts["kubectl-pullsecrets"].partition(":")
    entry = getattr(importlib.import_module(module), function)
    monkeypatch.setattr("sys.argv", ["kubectl-pullsecrets", "--help"])  # as kubectl runs it
    with pytest.raises(SystemExit) as exited:
        entry()
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: kubectl pullsecrets [-h] [--version]")
    assert "{serve,mutate,explain,doctor,certs}" in usage
