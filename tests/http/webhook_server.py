"""Start the real `pullsecret-injector serve` process: uvicorn, real TLS, a generated CA."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import EXAMPLES
from serve_process import ServeProcess, spawn

from webhook.serve import certs


@dataclass
class Server(ServeProcess):
    ca_file: Path
    cert_dir: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def https_up(self) -> bool:
        try:
            with self.client() as c:
                c.get("/healthz")
        except httpx.HTTPError:
            return False
        return True


def start_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    cert_dir = tmp / "certs"
    paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), cert_dir)
    p = spawn(
        tmp / "server.log",
        "--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"]),
        *extra,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    server = Server(p.proc, p.port, p.metrics_port, p.log_file, paths["ca.crt"], cert_dir)
    try:  # the HTTPS listener is up too
        server.wait_ready(30, interval=0.1, probe_timeout=1, also=server.https_up)
    except AssertionError:
        server.proc.kill()
        raise
    return server


def stop_server(server: Server) -> None:
    server.stop(10)


@contextlib.contextmanager
def example_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server on the example cluster state (examples/cluster.yaml), stopped after."""
    srv = start_server(tmp, "--objects", str(EXAMPLES / "cluster.yaml"), *extra, env=env)
    try:
        yield srv
    finally:
        stop_server(srv)
