"""selfSigned mode across upgrades: the chart reads its certificate Secrets back (`lookup`)
and keeps them while they are valid, renews what is close to expiry, and never breaks
`helm template`.

`helm template --dry-run=server` against tests/chart/fake_apiserver.py runs the same
lookups as `helm upgrade` does against a cluster, with the Secrets the test puts there.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chartlib import FULLNAME, NAMESPACE, Helm, find, parse
from cryptography import x509
from fake_apiserver import FakeCluster, fake_cluster

DAY = 86400
CA_SECRET = f"{FULLNAME}-ca"
TLS_SECRET = f"{FULLNAME}-tls"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeCluster, Path]]:
    with fake_cluster(tmp_path) as pair:
        yield pair


def _upgrade(helm: Helm, kubeconfig: Path, *set_args: str) -> list[dict[str, Any]]:
    """Render as `helm upgrade` does: lookups answered by the (fake) cluster."""
    result = helm.template(
        *set_args,
        extra=["--dry-run=server", "--disable-openapi-validation", "--is-upgrade"],
        env={"KUBECONFIG": str(kubeconfig)},
    )
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)


def _store(cluster: FakeCluster, docs: list[dict[str, Any]]) -> None:
    """What the API server keeps after the install/upgrade applied these documents."""
    for doc in docs:
        if doc["kind"] == "Secret":
            cluster.put_secret(doc)


def _pem(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def _ca_bundle(docs: list[dict[str, Any]]) -> bytes:
    mwc = find(docs, "MutatingWebhookConfiguration")
    return base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"])


def _certs_in(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def _set_not_after(cluster: FakeCluster, name: str, seconds_from_now: int) -> None:
    secret = cluster.secrets[(NAMESPACE, name)]
    stamp = str(int(time.time()) + seconds_from_now)
    secret["metadata"]["annotations"]["pullsecret-injector.io/not-after"] = stamp


def test_lookup_reaches_the_cluster(helm: Helm, cluster: tuple[FakeCluster, Path]) -> None:
    fake, kubeconfig = cluster
    _upgrade(helm, kubeconfig)
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{CA_SECRET}" in fake.requests
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}" in fake.requests


def test_offline_rendering_generates_a_fresh_pair_each_time(helm: Helm) -> None:
    """`helm template` has no cluster: it must still render, just not stably."""
    first, second = helm.render(), helm.render()
    assert _ca_bundle(first) != _ca_bundle(second)


def test_upgrade_keeps_the_certificate_and_ca_bundle(
    helm: Helm, cluster: tuple[FakeCluster, Path]
) -> None:
    fake, kubeconfig = cluster
    installed = _upgrade(helm, kubeconfig)
    _store(fake, installed)
    upgraded = _upgrade(helm, kubeconfig, "replicaCount=3")
    for name in (CA_SECRET, TLS_SECRET):
        assert find(upgraded, "Secret", name)["data"] == find(installed, "Secret", name)["data"]
    assert _ca_bundle(upgraded) == _ca_bundle(installed)
    # and again: stable over any number of upgrades
    _store(fake, upgraded)
    assert _ca_bundle(_upgrade(helm, kubeconfig)) == _ca_bundle(installed)


def test_serving_certificate_close_to_expiry_is_renewed_under_the_same_ca(
    helm: Helm, cluster: tuple[FakeCluster, Path]
) -> None:
    fake, kubeconfig = cluster
    installed = _upgrade(helm, kubeconfig)
    _store(fake, installed)
    _set_not_after(fake, TLS_SECRET, 30 * DAY)  # renewBeforeDays is 90
    upgraded = _upgrade(helm, kubeconfig)
    old_tls, new_tls = find(installed, "Secret", TLS_SECRET), find(upgraded, "Secret", TLS_SECRET)
    assert _pem(new_tls, "tls.crt") != _pem(old_tls, "tls.crt")
    assert _pem(new_tls, "tls.key") != _pem(old_tls, "tls.key")
    assert _ca_bundle(upgraded) == _ca_bundle(installed)  # nothing to re-trust
    (ca,) = _certs_in(_ca_bundle(upgraded))
    x509.load_pem_x509_certificate(_pem(new_tls, "tls.crt")).verify_directly_issued_by(ca)


def test_ca_close_to_expiry_is_replaced_and_the_old_one_stays_trusted_meanwhile(
    helm: Helm, cluster: tuple[FakeCluster, Path]
) -> None:
    fake, kubeconfig = cluster
    installed = _upgrade(helm, kubeconfig)
    _store(fake, installed)
    _set_not_after(fake, CA_SECRET, 10 * DAY)
    upgraded = _upgrade(helm, kubeconfig)
    (old_ca,) = _certs_in(_ca_bundle(installed))
    new_ca_pem = _pem(find(upgraded, "Secret", CA_SECRET), "tls.crt")
    assert new_ca_pem != _pem(find(installed, "Secret", CA_SECRET), "tls.crt")
    bundle = _certs_in(_ca_bundle(upgraded))
    # the new CA first, then the old one: pods still serving the old certificate (until
    # the kubelet refreshes their Secret volume) keep being trusted
    assert [c.subject for c in bundle] == [old_ca.subject, old_ca.subject]
    assert bundle[0] == x509.load_pem_x509_certificate(new_ca_pem)
    assert bundle[1] == old_ca
    new_leaf = x509.load_pem_x509_certificate(_pem(find(upgraded, "Secret", TLS_SECRET), "tls.crt"))
    new_leaf.verify_directly_issued_by(bundle[0])
    # the next upgrade drops the old CA
    _store(fake, upgraded)
    assert _certs_in(_ca_bundle(_upgrade(helm, kubeconfig))) == [bundle[0]]


def test_expired_ca_is_not_kept_in_the_bundle(
    helm: Helm, cluster: tuple[FakeCluster, Path]
) -> None:
    fake, kubeconfig = cluster
    _store(fake, _upgrade(helm, kubeconfig))
    _set_not_after(fake, CA_SECRET, -DAY)
    assert len(_certs_in(_ca_bundle(_upgrade(helm, kubeconfig)))) == 1


def test_certificate_for_other_names_is_reissued(
    helm: Helm, cluster: tuple[FakeCluster, Path]
) -> None:
    """A certificate made by another chart version for another set of names is replaced."""
    fake, kubeconfig = cluster
    installed = _upgrade(helm, kubeconfig)
    _store(fake, installed)
    annotations = fake.secrets[(NAMESPACE, TLS_SECRET)]["metadata"]["annotations"]
    annotations["pullsecret-injector.io/dns-names"] = "old-name.tools.svc"
    upgraded = _upgrade(helm, kubeconfig)
    new_tls = find(upgraded, "Secret", TLS_SECRET)
    assert _pem(new_tls, "tls.crt") != _pem(find(installed, "Secret", TLS_SECRET), "tls.crt")
    assert _ca_bundle(upgraded) == _ca_bundle(installed)


def test_incomplete_secret_is_regenerated(helm: Helm, cluster: tuple[FakeCluster, Path]) -> None:
    fake, kubeconfig = cluster
    installed = _upgrade(helm, kubeconfig)
    _store(fake, installed)
    del fake.secrets[(NAMESPACE, TLS_SECRET)]["data"]["tls.key"]
    upgraded = _upgrade(helm, kubeconfig)
    assert "tls.key" in find(upgraded, "Secret", TLS_SECRET)["data"]
    assert _ca_bundle(upgraded) == _ca_bundle(installed)
