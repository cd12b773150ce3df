"""serve/tls.py directly: the context's floor, and each outcome of a certificate check."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from webhook.metrics import Metrics
from webhook.serve import certs
from webhook.serve.tls import CertReloader, server_context


def _pair(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    paths = certs.write_bundle(certs.generate([name]), directory)
    return paths["tls.crt"], paths["tls.key"]


def _reloads(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "pullsecret_injector_certificate_reloads_total", {"result": result}
    )
    return value or 0.0


@pytest.fixture
def reloader(tmp_path: Path) -> CertReloader:
    cert, key = _pair(tmp_path / "live")
    return CertReloader(server_context(cert, key), cert, key, Metrics())


def test_the_context_refuses_anything_below_tls_1_2(tmp_path: Path) -> None:
    ctx = server_context(*_pair(tmp_path))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_unchanged_files_are_not_reloaded(reloader: CertReloader) -> None:
    assert reloader.check() is False
    assert _reloads(reloader.metrics, "ok") == 0
    assert _reloads(reloader.metrics, "error") == 0


def test_a_rotated_pair_is_loaded_once(reloader: CertReloader, tmp_path: Path) -> None:
    cert, key = _pair(tmp_path / "new", "rotated.example")
    reloader.cert_file.write_bytes(cert.read_bytes())
    reloader.key_file.write_bytes(key.read_bytes())
    assert reloader.check() is True
    assert reloader.check() is False  # the same files again
    assert _reloads(reloader.metrics, "ok") == 1


def test_a_half_written_pair_keeps_the_old_certificate_and_is_retried(
    reloader: CertReloader, tmp_path: Path
) -> None:
    cert, key = _pair(tmp_path / "new")
    reloader.cert_file.write_bytes(cert.read_bytes())  # the key is still the old one
    assert reloader.check() is False
    assert _reloads(reloader.metrics, "error") == 1
    reloader.key_file.write_bytes(key.read_bytes())  # the rotation completes
    assert reloader.check() is True
    assert _reloads(reloader.metrics, "ok") == 1


def test_unreadable_files_count_as_an_error(reloader: CertReloader) -> None:
    reloader.key_file.unlink()
    assert reloader.check() is False
    assert _reloads(reloader.metrics, "error") == 1


def _handshake(server: ssl.SSLContext) -> bytes:
    """A TLS handshake against `server` in memory; the DER certificate it served."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {c: False, s: False}
    for _ in range(10):
        for side in (c, s):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            der = c.getpeercert(binary_form=True)
            assert der is not None
            return der
    raise AssertionError("no handshake")


def test_a_failed_reload_leaves_the_context_serving_the_old_pair(
    reloader: CertReloader, tmp_path: Path
) -> None:
    """OpenSSL sets the certificate before it checks the key: a mismatched pair loaded into
    the live context would leave it with no usable certificate, and every handshake until
    the next good reload would fail (seen as SSL EOF in the rotation test under load)."""
    before = _handshake(reloader.ctx)
    cert, _ = _pair(tmp_path / "new")
    reloader.cert_file.write_bytes(cert.read_bytes())  # the key is still the old one
    assert reloader.check() is False
    assert _handshake(reloader.ctx) == before


def test_handshakes_on_the_loop_never_fail_while_certificates_rotate(tmp_path: Path) -> None:
    """Loading a new pair into the live context passes through a moment with the new
    certificate and no key, with the GIL released: loaded on a worker thread, handshakes
    on the event loop failed then (2,253 of 3,953 under continuous rotation). run() loads
    on the loop, between handshakes."""
    pairs = [tuple(p.read_bytes() for p in _pair(tmp_path / n)) for n in ("a", "b")]
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pairs[0][0])
    key.write_bytes(pairs[0][1])
    reloader = CertReloader(server_context(cert, key), cert, key, Metrics())
    stop = threading.Event()

    def rotate() -> None:  # a new pair every few milliseconds, each file replaced whole
        i = 0
        while not stop.is_set():
            i += 1
            for path, data in ((cert, pairs[i % 2][0]), (key, pairs[i % 2][1])):
                tmp = path.with_suffix(".new")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            time.sleep(0.002)

    async def serve() -> tuple[int, int]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=reloader.ctx)
        port = server.sockets[0].getsockname()[1]
        reloading = asyncio.create_task(reloader.run(0.0005))
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE

        def handshakes() -> tuple[int, int]:
            failed = total = 0
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                total += 1
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                        client.wrap_socket(raw).close()
                except (ssl.SSLError, OSError):
                    failed += 1
            return failed, total

        try:
            return await asyncio.to_thread(handshakes)
        finally:
            reloading.cancel()
            server.close()

    rotator = threading.Thread(target=rotate)
    rotator.start()
    try:
        failed, total = asyncio.run(serve())
    finally:
        stop.set()
        rotator.join()
    assert _reloads(reloader.metrics, "ok") > 10  # it did rotate, many times
    assert failed == 0, f"{failed} of {total} handshakes failed"
