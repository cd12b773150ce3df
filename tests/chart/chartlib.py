"""Helpers for the Helm chart tests: find the real helm binary, render, parse (the
fixtures helm_bin and helm are re-exported by conftest.py).

helm comes from `bash .ci/install-helm.sh` (./.tools/bin/helm), or PSI_HELM, or PATH.
Without it the chart tests skip with the reason, except under CI=true, where a missing
helm is a failure: CI must never go green by not testing the chart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pullsecret-injector"
RELEASE = "psi"
NAMESPACE = "tools"
FULLNAME = f"{RELEASE}-pullsecret-injector"


def find_helm() -> str | None:
    """PSI_HELM, then ./.tools/bin/helm (from .ci/install-helm.sh), then PATH."""
    explicit = os.environ.get("PSI_HELM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    found = find_helm()
    if found is None:
        reason = (
            "helm not found (PSI_HELM, ./.tools/bin/helm, PATH): run `bash .ci/install-helm.sh`"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Helm:
    binary: str

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HELM_CACHE_HOME": "/tmp/psi-helm-cache", **(env or {})},
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def template(
        self,
        *set_args: str,
        values: dict[str, Any] | None = None,
        namespace: str = NAMESPACE,
        release: str = RELEASE,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Result:
        """`helm template` with --set pairs and/or a values dict (passed as a file)."""
        args = ["template", release, str(CHART), "--namespace", namespace, *extra]
        for pair in set_args:
            args += ["--set", pair]
        with tempfile.TemporaryDirectory(prefix="psi-values-") as tmp:
            if values is not None:
                path = Path(tmp) / "values.yaml"
                path.write_text(yaml.safe_dump(values))
                args += ["--values", str(path)]
            return self.run(*args, env=env)

    def render(self, *set_args: str, **kw: Any) -> list[dict[str, Any]]:
        """Rendered documents; fails the test with helm's stderr when rendering fails."""
        result = self.template(*set_args, **kw)
        if result.returncode != 0:
            pytest.fail(f"helm template failed:\n{result.stderr}", pytrace=False)
        return parse(result.stdout)


@pytest.fixture(scope="session")
def helm(helm_bin: str) -> Helm:
    return Helm(helm_bin)


def parse(stream: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(stream) if d]


def find(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(docs: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)
