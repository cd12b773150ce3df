"""The PrometheusRule (metrics.prometheusRule): rendered by the real helm, linted by
`promtool check rules` and unit-tested by `promtool test rules` with crafted series, each
alert shown both firing and staying silent.

promtool comes from Debian's `prometheus` package: `bash scripts/install-promtool.sh` (as
root), or PSI_PROMTOOL naming the binary. Without it these tests FAIL, never skip: alerts
that nobody evaluated must not pass for tested ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import FULLNAME, NAMESPACE, ROOT, Helm, find

from webhook.cluster.store import Store
from webhook.metrics import Metrics

ENABLED = "metrics.prometheusRule.enabled=true"
WEBHOOK_NAME = "inject.pullsecret-injector.io"
OURS = f'job="{FULLNAME}",namespace="{NAMESPACE}"'
POD = f"{FULLNAME}-7d9f8b6c5d-x2x4q"


# ---- promtool --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    explicit = os.environ.get("PSI_PROMTOOL")
    if explicit:
        found = explicit if Path(explicit).is_file() else None
    else:
        found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found (PSI_PROMTOOL, PATH): run `bash scripts/install-promtool.sh` "
            "as root (Debian's prometheus package ships it). These tests never skip.",
            pytrace=False,
        )
    return found


def _promtool(binary: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# ---- the rendered rules ----------------------------------------------------------------------


def _rule_object(helm: Helm, *set_args: str, **kw: Any) -> dict[str, Any]:
    return find(helm.render(ENABLED, *set_args, **kw), "PrometheusRule")


@pytest.fixture(scope="module")
def rule(helm: Helm) -> dict[str, Any]:
    return _rule_object(helm)


def _alerts(rule_object: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_object["spec"]["groups"] for r in g["rules"]}


@pytest.fixture
def rule_dir(rule: dict[str, Any], tmp_path: Path) -> Path:
    """A directory holding rules.yaml: the PrometheusRule's groups as a Prometheus rule file."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return tmp_path


# ---- promtool check rules --------------------------------------------------------------------


