"""webhook/metrics.py: cache gauges read from the store at scrape time."""

from __future__ import annotations

from helpers import registry_secret
from prometheus_client import generate_latest

from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.metrics import Metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_cache_gauges_follow_the_store_without_anyone_setting_them() -> None:
    store = Store()
    metrics = Metrics(store=store)
    assert _value(metrics, "pullsecret_injector_cache_secrets") == 0
    store.upsert_secret(registry_secret("a1", "one", "registry.example.com"))
    store.replace_namespaces({"a1": {}, "a2": {}})
    assert _value(metrics, "pullsecret_injector_cache_secrets") == 1
    assert _value(metrics, "pullsecret_injector_cache_namespaces") == 2


def test_staleness_is_exported_per_resource_once_it_proved_alive() -> None:
    store = Store()
    metrics = Metrics(store=store)
    age = "pullsecret_injector_last_sync_age_seconds"
    assert _value(metrics, age, resource=SECRETS) is None
    store.mark_synced(SECRETS)
    store.touch(NAMESPACES)
    assert (_value(metrics, age, resource=SECRETS) or -1) >= 0
    assert (_value(metrics, age, resource=NAMESPACES) or -1) >= 0


def test_without_a_store_there_are_no_cache_gauges() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert "pullsecret_injector_cache_secrets" not in text
    assert "pullsecret_injector_admission_requests" in text


def test_every_known_label_value_exists_at_zero_before_its_first_event() -> None:
    """A series that first appears at 1 hides that event from rate() (the FailingOpen
    alert is a rate of outcome="error")."""
    metrics = Metrics()
    for outcome in ("patched", "unchanged", "skipped", "bad_request", "error"):
        assert _value(metrics, "pullsecret_injector_admission_requests_total", outcome=outcome) == 0
    assert (
        _value(metrics, "pullsecret_injector_http_rejections_total", reason="header_timeout") == 0
    )
    assert (
        _value(metrics, "pullsecret_injector_recovery_actions_total", action="evict", result="ok")
        == 0
    )
    assert (
        _value(
            metrics,
            "pullsecret_injector_replication_actions_total",
            action="create",
            result="error",
        )
        == 0
    )


def test_process_metrics_build_info_and_buckets_past_the_webhook_timeout() -> None:
    metrics = Metrics()
    assert (_value(metrics, "process_resident_memory_bytes") or 0) > 0
    assert _value(metrics, "process_start_time_seconds") is not None
    text = generate_latest(metrics.registry).decode()
    assert 'pullsecret_injector_build_info{version="' in text
    for bound in ("3.0", "5.0", "30.0"):  # timeoutSeconds is 3 by default, at most 30
        assert f'pullsecret_injector_admission_duration_seconds_bucket{{le="{bound}"}}' in text
