"""Certificates for installs without cert-manager: a private CA and a serving certificate.

The API server calls the webhook at `https://<service>.<namespace>.svc:443/mutate` and
verifies the chain against the `caBundle` of the MutatingWebhookConfiguration, by SAN
only (Go ignores the CN). So the serving certificate carries every name the Service is
reached by, says `serverAuth`, is not a CA, and is signed by a CA whose certificate is the
caBundle. Rotation keeps the CA (`ca=` / `--ca-cert --ca-key`): a new serving certificate
under the same CA needs no caBundle change, and the server picks it up from disk.

`generate` and `service_dns_names` are pure (no files, no clock unless `now` is omitted);
`write_bundle` and `run_certs` are the thin file/CLI adapters.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES: tuple[str, ...] = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ecdsa-p256"
DEFAULT_DAYS = 365
# The CA outlives many serving certificates so that renewing one never touches the
# caBundle; ten years is what kube-webhook-certgen-style tools commonly choose.
DEFAULT_CA_DAYS = 3650
# Certificates start a little in the past: a node whose clock runs behind the API
# server's must not see a "not yet valid" certificate right after a rotation.
BACKDATE = dt.timedelta(minutes=5)
CA_COMMON_NAME = "pullsecret-injector-ca"
FILE_NAMES = ("ca.crt", "ca.key", "tls.crt", "tls.key")

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertError(ValueError):
    """Bad input for a certificate: the message says what to change."""


@dataclass(frozen=True)
class CertBundle:
    """A CA and a serving certificate signed by it, all PEM-encoded."""

    ca_cert_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name a Service is reached by inside the cluster, shortest first."""
    for what, value in (("service", service), ("namespace", namespace)):
        if not _DNS_LABEL.match(value):
            raise CertError(f"{what} {value!r} is not a DNS label (lowercase a-z, 0-9, '-')")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _check_dns_name(name: str) -> str:
    labels = name.lower().rstrip(".").split(".")
    if labels and labels[0] == "*":  # a wildcard may stand for the first label only
        labels = labels[1:]
    if not labels or not all(_DNS_LABEL.match(label) for label in labels) or len(name) > 253:
        raise CertError(f"{name!r} is not a valid DNS name")
    return name.lower().rstrip(".")


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise CertError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    # Match the digest to the key strength (P-384 pairs with SHA-384, as in RFC 5480).
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca(key_type: str, days: int, now: dt.datetime) -> tuple[x509.Certificate, PrivateKey]:
    key = _new_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        # pathlen 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, _hash_for(key))
    )
    return cert, key


def load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes, now: dt.datetime | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """Parse and check a CA given for reuse: a CA certificate, its own key, not expired."""
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise CertError(f"CA certificate is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"CA key is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError("CA key must be an ECDSA or RSA key")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertError("the given CA certificate is not a CA (basicConstraints CA:TRUE missing)")
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_pub = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != cert_pub:
        raise CertError("the CA key does not belong to the CA certificate")
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise CertError(
            f"the CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
            "generate a new CA (and update the caBundle)"
        )
    return cert, key


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The CA's own subject key identifier: how verifiers match a certificate to its issuer.

    Recomputing it from the CA's public key would be wrong for a CA made elsewhere: SKI
    methods differ (Go >= 1.25, which Helm's genCA uses, takes truncated SHA-256, OpenSSL
    SHA-1), and OpenSSL rejects a chain whose key identifiers disagree.
    """
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def generate(
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    days: int = DEFAULT_DAYS,
    key_type: str = DEFAULT_KEY_TYPE,
    ca: tuple[bytes, bytes] | None = None,
    ca_days: int = DEFAULT_CA_DAYS,
    now: dt.datetime | None = None,
) -> CertBundle:
    """A serving certificate for `dns_names`/`ip_addresses`, and the CA that signed it.

    With `ca=(ca_cert_pem, ca_key_pem)` the existing CA signs (rotation: the caBundle
    stays valid) and is returned unchanged; otherwise a new CA valid for `ca_days` is
    made. The serving certificate never outlives its CA: its end is clamped to the CA's.
    """
    if days < 1 or ca_days < 1:
        raise CertError("validity must be at least one day")
    names = [_check_dns_name(n) for n in dns_names]
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise CertError(str(exc)) from exc
    if not names and not ips:
        raise CertError("a serving certificate needs at least one DNS name or IP address")
    now = now or dt.datetime.now(dt.UTC)

    if ca is None:
        ca_cert, ca_key = _new_ca(key_type, max(ca_days, days), now)
        ca_cert_pem, ca_key_pem = _cert_pem(ca_cert), _key_pem(ca_key)
    else:
        ca_cert, ca_key = load_ca(ca[0], ca[1], now)
        ca_cert_pem, ca_key_pem = ca

    key = _new_key(key_type)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ip) for ip in ips]
    common_name = names[0] if names else str(ips[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 without ECDHE) encrypts with the key.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, _hash_for(ca_key))
    )
    return CertBundle(
        ca_cert_pem=ca_cert_pem,
        ca_key_pem=ca_key_pem,
        cert_pem=_cert_pem(cert),
        key_pem=_key_pem(key),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
    os.replace(tmp, path)


def write_bundle(bundle: CertBundle, out_dir: Path) -> dict[str, Path]:
    """Write ca.crt, ca.key, tls.crt, tls.key into `out_dir` (keys 0600, certs 0644)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        "ca.crt": (bundle.ca_cert_pem, 0o644),
        "ca.key": (bundle.ca_key_pem, 0o600),
        "tls.crt": (bundle.cert_pem, 0o644),
        "tls.key": (bundle.key_pem, 0o600),
    }
    paths: dict[str, Path] = {}
    for name, (data, mode) in contents.items():
        paths[name] = out_dir / name
        _write(paths[name], data, mode)
    return paths


