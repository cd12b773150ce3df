"""Kubernetes label selectors in their string form (k8s.io/apimachinery labels.Parse).

Pure. Supports equality (``a=b``, ``a==b``, ``a!=b``), set (``a in (x,y)``,
``a notin (x)``), existence (``a``, ``!a``) and the numeric ``a>1`` / ``a<1``.
The empty string selects everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_TOKEN_RE = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A label selector string that Kubernetes would reject."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator == "in":
            return present and labels[self.key] in self.values
        if self.operator == "notin":
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        have = _parse_int64(labels[self.key])  # Matches: ParseInt, false on error
        if have is None:
            return False
        want = int(self.values[0])
        return have > want if self.operator == "gt" else have < want


_INT64_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _parse_int64(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 10, 64): ASCII digits, an optional sign, in int64."""
    if not _INT64_RE.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...]
    text: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def everything(self) -> bool:
        return not self.requirements


def _check_key(key: str) -> str:
    """apimachinery IsQualifiedName: [prefix/]name, the prefix a DNS-1123 subdomain of at
    most 253 characters, the name at most 63 (the regular expression bounds the name)."""
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > 253 or not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts any non-space
            raise SelectorError(f"cannot parse {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise SelectorError(f"unexpected end of selector {self.text!r}")
        self.i += 1
        return tok

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok == "!":
            return Requirement(_check_key(self.take()), "!")
        key = _check_key(tok)
        op = self.peek()
        if op in (None, ","):
            return Requirement(key, "exists")
        self.i += 1
        if op in ("=", "==", "!="):
            value = self.peek()
            if value is None or value == ",":
                value = ""
            else:
                self.i += 1
            return Requirement(key, "notin" if op == "!=" else "in", (_check_value(value),))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set(op))
        if op in (">", "<"):
            # NewRequirement: the value must parse as an int64 and be a valid label value
            # (so no sign: ``a>-1`` is refused, as the API server refuses it)
            num = self.take()
            if _parse_int64(num) is None:
                raise SelectorError(f"{op!r} needs an integer in {self.text!r}")
            return Requirement(key, "gt" if op == ">" else "lt", (_check_value(num),))
        raise SelectorError(f"unexpected {op!r} after key {key!r} in {self.text!r}")

    def value_set(self, op: str) -> tuple[str, ...]:
        if self.take() != "(":
            raise SelectorError(f"expected '(' after {op!r} in {self.text!r}")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok == ")" and not values:
                return ("",)  # parseValues: "()" is the set of the empty value
            if tok in (",", ")"):
                values.append("")
            else:
                values.append(_check_value(tok))
                tok = self.take()
            if tok == ")":
                return tuple(values)
            if tok != ",":
                raise SelectorError(f"expected ',' or ')' in {self.text!r}")


def parse_selector(text: str) -> Selector:
    """Parse a selector string; raises SelectorError with a reason when invalid."""
    parser = _Parser(text)
    reqs: list[Requirement] = []
    while parser.peek() is not None:
        reqs.append(parser.requirement())
        sep = parser.peek()
        if sep is None:
            break
        if sep != ",":
            raise SelectorError(f"expected ',' before {sep!r} in {text!r}")
        parser.i += 1
        if parser.peek() is None:
            raise SelectorError(f"trailing ',' in {text!r}")
    return Selector(tuple(reqs), text)
