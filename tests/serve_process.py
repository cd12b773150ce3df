"""The real `pullsecret-injector serve` process, as the HTTP, live-cluster and e2e tests run it.

`spawn` starts `python -m webhook.cli serve` on local ports with its output in a log file;
`ServeProcess.wait_ready` polls /readyz with a deadline and fails at once, with the log, if
the process exits; `ServeProcess.stop` sends SIGTERM and kills it when it does not exit in
time. Each suite adds its own arguments (certificates, --kubeconfig, --dev, ...).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(*drop: str, **extra: str) -> dict[str, str]:
    """This environment without the PSI_* settings and the `drop` names, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSI_") and k not in drop}
    return {**env, **extra}


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int  # the webhook's HTTPS port
    metrics_port: int  # /metrics, /healthz, /readyz over plain HTTP on 127.0.0.1
    log_file: Path

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")

    def ready(self, probe_timeout: float) -> bool:
        try:
            return httpx.get(f"{self.ops_url}/readyz", timeout=probe_timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(
        self,
        timeout: float,
        *,
        interval: float,
        probe_timeout: float,
        also: Callable[[], bool] | None = None,
    ) -> None:
        """Poll until /readyz answers 200 (and `also()` holds); the log is in any failure."""

        def done() -> bool:
            if self.proc.poll() is not None:
                return True
            return self.ready(probe_timeout) and (also is None or also())

        try:
            wait_for(done, "serve readiness", timeout, interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.logs()}") from None
        assert self.proc.poll() is None, f"serve exited {self.proc.returncode}:\n{self.logs()}"

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after `timeout` seconds: False when it had to be killed."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return False
        return True


def spawn(
    log_file: Path,
    *args: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeProcess:
    """Start `serve` listening on `host`:`port` (default: a free port), ops on 127.0.0.1."""
    port = port or free_port()
    metrics_port = free_port()
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--host", host, "--port", str(port),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        *args,
    ]  # fmt: skip
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=dict(os.environ if env is None else env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServeProcess(proc, port, metrics_port, log_file)
