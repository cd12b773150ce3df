"""Settings: validated once, flags over environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from webhook.cli import build_parser, main, settings_from_args
from webhook.config import Settings


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


def test_the_body_budget_must_hold_the_largest_body() -> None:
    with pytest.raises(ValidationError, match="max_inflight_body_bytes must be at least"):
        Settings(dev=True, max_body_bytes=2048, max_inflight_body_bytes=1024)
