"""Server TLS: an SSL context (TLS 1.2+) whose certificate is reloaded when the files change.

Mounted Secrets are updated through symlink swaps that emit no reliable file events, so
the files are polled and compared by content hash (as kopf does). A reload swaps the
certificate inside the same SSLContext: new handshakes get the new certificate, open
connections keep theirs, and nothing restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import tempfile
from pathlib import Path

from webhook.metrics import Metrics

log = logging.getLogger(__name__)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context with modern defaults: TLS 1.2 minimum, no compression."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def certificate_not_after(cert_file: Path) -> float:
    """The not-after of the first (the serving) certificate of a PEM file, as Unix time."""
    from cryptography import x509  # noqa: PLC0415 - loaded by `serve` only, as in cli.py

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.not_valid_after_utc.timestamp()


def _digest(cert_file: Path, key_file: Path) -> str:
    return hashlib.sha256(cert_file.read_bytes() + key_file.read_bytes()).hexdigest()


def _load_checked(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a certificate and key into the live context only once they are known to match.

    OpenSSL sets the certificate before it checks the key against it and, on a mismatch,
    drops it: a half-written pair loaded straight into the live context would leave it with
    no certificate, and every handshake would fail until the next good reload. So the very
    bytes read once are tried in a scratch context first (load_cert_chain takes paths: a
    private temporary directory holds them for the two loads, /tmp being the one writable
    place of the image), and raise there if they do not match.

    Even a matching pair passes through a moment with the new certificate and no key (the
    old one dropped as it no longer matches, the new one not loaded yet), and OpenSSL
    releases the GIL meanwhile: a handshake running on another thread then fails. Call it
    on the thread that runs the handshakes (the event loop's: CertReloader.run).
    """
    with tempfile.TemporaryDirectory(prefix="psi-tls-") as tmp:
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        cert_file.write_bytes(cert)
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        ctx.load_cert_chain(cert_file, key_file)


class CertReloader:
    """Polls the certificate and key files; loads them into the context when they change."""

    def __init__(
        self, ctx: ssl.SSLContext, cert_file: Path, key_file: Path, metrics: Metrics
    ) -> None:
        self.ctx = ctx
        self.cert_file = cert_file
        self.key_file = key_file
        self.metrics = metrics
        self._digest = _digest(cert_file, key_file)
        self._export_expiry()

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate was loaded.

        A half-written pair (the key no longer matches the certificate) is retried on the
        next poll while the old certificate keeps serving. Run it on the thread that runs
        the handshakes (see _load_checked); run() reads the files off it.
        """
        return self._load(self._read())

    def _read(self) -> tuple[bytes, bytes, str] | None:
        """The files' bytes and their digest when they changed since the last load."""
        try:
            cert, key = self.cert_file.read_bytes(), self.key_file.read_bytes()
        except OSError as exc:
            log.warning("certificate files unreadable", extra={"error": str(exc)})
            self.metrics.cert_reloads.labels("error").inc()
            return None
        digest = hashlib.sha256(cert + key).hexdigest()
        return None if digest == self._digest else (cert, key, digest)

    def _load(self, files: tuple[bytes, bytes, str] | None) -> bool:
        if files is None:
            return False
        cert, key, digest = files
        try:
            _load_checked(self.ctx, cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate reload failed, keeping the old one", extra={"error": str(exc)})
            self.metrics.cert_reloads.labels("error").inc()
            return False
        self._digest = digest
        self.metrics.cert_reloads.labels("ok").inc()
        self._export_expiry()
        log.info("serving certificate reloaded", extra={"cert_file": str(self.cert_file)})
        return True

    def _export_expiry(self) -> None:
        """Export the loaded certificate's not-after (the CertificateExpiring alert's input)."""
        try:
            self.metrics.cert_expiry.set(certificate_not_after(self.cert_file))
        except (OSError, ValueError) as exc:  # unreadable now: keep the last value
            log.warning("serving certificate expiry unreadable", extra={"error": str(exc)})

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # polled off the loop; a change loaded on it (a few ms, once per rotation), so
            # that no handshake runs while the context is between two key pairs
            self._load(await asyncio.to_thread(self._read))
