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
