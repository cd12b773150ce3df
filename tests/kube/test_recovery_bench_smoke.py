"""bench/recovery_scale.py measures what it says, at a tiny size (no timings asserted)."""

from __future__ import annotations

from bench import recovery_scale


def test_latency_run_evicts_every_stuck_pod_once() -> None:
    result = recovery_scale.latency(pods=12, namespaces=3, evictions_per_minute=1e6)
    assert result["pods"] == 12 and result["namespaces"] == 3
    assert 0 <= result["secret_to_eviction_p50_seconds"] <= result["secret_to_eviction_max_seconds"]


def test_memory_run_lists_every_pod_and_compares_trimmed_with_full() -> None:
    result = recovery_scale.memory(pods=40, namespaces=4)
    assert result["controller_pods_in_store"] == 40
    assert 0 < result["trimmed_bytes_per_pod"] < result["full_bytes_per_pod"]