def secret_manifest(bundle: CertBundle, name: str, namespace: str) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret with `ca.crt`, as cert-manager writes it (no CA key)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "pullsecret-injector",
                "app.kubernetes.io/component": "webhook-certificate",
            },
        },
        "type": "kubernetes.io/tls",
        "data": {
            "ca.crt": b64(bundle.ca_cert_pem),
            "tls.crt": b64(bundle.cert_pem),
            "tls.key": b64(bundle.key_pem),
        },
    }


# ---- the `certs` subcommand -----------------------------------------------------------


def add_certs_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `pullsecret-injector certs`."""
    parser.description = (
        "Make a CA and a serving certificate for <service>.<namespace>.svc (and "
        ".svc.cluster.local). Files: ca.crt, ca.key, tls.crt, tls.key in --out-dir. "
        "Renew with the same CA by passing --ca-cert/--ca-key: the caBundle stays valid."
    )
    parser.add_argument("--service", default="pullsecret-injector", help="Service name")
    parser.add_argument(
        "--namespace", default="pullsecret-injector", help="namespace of the Service"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=Path("certs/out"), help="where the files go (certs/out)"
    )
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help="serving certificate validity (365)"
    )
    parser.add_argument(
        "--ca-days", type=int, default=DEFAULT_CA_DAYS, help="validity of a new CA (3650)"
    )
    parser.add_argument("--key-type", choices=KEY_TYPES, default=DEFAULT_KEY_TYPE)
    parser.add_argument(
        "--extra-dns", action="append", default=[], help="another DNS SAN (repeatable)"
    )
    parser.add_argument("--ip", action="append", default=[], help="an IP address SAN (repeatable)")
    parser.add_argument("--ca-cert", type=Path, help="sign with this CA certificate (PEM)")
    parser.add_argument("--ca-key", type=Path, help="... and its private key (PEM)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a CA already in --out-dir (every caBundle using it must then change)",
    )
    printed = parser.add_mutually_exclusive_group()
    printed.add_argument(
        "--print-secret",
        action="store_true",
        help="print a kubernetes.io/tls Secret manifest (with ca.crt) on stdout "
        "for `kubectl apply -f -`",
    )
    parser.add_argument("--secret-name", help="name of the printed Secret (default <service>-tls)")
    printed.add_argument(
        "--print-ca-bundle",
        action="store_true",
        help="print the base64 CA certificate on stdout (a webhook's caBundle)",
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _bundle_from_args(args: argparse.Namespace) -> CertBundle:
    if (args.ca_cert is None) != (args.ca_key is None):
        raise CertError("--ca-cert and --ca-key go together")
    out_dir: Path = args.out_dir
    ca: tuple[bytes, bytes] | None = None
    if args.ca_cert is not None:
        ca = (_read(args.ca_cert, "CA certificate"), _read(args.ca_key, "CA key"))
    elif (out_dir / "ca.key").exists() and not args.force:
        raise CertError(
            f"{out_dir} already holds a CA. To renew the serving certificate under it "
            f"(caBundle unchanged) pass --ca-cert {out_dir / 'ca.crt'} --ca-key "
            f"{out_dir / 'ca.key'}; to replace the CA pass --force (then update every "
            "caBundle that trusts it)"
        )
    dns = service_dns_names(args.service, args.namespace) + list(args.extra_dns)
    return generate(
        dns,
        args.ip,
        days=args.days,
        key_type=args.key_type,
        ca=ca,
        ca_days=args.ca_days,
    )


def run_certs(args: argparse.Namespace) -> int:
    """`pullsecret-injector certs`: write the files; optionally print Secret / caBundle."""
    try:
        bundle = _bundle_from_args(args)
        paths = write_bundle(bundle, args.out_dir)
    except CertError as exc:
        print(f"pullsecret-injector certs: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pullsecret-injector certs: cannot write {args.out_dir}: {exc}", file=sys.stderr)
        return 2

    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    print(
        f"wrote {', '.join(str(p) for p in paths.values())}\n"
        f"  serving certificate for {', '.join(str(n.value) for n in sans)}\n"
        f"  valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
        f"CA {'reused' if args.ca_cert else 'new'}",
        file=sys.stderr,
    )
    if args.print_secret:
        name = args.secret_name or f"{args.service}-tls"
        manifest = secret_manifest(bundle, name, args.namespace)
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    if args.print_ca_bundle:
        sys.stdout.write(base64.b64encode(bundle.ca_cert_pem).decode("ascii") + "\n")
    return 0
