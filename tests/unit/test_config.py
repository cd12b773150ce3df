"""Settings: validated once, flags over environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from webhook.cli import build_parser, main
from webhook.cluster.leader import LeaseTimings
from webhook.cluster.reflector import WatchOptions
from webhook.config import Settings, env_of, flag_of, settings_from_args
from webhook.replication.controller import ReplicationOptions


def test_lists_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSI_PRIVATE_REGISTRIES", "registry.example.com, ghcr.io")
    monkeypatch.setenv("PSI_SOURCE_NAMESPACES", "tools,registries")
    monkeypatch.setenv("PSI_REPLICATION_ENABLED", "false")
    s = Settings(dev=True)
    assert s.private_registries == ("registry.example.com", "ghcr.io")
    assert s.source_namespaces == ("tools", "registries")
    assert s.replication_enabled is False


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSI_PORT", "9443")
    monkeypatch.setenv("PSI_LOG_LEVEL", "debug")
    args = build_parser().parse_args(["serve", "--dev", "--port", "10443"])
    s = settings_from_args(args)
    assert s.port == 10443 and s.log_level == "debug"


def test_a_certificate_is_required_unless_dev() -> None:
    with pytest.raises(ValidationError, match="no serving certificate"):
        Settings()
    with pytest.raises(ValidationError, match="must be given together"):
        Settings(cert_file=Path("tls.crt"))


def test_an_invalid_secret_selector_is_refused_before_serving() -> None:
    with pytest.raises(ValidationError, match="secret_selector"):
        Settings(dev=True, secret_selector="a in x")


def test_objects_and_kubeconfig_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="exclusive"):
        Settings(dev=True, objects=(Path("x.yaml"),), kubeconfig=Path("kc"))


def test_serve_reports_invalid_settings_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "10443"]) == 2
    assert "no serving certificate" in capsys.readouterr().err


# ---- one Settings model: flags, environment and help come from its fields ---------------


def _serve_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["serve"].format_help()  # type: ignore[attr-defined,no-any-return]


def test_every_setting_is_a_flag_with_its_environment_variable_in_serve_help() -> None:
    text = " ".join(_serve_help().split())
    for name, info in Settings.model_fields.items():
        assert flag_of(name, info) in text, name
        assert env_of(name) in text, name


def test_each_setting_is_read_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PSI_REPLICATION_QPS", "25")
    monkeypatch.setenv("PSI_LEASE_DURATION_SECONDS", "30")
    monkeypatch.setenv("PSI_WATCH_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("PSI_LIST_PAGE_SIZE", "100")
    s = settings_from_args(build_parser().parse_args(["serve", "--dev"]))
    assert (s.replication_qps, s.lease_duration_seconds) == (25, 30)
    assert (s.watch_timeout_seconds, s.list_page_size) == (60, 100)


def test_workers_is_not_a_serve_option(capsys: pytest.CaptureFixture[str]) -> None:
    """One process per pod: a flag that would do nothing (or half) is refused."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--dev", "--workers", "2"])
    assert exit_info.value.code == 2
    assert "--workers" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="workers"):
        Settings(dev=True, workers=2)  # type: ignore[call-arg]


def test_lease_timings_must_nest() -> None:
    with pytest.raises(ValidationError, match="lease_retry_period_seconds"):
        Settings(dev=True, lease_renew_deadline_seconds=20)


def test_the_options_objects_default_to_the_settings_defaults() -> None:
    """ReplicationOptions, LeaseTimings and WatchOptions repeat no number of their own."""
    settings = Settings(dev=True)
    assert ReplicationOptions.of(settings) == ReplicationOptions()
    assert LeaseTimings() == ReplicationOptions.of(settings).timings
    assert WatchOptions.of(settings) == WatchOptions()


def test_the_body_budget_must_hold_the_largest_body() -> None:
    with pytest.raises(ValidationError, match="max_inflight_body_bytes must be at least"):
        Settings(dev=True, max_body_bytes=2048, max_inflight_body_bytes=1024)


def test_recovery_settings_from_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(dev=True).recovery_mode == "evict"  # the documented default
    assert Settings(dev=True).recovery_evictions_per_minute == 10
    monkeypatch.setenv("PSI_RECOVERY_MODE", "event")
    monkeypatch.setenv("PSI_RECOVERY_EXCLUDE_NAMESPACES", "monitoring, tools")
    s = Settings(dev=True)
    assert s.recovery_mode == "event"
    assert s.recovery_exclude_namespaces == ("monitoring", "tools")
    args = build_parser().parse_args(
        ["serve", "--dev", "--recovery-mode", "off", "--recovery-evictions-per-minute", "2.5"]
    )
    s = settings_from_args(args)
    assert (s.recovery_mode, s.recovery_evictions_per_minute) == ("off", 2.5)


@pytest.mark.parametrize("bad", [{"recovery_mode": "delete"}, {"recovery_evictions_per_minute": 0}])
def test_invalid_recovery_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="recovery"):
        Settings(dev=True, **bad)  # type: ignore[arg-type]


def test_recovery_off_builds_no_controller() -> None:
    from webhook.replication import recovery  # noqa: PLC0415

    off = Settings(dev=True, recovery_mode="off")
    assert recovery.build(None, None, None, off, None) is None  # type: ignore[arg-type]
