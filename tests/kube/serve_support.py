"""The real `serve --kubeconfig --dev` process on the local API server; admissions through it."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
from serve_process import ServeProcess, serve_env, spawn


class Serve:
    def __init__(self, process: ServeProcess) -> None:
        self.process, self.proc = process, process.proc
        self.http = httpx.Client(verify=False, timeout=10)

    def ops(self, path: str) -> httpx.Response | None:
        assert self.proc.poll() is None, f"serve exited:\n{self.process.logs()}"
        try:
            return self.http.get(f"{self.process.ops_url}{path}")
        except httpx.TransportError:
            return None

    def status(self, path: str) -> int | None:
        resp = self.ops(path)
        return None if resp is None else resp.status_code

    def metrics(self) -> str:
        resp = self.ops("/metrics")
        return "" if resp is None else resp.text

    def admit(self, namespace: str, *images: str, dry_run: bool = False) -> list[str]:
        """The imagePullSecrets a pod created in `namespace` leaves admission with."""
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "app-", "namespace": namespace},
            "spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]},
        }
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "kubernetes-admin"},
                "object": pod,
                "oldObject": None,
                "dryRun": dry_run,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
        resp = self.http.post(f"https://127.0.0.1:{self.process.port}/mutate", json=review)
        assert resp.status_code == 200, resp.text
        answer = resp.json()["response"]
        assert answer["uid"] == review["request"]["uid"] and answer["allowed"] is True
        if "patch" not in answer:
            return []
        patched = jsonpatch.apply_patch(
            pod, jsonpatch.JsonPatch.from_string(base64.b64decode(answer["patch"]).decode())
        )
        return [ref["name"] for ref in patched["spec"].get("imagePullSecrets", [])]


@contextmanager
def running_serve(
    kubeconfig: Path,
    log_file: Path,
    *args: str,
    stop_timeout: float,
    must_stop: bool,
    env: dict[str, str] | None = None,
) -> Iterator[Serve]:
    """`serve` on the local API server only (no PSI_* or KUBECONFIG from this environment);
    stopped at the end, its log printed (shown when the test fails). With `must_stop`, a
    serve that ignores SIGTERM for `stop_timeout` seconds fails the test."""
    process = spawn(
        log_file,
        "--kubeconfig", str(kubeconfig), "--dev", *args,
        env=serve_env("KUBECONFIG", **(env or {})),
    )  # fmt: skip
    server = Serve(process)
    try:
        yield server
    finally:
        server.http.close()
        try:
            stopped = process.stop(stop_timeout)
        finally:
            print(process.logs()[-6000:])
        assert stopped or not must_stop, f"serve did not exit {stop_timeout}s after SIGTERM"
