"""`serve --dev` alone, as the README's first command runs it: a throwaway CA, the packaged
example cluster state, no cluster and no files of this checkout. The CA's path is on
stdout, for scripts (issue 11, item 7)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from helpers import ROOT
from serve_process import free_port, serve_env, spawn

FIXTURE = ROOT / "tests/fixtures/admissionreview/v1-create-pod-multi-registry-sa-secret.json"


def test_serve_dev_needs_nothing_but_itself(tmp_path: Path) -> None:
    serve = spawn(tmp_path / "serve.log", "--dev", env=serve_env("KUBECONFIG"))
    try:
        serve.wait_ready(30, interval=0.2, probe_timeout=1)
        logs = serve.logs()
        assert "example cluster state from" in logs
        ca = re.search(r"--cacert (\S+)", logs)
        assert ca is not None, logs
        assert f"dev mode CA: {ca[1]}" in logs  # the same CA, named on its own line
        answer = httpx.post(
            f"https://localhost:{serve.port}/mutate",
            content=FIXTURE.read_bytes(),
            headers={"Content-Type": "application/json"},
            verify=ssl.create_default_context(cafile=ca[1]),
            timeout=5,
        ).json()
    finally:
        serve.stop(10)
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    added = [op["value"]["name"] for op in patch if op["path"] == "/spec/imagePullSecrets/-"]
    assert "example-registry" in added, patch


def test_dev_mode_prints_the_ca_path_on_stdout(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve", "--dev",
        "--host", "127.0.0.1", "--port", str(free_port()),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()),
    ]  # fmt: skip
    with (tmp_path / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=serve_env("KUBECONFIG"), stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
    finally:
        proc.terminate()
        proc.wait(30)
    assert line.startswith("dev mode CA: "), line
    assert line.strip().endswith("ca.crt")
