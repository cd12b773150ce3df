"""Start the real `pullsecret-injector serve` process: uvicorn, real TLS, a generated CA."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import ROOT

from webhook import certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    ca_file: Path
    log_file: Path
    cert_dir: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def client(self) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")


def start_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    cert_dir = tmp / "certs"
    paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), cert_dir)
    port, metrics_port = free_port(), free_port()
    log_file = tmp / "server.log"
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"]),
        *extra,
    ]  # fmt: skip
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = Server(proc, port, metrics_port, paths["ca.crt"], log_file, cert_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.ops_url}/readyz", timeout=1).status_code == 200:
                with server.client() as c:  # the HTTPS listener is up too
                    c.get("/healthz")
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"serve did not become ready:\n{server.logs()}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
