"""`serve --dev`: the throwaway CA's path on stdout, for scripts (issue 11, item 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import EXAMPLES, ROOT
from serve_process import free_port, serve_env


def test_dev_mode_prints_the_ca_path_on_stdout(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve", "--dev",
        "--host", "127.0.0.1", "--port", str(free_port()),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()),
        "--objects", str(EXAMPLES / "cluster.yaml"),
    ]  # fmt: skip
    with (tmp_path / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=serve_env(), stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
    finally:
        proc.terminate()
        proc.wait(30)
    assert line.startswith("dev mode CA: "), line
    assert line.strip().endswith("ca.crt")
