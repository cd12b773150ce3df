"""webhook/serve/certs.py: the CA and serving certificate the API server must accept.

Checked twice: structurally with `cryptography`, and by a real TLS handshake with the
`ssl` module verifying the chain for each name the API server may dial.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.serve import certs

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def bundle() -> certs.CertBundle:
    return certs.generate(certs.service_dns_names("psi", "tools"), ["10.0.0.7"])


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(cls).value


# ---- names -----------------------------------------------------------------------------


def test_service_dns_names_cover_every_way_the_service_is_dialled() -> None:
    assert certs.service_dns_names("psi", "tools") == [
        "psi",
        "psi.tools",
        "psi.tools.svc",
        "psi.tools.svc.cluster.local",
    ]


@pytest.mark.parametrize(("service", "namespace"), [("PSI", "ns"), ("a.b", "ns"), ("psi", "-x")])
def test_service_dns_names_reject_what_kubernetes_would(service: str, namespace: str) -> None:
    with pytest.raises(certs.CertError, match="not a DNS label"):
        certs.service_dns_names(service, namespace)


# ---- structure -------------------------------------------------------------------------


def test_ca_is_a_ca_that_may_only_sign_leaves(bundle: certs.CertBundle) -> None:
    ca = _cert(bundle.ca_cert_pem)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = _ext(ca, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.key_cert_sign
    assert ca.subject == ca.issuer


def test_serving_certificate_is_a_server_leaf_with_every_san(bundle: certs.CertBundle) -> None:
    leaf = _cert(bundle.cert_pem)
    constraints = _ext(leaf, x509.BasicConstraints)
    assert isinstance(constraints, x509.BasicConstraints)
    assert not constraints.ca
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = _ext(leaf, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert not usage.key_cert_sign
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == certs.service_dns_names("psi", "tools")
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]


def test_serving_certificate_is_signed_by_the_ca(bundle: certs.CertBundle) -> None:
    leaf, ca = _cert(bundle.cert_pem), _cert(bundle.ca_cert_pem)
    leaf.verify_directly_issued_by(ca)  # raises when the signature or issuer is wrong
    other = certs.generate(["x"])
    with pytest.raises((ValueError, Exception)):
        leaf.verify_directly_issued_by(_cert(other.ca_cert_pem))


@pytest.mark.parametrize(
    ("key_type", "key_class", "size"),
    [
        ("ecdsa-p256", ec.EllipticCurvePublicKey, 256),
        ("ecdsa-p384", ec.EllipticCurvePublicKey, 384),
        ("rsa-2048", rsa.RSAPublicKey, 2048),
        ("rsa-3072", rsa.RSAPublicKey, 3072),
        ("rsa-4096", rsa.RSAPublicKey, 4096),
    ],
)
def test_each_key_type_gives_that_key_and_a_working_chain(
    key_type: str, key_class: type, size: int
) -> None:
    b = certs.generate(["psi.tools.svc"], key_type=key_type)
    for pem in (b.cert_pem, b.ca_cert_pem):
        key = _cert(pem).public_key()
        assert isinstance(key, key_class)
        assert key.key_size == size  # type: ignore[attr-defined]
    assert _handshake(b, "psi.tools.svc") == b"ok"


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(certs.CertError, match="ed25519"):
        certs.generate(["x"], key_type="ed25519")


def test_validity_is_the_requested_days_and_backdated_for_clock_skew() -> None:
    b = certs.generate(["x"], days=30, now=NOW)
    leaf, ca = _cert(b.cert_pem), _cert(b.ca_cert_pem)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert leaf.not_valid_before_utc == NOW - certs.BACKDATE
    assert ca.not_valid_after_utc == NOW + dt.timedelta(days=certs.DEFAULT_CA_DAYS)


def test_serving_certificate_never_outlives_its_ca() -> None:
    ca = certs.generate(["x"], ca_days=10, days=5, now=NOW)
    b = certs.generate(["x"], days=365, ca=(ca.ca_cert_pem, ca.ca_key_pem), now=NOW)
    assert _cert(b.cert_pem).not_valid_after_utc == _cert(ca.ca_cert_pem).not_valid_after_utc


@pytest.mark.parametrize(
    ("dns", "ips", "days", "message"),
    [
        ([], [], 1, "at least one DNS name"),
        (["bad_name"], [], 1, "not a valid DNS name"),
        (["x"], ["300.1.1.1"], 1, "does not appear to be an IPv4 or IPv6"),
        (["x"], [], 0, "at least one day"),
    ],
)
def test_bad_input_says_what_is_wrong(
    dns: list[str], ips: list[str], days: int, message: str
) -> None:
    with pytest.raises(certs.CertError, match=message):
        certs.generate(dns, ips, days=days)


def test_wildcard_and_trailing_dot_names_are_accepted_normalised() -> None:
    b = certs.generate(["*.Example.com."])
    san = _ext(_cert(b.cert_pem), x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["*.example.com"]


# ---- rotation ----------------------------------------------------------------------------


def test_rotation_with_the_same_ca_keeps_the_ca_bundle_valid(bundle: certs.CertBundle) -> None:
    renewed = certs.generate(
        certs.service_dns_names("psi", "tools"), ca=(bundle.ca_cert_pem, bundle.ca_key_pem)
    )
    assert renewed.ca_cert_pem == bundle.ca_cert_pem
    assert renewed.ca_key_pem == bundle.ca_key_pem
    assert renewed.cert_pem != bundle.cert_pem
    assert renewed.key_pem != bundle.key_pem
    # a client that trusts only the old caBundle accepts the renewed certificate
    assert _handshake(renewed, "psi.tools.svc", ca_pem=bundle.ca_cert_pem) == b"ok"


def _foreign_ca(ski: bytes | None) -> tuple[bytes, bytes]:
    """A CA made elsewhere (openssl, Go/Helm): its SKI need not be SHA-1 of its key."""
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "foreign-ca")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ski is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.parametrize("ski", [b"\x01" * 20, None], ids=["own-ski-method", "no-ski"])
def test_a_foreign_ca_is_referenced_by_its_own_key_identifier(ski: bytes | None) -> None:
    """Regression: the AKI was recomputed from the CA key (SHA-1), so a CA from Helm's
    genCA (Go >= 1.25: truncated SHA-256 SKI) gave a chain OpenSSL refused."""
    ca = _foreign_ca(ski)
    b = certs.generate(["psi.tools.svc"], ca=ca)
    aki = _ext(_cert(b.cert_pem), x509.AuthorityKeyIdentifier)
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    if ski is not None:
        assert aki.key_identifier == ski
    assert _handshake(b, "psi.tools.svc") == b"ok"


def test_reusing_a_leaf_as_ca_is_refused(bundle: certs.CertBundle) -> None:
    with pytest.raises(certs.CertError, match="not a CA"):
        certs.generate(["x"], ca=(bundle.cert_pem, bundle.key_pem))


def test_reusing_a_ca_with_someone_elses_key_is_refused(bundle: certs.CertBundle) -> None:
    other = certs.generate(["x"])
    with pytest.raises(certs.CertError, match="does not belong"):
        certs.generate(["x"], ca=(bundle.ca_cert_pem, other.ca_key_pem))


def test_reusing_an_expired_ca_is_refused() -> None:
    old = certs.generate(["x"], ca_days=1, days=1, now=NOW)
    with pytest.raises(certs.CertError, match="expired"):
        certs.generate(["x"], ca=(old.ca_cert_pem, old.ca_key_pem), now=NOW + dt.timedelta(days=2))


def test_reusing_garbage_as_ca_is_refused() -> None:
    with pytest.raises(certs.CertError, match="not a PEM certificate"):
        certs.generate(["x"], ca=(b"nope", b"nope"))


# ---- real TLS handshakes -------------------------------------------------------------------


@contextmanager
def _tls_server(b: certs.CertBundle, tmp: Path) -> Iterator[int]:
    paths = certs.write_bundle(b, tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["tls.crt"], paths["tls.key"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:  # one connection: each _handshake makes exactly one
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            conn.close()  # the client refused our certificate: expected in some tests

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def _handshake(b: certs.CertBundle, server_name: str, ca_pem: bytes | None = None) -> bytes:
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp, _tls_server(b, Path(tmp)) as port:
        client = ssl.create_default_context(cadata=(ca_pem or b.ca_cert_pem).decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            return tls.recv(2)


@pytest.mark.parametrize("name", certs.service_dns_names("psi", "tools"))
def test_handshake_verifies_for_every_service_name(bundle: certs.CertBundle, name: str) -> None:
    assert _handshake(bundle, name) == b"ok"


def test_handshake_verifies_for_an_ip_san(bundle: certs.CertBundle) -> None:
    assert _handshake(bundle, "10.0.0.7") == b"ok"


def test_handshake_fails_for_a_name_not_in_the_certificate(bundle: certs.CertBundle) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn't match"):
        _handshake(bundle, "psi.other.svc")


def test_handshake_fails_against_another_ca(bundle: certs.CertBundle) -> None:
    stranger = certs.generate(["psi.tools.svc"])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(bundle, "psi.tools.svc", ca_pem=stranger.ca_cert_pem)


def test_dev_mode_certificate_serves_localhost_and_loopback() -> None:
    dev = certs.generate(["localhost"], ["127.0.0.1", "::1"])
    assert _handshake(dev, "localhost") == b"ok"
    assert _handshake(dev, "127.0.0.1") == b"ok"


# ---- files -------------------------------------------------------------------------------


def test_write_bundle_keeps_keys_private(bundle: certs.CertBundle, tmp_path: Path) -> None:
    paths = certs.write_bundle(bundle, tmp_path / "new" / "dir")
    assert sorted(paths) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    modes = {name: stat.S_IMODE(p.stat().st_mode) for name, p in paths.items()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "tls.crt": 0o644, "tls.key": 0o600}
    assert paths["tls.crt"].read_bytes() == bundle.cert_pem
    assert paths["ca.key"].read_bytes() == bundle.ca_key_pem
    assert not list(paths["tls.crt"].parent.glob(".*.tmp"))


def test_write_bundle_overwrites_a_previous_bundle(tmp_path: Path) -> None:
    first, second = certs.generate(["a"]), certs.generate(["b"])
    certs.write_bundle(first, tmp_path)
    paths = certs.write_bundle(second, tmp_path)
    assert paths["tls.key"].read_bytes() == second.key_pem


# ---- the `certs` subcommand ------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    certs.add_certs_arguments(parser)
    code = certs.run_certs(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_files_for_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        [
            *("--service", "psi", "--namespace", "tools", "--out-dir", str(tmp_path)),
            *("--days", "7", "--extra-dns", "psi.example.com", "--ip", "127.0.0.1"),
            *("--key-type", "rsa-2048"),
        ],
        capsys,
    )
    assert code == 0, err
    assert out == ""  # stdout stays clean for piping
    leaf = _cert((tmp_path / "tls.crt").read_bytes())
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert "psi.tools.svc" in san.get_values_for_type(x509.DNSName)
    assert "psi.example.com" in san.get_values_for_type(x509.DNSName)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(days=7) + certs.BACKDATE
    assert "psi.tools.svc.cluster.local" in err


def test_cli_refuses_to_replace_a_ca_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--out-dir", str(tmp_path)], capsys)[0] == 0
    ca_before = (tmp_path / "ca.crt").read_bytes()
    code, _, err = _run(["--out-dir", str(tmp_path)], capsys)
    assert code == 2
    assert "--ca-cert" in err
    assert "--force" in err
    assert (tmp_path / "ca.crt").read_bytes() == ca_before

    assert _run(["--out-dir", str(tmp_path), "--force"], capsys)[0] == 0
    assert (tmp_path / "ca.crt").read_bytes() != ca_before


def test_cli_renews_under_the_same_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--out-dir", str(tmp_path)], capsys)[0] == 0
    ca_before = (tmp_path / "ca.crt").read_bytes()
    leaf_before = (tmp_path / "tls.crt").read_bytes()
    code, _, err = _run(
        [
            *("--out-dir", str(tmp_path)),
            *("--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key")),
        ],
        capsys,
    )
    assert code == 0, err
    assert "CA reused" in err
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "tls.crt").read_bytes() != leaf_before
    _cert((tmp_path / "tls.crt").read_bytes()).verify_directly_issued_by(_cert(ca_before))


def test_cli_prints_a_tls_secret_with_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        ["--service", "psi", "--namespace", "tools", "--out-dir", str(tmp_path), "--print-secret"],
        capsys,
    )
    assert code == 0
    secret = yaml.safe_load(out)
    assert secret["kind"] == "Secret"
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {
        "name": "psi-tls",
        "namespace": "tools",
        "labels": {
            "app.kubernetes.io/name": "pullsecret-injector",
            "app.kubernetes.io/component": "webhook-certificate",
        },
    }
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]  # never the CA key
    for key in ("ca.crt", "tls.crt", "tls.key"):
        assert base64.b64decode(secret["data"][key]) == (tmp_path / key).read_bytes()


def test_cli_prints_the_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--out-dir", str(tmp_path), "--print-ca-bundle"], capsys)
    assert code == 0
    assert base64.b64decode(out.strip()) == (tmp_path / "ca.crt").read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--service", "Bad_Name"], "not a DNS label"),
        (["--ca-cert", "x.crt"], "go together"),
        (["--ca-cert", "/nonexistent/ca.crt", "--ca-key", "/nonexistent/ca.key"], "cannot read"),
        (["--ip", "not-an-ip"], "does not appear to be"),
    ],
)
def test_cli_errors_exit_2_with_a_reason(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["--out-dir", str(tmp_path), *argv], capsys)
    assert code == 2
    assert message in err
    assert out == ""


def test_cli_is_wired_as_the_certs_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webhook.cli import main  # noqa: PLC0415

    assert main(["certs", "--out-dir", str(tmp_path), "--print-ca-bundle"]) == 0
    assert base64.b64decode(capsys.readouterr().out) == (tmp_path / "ca.crt").read_bytes()
