"""The layering contract of DESIGN.md, read from the code's own imports (ast, no import).

- ``webhook.kubelet``: pure ports of upstream behaviour; the standard library only, and
  nothing of ours outside ``webhook.kubelet``.
- ``webhook.core``: pure; of ours only ``webhook.kubelet`` (and itself); of third parties
  only pure libraries (orjson, jsonpatch).
- Neither imports an I/O module (threads, sockets, files, processes, the event loop, HTTP,
  TLS, the garbage collector, log handlers, FastAPI, the Kubernetes client...).
- ``webhook.cluster`` never imports ``serve``, ``replication`` or ``cli``;
  ``webhook.replication`` never ``serve`` or ``cli``; ``webhook.serve`` never ``cli``.
- ``webhook.ops`` (the CLI's explain and doctor) reads ``cluster`` and ``core``, never
  ``serve``, ``replication`` or ``cli``; nothing imports it but ``webhook.cli``.
- ``webhook.config`` and ``webhook.metrics`` are leaves every layer may read: config
  imports only ``webhook.kubelet``, metrics nothing of ours.

Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "webhook"

IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "fastapi",
        "gc",
        "http",
        "io",
        "kubernetes",
        "logging",
        "multiprocessing",
        "os",
        "pathlib",
        "prometheus_client",
        "selectors",
        "shutil",
        "signal",
        "socket",
        "ssl",
        "starlette",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "urllib3",
        "uvicorn",
        "yaml",
    }
)
CORE_THIRD_PARTY = frozenset({"orjson", "jsonpatch"})


@dataclass(frozen=True)
class Rule:
    """What modules under `layer` may import of ours, and of the outside world."""

    layer: str
    ours: tuple[str, ...] | None = None  # allowed webhook.* prefixes (None: any but `forbid`)
    forbid: tuple[str, ...] = ()  # webhook.* prefixes never allowed
    pure: bool = False  # no I/O module at all
    third_party: frozenset[str] | None = None  # None: any; else only these outside stdlib


RULES = (
    Rule("webhook.kubelet", ours=("webhook.kubelet",), pure=True, third_party=frozenset()),
    Rule(
        "webhook.core",
        ours=("webhook.kubelet", "webhook.core"),
        pure=True,
        third_party=CORE_THIRD_PARTY,
    ),
    Rule("webhook.config", ours=("webhook.kubelet",)),
    Rule("webhook.metrics", ours=()),
    Rule(
        "webhook.cluster",
        forbid=("webhook.serve", "webhook.replication", "webhook.cli", "webhook.ops"),
    ),
    Rule("webhook.replication", forbid=("webhook.serve", "webhook.cli", "webhook.ops")),
    Rule("webhook.serve", forbid=("webhook.cli", "webhook.ops")),
    Rule("webhook.ops", forbid=("webhook.serve", "webhook.replication", "webhook.cli")),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "webhook" or (node.level and not node.module):
                # `from webhook import certs`: each name is a module of ours
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, module: str) -> list[str]:
    """What `source`, as module `module`, imports against the rules."""
    found: list[str] = []
    for rule in RULES:
        if not _within(module, (rule.layer,)):
            continue
        for line, name in _imports(source, module):
            top = name.split(".", 1)[0]
            where = f"{module}:{line} imports {name}"
            if top == "webhook":
                if name == "webhook":
                    continue  # the package's face (__version__)
                if rule.ours is not None and not _within(name, rule.ours):
                    found.append(f"{where}: {rule.layer} may only import {rule.ours or 'none'}")
                if _within(name, rule.forbid):
                    found.append(f"{where}: {rule.layer} must not import it")
                continue
            if rule.pure and (top in IO_MODULES or name in IO_MODULES):
                found.append(f"{where}: {rule.layer} must stay free of I/O")
            elif (
                rule.third_party is not None
                and top not in sys.stdlib_module_names
                and top not in rule.third_party
                and top != "__future__"
            ):
                found.append(f"{where}: not a standard library module")
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_keeps_its_layers() -> None:
    problems = [
        problem
        for path in _sources()
        for problem in violations(path.read_text(encoding="utf-8"), _module_name(path))
    ]
    assert problems == []


def test_every_module_of_the_package_falls_under_a_rule_or_is_the_top() -> None:
    """A new package must be placed in the layering, not silently escape it."""
    top = {"webhook", "webhook.cli"}
    unruled = [
        name
        for name in map(_module_name, _sources())
        if name not in top and not any(_within(name, (r.layer,)) for r in RULES)
    ]
    assert unruled == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("webhook.kubelet.x", "from webhook.core import model\n", "may only import"),
        ("webhook.kubelet.x", "import threading\n", "free of I/O"),
        ("webhook.kubelet.x", "import orjson\n", "not a standard library module"),
        ("webhook.kubelet.x", "def f():\n    import socket\n", "free of I/O"),
        ("webhook.core.x", "from webhook.cluster.store import Store\n", "may only import"),
        ("webhook.core.x", "from webhook import metrics\n", "may only import"),
        ("webhook.core.x", "from ..cluster import store\n", "may only import"),
        ("webhook.core.x", "import urllib.request\n", "free of I/O"),
        ("webhook.core.x", "from kubernetes import client\n", "free of I/O"),
        ("webhook.core.x", "from logging.handlers import QueueHandler\n", "free of I/O"),
        ("webhook.core.x", "import yaml\n", "free of I/O"),
        ("webhook.cluster.x", "from webhook.serve.app import create_app\n", "must not import"),
        ("webhook.cluster.x", "import webhook.cli\n", "must not import"),
        ("webhook.cluster.x", "from webhook.replication import controller\n", "must not import"),
        ("webhook.replication.x", "from webhook.serve import app\n", "must not import"),
        ("webhook.serve.x", "from webhook.cli import main\n", "must not import"),
        ("webhook.serve.x", "from webhook.ops import doctor\n", "must not import"),
        ("webhook.cluster.x", "from webhook.ops.explain import explain_live\n", "must not import"),
        ("webhook.ops.x", "from webhook.serve.app import create_app\n", "must not import"),
        ("webhook.metrics", "from webhook.cluster.store import Store\n", "may only import"),
        ("webhook.config", "from webhook.cluster import store\n", "may only import"),
    ],
)
def test_a_violation_is_caught(module: str, source: str, expected: str) -> None:
    found = violations(source, module)
    assert found, f"{source!r} in {module} should violate the layering"
    assert expected in found[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("webhook.kubelet.x", "import re\nfrom webhook.kubelet._go import url_parse\n"),
        ("webhook.core.x", "import orjson\nfrom webhook.kubelet import keyring\n"),
        ("webhook.core.x", "from . import model\nfrom .model import RegistrySecret\n"),
        ("webhook.cluster.x", "import threading\nfrom webhook.core.model import RegistrySecret\n"),
        ("webhook.serve.x", "from webhook.replication.controller import Replicator\n"),
        (
            "webhook.ops.x",
            "from webhook.cluster import livestate\nfrom webhook.core import model\n",
        ),
    ],
)
def test_what_the_layering_allows(module: str, source: str) -> None:
    assert violations(source, module) == []
