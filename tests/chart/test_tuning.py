"""The chart's `tuning` values reach `serve`: every flag the Deployment passes is one the
real command line accepts, and lands in the Settings it serves with."""

from __future__ import annotations

from typing import Any

import pytest
from chartlib import Helm, find

from webhook.cli import build_parser
from webhook.config import Settings, settings_from_args


def _serve_settings(helm: Helm, values: dict[str, Any] | None = None) -> Settings:
    docs = helm.render(values=values)
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    args = build_parser().parse_args(["serve", *container["args"]])
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if name.startswith("PSI_"):
                mp.setenv(name, value)
        return settings_from_args(args)


def test_the_defaults_reach_serve_as_its_own_defaults(helm: Helm) -> None:
    settings = _serve_settings(helm)
    defaults: dict[str, Any] = {
        name: Settings.model_fields[name].default
        for name in (
            "watch_timeout_seconds",
            "list_page_size",
            "live_read_timeout",
            "replication_qps",
            "replication_burst",
            "replication_workers",
            "replication_resync_seconds",
            "replication_admission_timeout",
            "replication_request_timeout",
            "lease_duration_seconds",
            "lease_renew_deadline_seconds",
            "lease_retry_period_seconds",
            "cert_reload_seconds",
            "max_body_bytes",
        )
    }
    assert {name: getattr(settings, name) for name in defaults} == defaults


def test_every_tuning_value_reaches_serve(helm: Helm) -> None:
    tuning = {
        "watch": {"timeoutSeconds": 120, "pageSize": 250},
        "liveReadTimeoutSeconds": 0.5,
        "certReloadSeconds": 30,
        "maxBodyBytes": 10_000_000,  # a large integer: rendered as one, not as 1e+07
        "replication": {
            "qps": 20,
            "burst": 2_000_000,
            "workers": 4,
            "resyncSeconds": 600,
            "admissionTimeoutSeconds": 1.5,
            "requestTimeoutSeconds": 5,
        },
        "leaderElection": {
            "leaseDurationSeconds": 30,
            "renewDeadlineSeconds": 20,
            "retryPeriodSeconds": 4,
        },
    }
    settings = _serve_settings(helm, {"tuning": tuning})
    assert settings.watch_timeout_seconds == 120
    assert settings.list_page_size == 250
    assert settings.live_read_timeout == 0.5
    assert settings.cert_reload_seconds == 30
    assert settings.max_body_bytes == 10_000_000
    assert (settings.replication_qps, settings.replication_burst) == (20, 2_000_000)
    assert settings.replication_workers == 4
    assert settings.replication_resync_seconds == 600
    assert settings.replication_admission_timeout == 1.5
    assert settings.replication_request_timeout == 5
    assert (
        settings.lease_duration_seconds,
        settings.lease_renew_deadline_seconds,
        settings.lease_retry_period_seconds,
    ) == (30, 20, 4)


def _args(helm: Helm, *sets: str) -> list[str]:
    docs = helm.render(*sets)
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_without_replication_no_replication_flag_is_passed(helm: Helm) -> None:
    args = _args(helm, "replication.enabled=false")
    assert not [a for a in args if a.startswith("--replication-")]
    # stuck-pod recovery (on by default) campaigns for the Lease itself: its timings stay
    assert "--lease-duration-seconds=15" in args
    assert "--watch-timeout-seconds=300" in args
    args = _args(helm, "replication.enabled=false", "recovery.mode=off")
    assert not [a for a in args if a.startswith(("--replication-", "--lease-"))]


def test_the_recovery_values_reach_serve(helm: Helm) -> None:
    values = {
        "recovery": {"mode": "event", "evictionsPerMinute": 2.5},
        "webhook": {"excludeNamespaces": ["monitoring"]},
    }
    settings = _serve_settings(helm, values)
    assert (settings.recovery_mode, settings.recovery_evictions_per_minute) == ("event", 2.5)
    assert settings.recovery_exclude_namespaces == ("monitoring",)
    assert _serve_settings(helm).recovery_mode == Settings.model_fields["recovery_mode"].default


# ---- limits and shutdown (issue 11): the `server` values -------------------------------

SERVER_VALUES = {
    "maxHeaderBytes": "max_header_bytes",
    "headerReadTimeoutSeconds": "header_read_timeout",
    "bodyReadTimeoutSeconds": "body_read_timeout",
    "idleTimeoutSeconds": "idle_timeout",
    "maxConnections": "max_connections",
    "maxInFlightBodyBytes": "max_inflight_body_bytes",
    "largeReviewBytes": "large_review_bytes",
    "largeReviewWorkers": "large_review_workers",
    "maxContainers": "max_containers",
    "drainSeconds": "drain_seconds",
    "shutdownTimeoutSeconds": "shutdown_timeout",
}


def test_the_server_defaults_reach_serve_as_its_own_defaults(helm: Helm) -> None:
    settings = _serve_settings(helm)
    defaults = {name: Settings.model_fields[name].default for name in SERVER_VALUES.values()}
    assert {name: getattr(settings, name) for name in defaults} == defaults


def test_every_server_value_reaches_serve(helm: Helm) -> None:
    server = {
        "maxHeaderBytes": 65536,
        "headerReadTimeoutSeconds": 5,
        "bodyReadTimeoutSeconds": 6,
        "idleTimeoutSeconds": 45,
        "maxConnections": 64,
        "maxInFlightBodyBytes": 100_000_000,  # a large integer: rendered as one
        "largeReviewBytes": 524288,
        "largeReviewWorkers": 2,
        "maxContainers": 2000,
        "drainSeconds": 7.5,
        "shutdownTimeoutSeconds": 8,
    }
    assert set(server) == set(SERVER_VALUES)
    settings = _serve_settings(helm, {"server": server, "terminationGracePeriodSeconds": 30})
    assert {SERVER_VALUES[k]: getattr(settings, SERVER_VALUES[k]) for k in server} == {
        SERVER_VALUES[k]: v for k, v in server.items()
    }
