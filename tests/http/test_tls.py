"""The HTTPS listener: verified by a generated CA, TLS 1.2+, certificate rotation."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLES
from webhook_server import Server, start_server, stop_server

from webhook.serve import certs


def peer_certificate(port: int, ca_file: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def test_a_client_trusting_another_ca_is_refused(server: Any, tmp_path: Path) -> None:
    other = certs.write_bundle(certs.generate(["localhost"]), tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(server.port, other["ca.crt"])


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(server: Any) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(sock, server_hostname="localhost")


def test_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    srv: Server = start_server(
        tmp_path, "--objects", str(EXAMPLES / "cluster.yaml"),
        env={"PSI_CERT_RELOAD_SECONDS": "0.2"},
    )  # fmt: skip
    try:
        before = peer_certificate(srv.port, srv.ca_file)
        ca = (srv.cert_dir / "ca.crt").read_bytes(), (srv.cert_dir / "ca.key").read_bytes()
        rotated = certs.generate(["localhost"], ["127.0.0.1"], ca=ca)
        # Write as a mounted Secret update would land: both files replaced.
        (srv.cert_dir / "tls.key").write_bytes(rotated.key_pem)
        (srv.cert_dir / "tls.crt").write_bytes(rotated.cert_pem)
        deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine
        after = before
        while after == before and time.monotonic() < deadline:
            time.sleep(0.1)
            after = peer_certificate(srv.port, srv.ca_file)
        assert after != before
        assert ssl.DER_cert_to_PEM_cert(after).strip() == rotated.cert_pem.decode().strip()
        assert srv.proc.poll() is None
    finally:
        stop_server(srv)
