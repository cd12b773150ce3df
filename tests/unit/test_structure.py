"""Sizes the architecture promises: no class over 300 lines, no module over 600 lines
(the Go standard library ports in webhook/kubelet/_go.py excepted: they follow Go's own
files, and splitting them would only hide what they port); and the README's Layout names
exactly the modules there are."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "webhook"
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 600
EXEMPT_MODULES = {PACKAGE / "kubelet" / "_go.py"}


def _classes_over(source: str, limit: int) -> list[tuple[str, int]]:
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_class_is_over_300_lines() -> None:
    big = {
        f"{path.relative_to(ROOT)}:{name}": lines
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, lines in _classes_over(path.read_text(encoding="utf-8"), MAX_CLASS_LINES)
    }
    assert big == {}


def test_no_module_is_over_600_lines() -> None:
    big = {
        str(path.relative_to(ROOT)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in EXEMPT_MODULES
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}


def test_the_class_measure_sees_a_long_class() -> None:
    source = "class Big:\n" + "    x = 1\n" * 300
    assert _classes_over(source, MAX_CLASS_LINES) == [("Big", 301)]
    assert _classes_over("class Small:\n    pass\n", MAX_CLASS_LINES) == []


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Layout")
    fence = readme.index("```\n", start)
    return readme[fence : readme.index("```\n", fence + 4)]


def test_the_readme_layout_names_every_module_and_only_those() -> None:
    named = set(re.findall(r"\b([a-z_]+\.py)\b", _layout_block()))
    actual = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert sorted(actual - named) == [], "modules the README's Layout does not name"
    assert sorted(named - actual) == [], "files the README's Layout names that do not exist"