def test_promtool_check_rules_accepts_the_rendered_rules(promtool: str, rule_dir: Path) -> None:
    result = _promtool(promtool, "check", "rules", "rules.yaml", cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_check_rules_rejects_a_broken_expression(promtool: str, rule_dir: Path) -> None:
    """The lint can fail: one unbalanced parenthesis in one expression is reported."""
    groups = yaml.safe_load((rule_dir / "rules.yaml").read_text())["groups"]
    groups[0]["rules"][0]["expr"] = "sum by (job) (rate(pullsecret_injector_x_total[5m])"
    (rule_dir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    result = _promtool(promtool, "check", "rules", "rules.yaml", cwd=rule_dir)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


# ---- promtool test rules: each alert firing and silent ---------------------------------------


@dataclass(frozen=True)
class Case:
    """Input series (selector -> promtool expanding notation, one sample a minute) and, at
    eval_time, the alerts expected: (labels beyond alertname and severity, description)."""

    name: str
    series: dict[str, str]
    eval_time: str
    fires: list[tuple[dict[str, str], str]] = field(default_factory=list)


ERRORS = f'pullsecret_injector_admission_requests_total{{{OURS},pod="{POD}",outcome="error"}}'
PATCHED = f'pullsecret_injector_admission_requests_total{{{OURS},pod="{POD}",outcome="patched"}}'
FAIL_OPEN = (
    f'apiserver_admission_webhook_fail_open_count{{job="apiserver",instance="10.0.0.1:6443",'
    f'name="{WEBHOOK_NAME}",type="admit"}}'
)
SECRETS_AGE = f'pullsecret_injector_last_sync_age_seconds{{{OURS},pod="{POD}",resource="secrets"}}'
EXPIRY = f'pullsecret_injector_serving_certificate_expiry_timestamp_seconds{{{OURS},pod="{POD}"}}'
COPY_ERRORS = (
    f'pullsecret_injector_replication_actions_total{{{OURS},pod="{POD}",action="create",'
    'result="error"}'
)
COPIES_OK = (
    f'pullsecret_injector_replication_actions_total{{{OURS},pod="{POD}",action="create",'
    'result="ok"}'
)
RELEASE = {"job": FULLNAME, "namespace": NAMESPACE}
DAY = 86400

ALERTS: dict[str, list[Case]] = {
    "PullsecretInjectorFailingOpen": [
        Case(
            "10% errors for 20 minutes",
            {PATCHED: "0+90x30", ERRORS: "0+10x30"},
            "20m",
            [
                (
                    RELEASE,
                    f"10% of the admissions answered by {FULLNAME} in namespace {NAMESPACE} "
                    "over the last 5 minutes failed inside the webhook and were admitted "
                    "unchanged (fail open).",
                )
            ],
        ),
        Case("2% errors: below the 5% threshold", {PATCHED: "0+98x30", ERRORS: "0+2x30"}, "20m"),
        Case("10% errors, but for less than `for`", {PATCHED: "0+90x30", ERRORS: "0+10x30"}, "8m"),
        Case(
            "another release's errors",
            {
                PATCHED: "0+100x30",
                ERRORS: "0x30",
                ERRORS.replace(f'job="{FULLNAME}"', 'job="other-injector"'): "0+50x30",
            },
            "20m",
        ),
        Case("no admissions at all", {PATCHED: "0x30", ERRORS: "0x30"}, "20m"),
    ],
    "PullsecretInjectorApiServerFailingOpen": [
        Case(
            "one fail-open a minute for 25 minutes",
            {FAIL_OPEN: "0+1x40"},
            "25m",
            [
                (
                    {"name": WEBHOOK_NAME},
                    f"The API server called webhook {WEBHOOK_NAME} without a usable answer 10 "
                    "times in the last 10 minutes; failurePolicy Ignore admitted those pods "
                    "unchanged, without imagePullSecrets.",
                )
            ],
        ),
        Case("a single blip long ago (a rollout)", {FAIL_OPEN: "0x5 1x35"}, "30m"),
        Case(
            "another webhook failing open",
            {FAIL_OPEN: "0x40", FAIL_OPEN.replace(WEBHOOK_NAME, "validate.other.io"): "0+1x40"},
            "25m",
        ),
    ],
    "PullsecretInjectorStaleClusterState": [
        Case(
            "the secrets watch stuck for 25 minutes",
            {SECRETS_AGE: "0+60x30"},
            "25m",
            [
                (
                    {**RELEASE, "pod": POD, "resource": "secrets"},
                    f"{POD} has seen no event, bookmark or reconnect of its secrets watch for "
                    "25m 0s; it injects from that old picture, missing newer registry Secrets "
                    "and Namespaces.",
                )
            ],
        ),
        Case("a healthy watch", {SECRETS_AGE: "30x30"}, "25m"),
        Case("stale for a moment, then reconnected", {SECRETS_AGE: "0+100x10 0+60x20"}, "20m"),
    ],
    "PullsecretInjectorCertificateExpiring": [
        Case(
            "20 days left",
            {EXPIRY: f"{20 * DAY}x180"},
            "2h",
            [
                (
                    {**RELEASE, "pod": POD},
                    f"The serving certificate of {POD} expires in 19d 22h 0m 0s (negative: "
                    "already expired).",
                )
            ],
        ),
        Case("60 days left", {EXPIRY: f"{60 * DAY}x180"}, "2h"),
        Case(
            "20 days left, renewed within the hour (cert-manager)",
            {EXPIRY: f"{20 * DAY}x30 {110 * DAY}x150"},
            "2h",
        ),
    ],
    "PullsecretInjectorReplicationErrors": [
        Case(
            "one failed copy write a minute",
            {COPY_ERRORS: "0+1x60", COPIES_OK: "0+5x60"},
            "40m",
            [
                (
                    RELEASE,
                    f"15 copy writes by {FULLNAME} in namespace {NAMESPACE} failed in the last "
                    "15 minutes; namespaces miss or keep stale copies of their source "
                    "registries.",
                )
            ],
        ),
        Case("only successful writes", {COPY_ERRORS: "0x60", COPIES_OK: "0+5x60"}, "40m"),
        Case("a burst of errors, retried", {COPY_ERRORS: "0x5 3x55", COPIES_OK: "0+5x60"}, "40m"),
    ],
}


def _unit_tests(alert: str, rule: dict[str, Any], cases: list[Case]) -> dict[str, Any]:
    """promtool's test file: one test group per case, so cases never share series."""
    severity = rule["labels"]["severity"]
    static = {k: v for k, v in rule["annotations"].items() if k != "description"}
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"{alert}: {case.name}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": case.eval_time,
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": severity, **labels},
                                "exp_annotations": {**static, "description": description},
                            }
                            for labels, description in case.fires
                        ],
                    }
                ],
            }
            for case in cases
        ],
    }


