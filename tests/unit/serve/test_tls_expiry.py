"""The serving certificate's not-after, exported for the CertificateExpiring alert."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from webhook.metrics import Metrics
from webhook.serve import certs
from webhook.serve.tls import CertReloader, server_context

EXPIRY = "pullsecret_injector_serving_certificate_expiry_timestamp_seconds"
ISSUED = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.UTC)


def _expiry(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(EXPIRY)


def _reloader(tmp_path: Path, days: int) -> tuple[CertReloader, Metrics, dict[str, Path]]:
    paths = certs.write_bundle(certs.generate(["localhost"], days=days, now=ISSUED), tmp_path)
    metrics = Metrics()
    ctx = server_context(paths["tls.crt"], paths["tls.key"])
    return CertReloader(ctx, paths["tls.crt"], paths["tls.key"], metrics), metrics, paths


def test_expiry_of_the_certificate_loaded_at_start_is_exported(tmp_path: Path) -> None:
    _, metrics, _ = _reloader(tmp_path, days=40)
    assert _expiry(metrics) == (ISSUED + dt.timedelta(days=40)).timestamp()


def test_a_rotated_certificate_moves_the_expiry(tmp_path: Path) -> None:
    reloader, metrics, paths = _reloader(tmp_path, days=40)
    ca = paths["ca.crt"].read_bytes(), paths["ca.key"].read_bytes()
    rotated = certs.generate(["localhost"], days=90, ca=ca, now=ISSUED + dt.timedelta(days=30))
    paths["tls.key"].write_bytes(rotated.key_pem)
    paths["tls.crt"].write_bytes(rotated.cert_pem)
    assert reloader.check()
    assert _expiry(metrics) == (ISSUED + dt.timedelta(days=120)).timestamp()


def test_a_failed_reload_keeps_the_expiry_of_the_certificate_still_served(
    tmp_path: Path,
) -> None:
    reloader, metrics, paths = _reloader(tmp_path, days=40)
    other = certs.generate(["localhost"], days=90, now=ISSUED)
    paths["tls.crt"].write_bytes(other.cert_pem)  # half-written: the key no longer matches
    assert not reloader.check()
    assert _expiry(metrics) == (ISSUED + dt.timedelta(days=40)).timestamp()