def test_every_alert_has_cases_that_fire_and_cases_that_do_not(rule: dict[str, Any]) -> None:
    assert set(_alerts(rule)) == set(ALERTS)
    for alert, cases in ALERTS.items():
        assert any(c.fires for c in cases), f"{alert}: no case fires it"
        assert any(not c.fires for c in cases), f"{alert}: no case leaves it silent"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_promtool_test_rules_fires_each_alert_only_when_it_should(
    promtool: str, rule: dict[str, Any], rule_dir: Path, alert: str
) -> None:
    tests = _unit_tests(alert, _alerts(rule)[alert], ALERTS[alert])
    (rule_dir / "tests.yaml").write_text(yaml.safe_dump(tests, width=1000))
    result = _promtool(promtool, "test", "rules", "tests.yaml", cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_an_alert_does_not_do_what_a_case_expects(
    promtool: str, rule: dict[str, Any], rule_dir: Path
) -> None:
    """The harness can fail: a firing case marked silent, and a silent one marked firing."""
    alert = "PullsecretInjectorFailingOpen"
    firing, silent = ALERTS[alert][0], ALERTS[alert][1]
    wrong = [
        Case(firing.name, firing.series, firing.eval_time),
        Case(silent.name, silent.series, silent.eval_time, firing.fires),
    ]
    tests = _unit_tests(alert, _alerts(rule)[alert], wrong)
    (rule_dir / "tests.yaml").write_text(yaml.safe_dump(tests, width=1000))
    result = _promtool(promtool, "test", "rules", "tests.yaml", cwd=rule_dir)
    assert result.returncode != 0
    assert result.stdout.count("FAILED") + result.stderr.count("FAILED") >= 1
    assert firing.name in result.stdout + result.stderr
    assert silent.name in result.stdout + result.stderr


# ---- what the rules refer to exists ----------------------------------------------------------


def _exported_names() -> set[str]:
    """Every sample name the webhook's registry can export (Counter -> _total, ...)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in Metrics(store=Store()).registry.collect()  # as `serve` builds it
        for suffix in suffixes[family.type]
    }


def test_rules_use_only_metric_names_the_webhook_exports(rule: dict[str, Any]) -> None:
    used = {
        name
        for r in _alerts(rule).values()
        for name in re.findall(r"\bpullsecret_injector_\w+", r["expr"])
    }
    assert used == {
        "pullsecret_injector_admission_requests_total",
        "pullsecret_injector_last_sync_age_seconds",
        "pullsecret_injector_serving_certificate_expiry_timestamp_seconds",
        "pullsecret_injector_replication_actions_total",
    }
    assert used <= _exported_names()


def test_fail_open_alert_names_the_webhook_the_chart_registers(
    helm: Helm, rule: dict[str, Any]
) -> None:
    mwc = find(helm.render(ENABLED), "MutatingWebhookConfiguration")
    (webhook,) = mwc["webhooks"]
    expr = _alerts(rule)["PullsecretInjectorApiServerFailingOpen"]["expr"]
    assert f'name="{webhook["name"]}"' in expr


def test_each_runbook_url_points_at_a_section_of_docs_runbooks(rule: dict[str, Any]) -> None:
    headings = {
        line.lstrip("#").strip().lower()
        for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("## ")
    }
    for alert, r in _alerts(rule).items():
        base, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert base.endswith("/docs/runbooks.md"), alert
        assert anchor == alert.lower() and anchor in headings, alert
        for key in ("summary", "description"):
            assert r["annotations"][key].strip(), f"{alert}: no {key}"


# ---- values ----------------------------------------------------------------------------------


def test_no_prometheus_rule_unless_enabled(helm: Helm) -> None:
    assert "PrometheusRule" not in {d["kind"] for d in helm.render()}


def test_rule_object_lands_where_prometheus_looks_for_it(helm: Helm) -> None:
    obj = _rule_object(
        helm,
        "metrics.prometheusRule.namespace=monitoring",
        "metrics.prometheusRule.additionalLabels.release=prometheus",
    )
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["metadata"]["namespace"] == "monitoring"
    assert obj["metadata"]["labels"]["release"] == "prometheus"
    assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "psi"
    default = _rule_object(helm)
    assert default["metadata"]["namespace"] == NAMESPACE


def test_per_alert_tunables_reach_the_rules(helm: Helm) -> None:
    alerts = _alerts(
        _rule_object(
            helm,
            "metrics.prometheusRule.alerts.failingOpen.for=3m",
            "metrics.prometheusRule.alerts.staleClusterState.maxAgeSeconds=1800",
            "metrics.prometheusRule.alerts.certificateExpiring.days=14",
            "metrics.prometheusRule.alerts.certificateExpiring.severity=critical",
            "metrics.prometheusRule.alerts.replicationErrors.enabled=false",
            "metrics.prometheusRule.ruleLabels.team=platform",
            "metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/psi",
            # a values file: --set passes 0.2 as a string, which the schema rejects
            values={
                "metrics": {"prometheusRule": {"alerts": {"failingOpen": {"errorRatio": 0.2}}}}
            },
        )
    )
    assert "PullsecretInjectorReplicationErrors" not in alerts
    assert alerts["PullsecretInjectorFailingOpen"]["expr"].rstrip().endswith("> 0.2")
    assert alerts["PullsecretInjectorFailingOpen"]["for"] == "3m"
    assert alerts["PullsecretInjectorStaleClusterState"]["expr"].rstrip().endswith("> 1800")
    assert "< 14 * 86400" in alerts["PullsecretInjectorCertificateExpiring"]["expr"]
    assert alerts["PullsecretInjectorCertificateExpiring"]["labels"] == {
        "severity": "critical",
        "team": "platform",
    }
    for name, r in alerts.items():
        assert r["labels"]["team"] == "platform"
        assert r["annotations"]["runbook_url"] == f"https://wiki.example.com/psi#{name.lower()}"


def test_selector_picks_the_series_of_a_custom_scrape(helm: Helm) -> None:
    custom = 'job="kubernetes-pods",app_kubernetes_io_instance="psi"'
    alerts = _alerts(
        _rule_object(helm, values={"metrics": {"prometheusRule": {"selector": custom}}})
    )
    for name, r in alerts.items():
        if name == "PullsecretInjectorApiServerFailingOpen":
            assert custom not in r["expr"]  # the API server's series carry its own labels
        else:
            assert custom in r["expr"], name
            assert OURS not in r["expr"], name
