"""Label selectors in their string form, as Kubernetes parses them."""

from __future__ import annotations

import pytest

from webhook.selectors import SelectorError, parse_selector

LABELS = {"field.cattle.io/projectId": "p-abc12", "team": "payments", "tier": "3"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("field.cattle.io/projectId=p-abc12", True),
        ("field.cattle.io/projectId==p-abc12", True),
        ("field.cattle.io/projectId=p-other", False),
        ("team!=payments", False),
        ("team!=other", True),
        ("missing!=x", True),
        ("team in (payments, billing)", True),
        ("team notin (payments)", False),
        ("team", True),
        ("!team", False),
        ("!missing", True),
        ("team=payments,tier>2", True),
        ("tier<3", False),
        ("team=payments, missing", False),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert parse_selector(text).matches(LABELS) is expected


@pytest.mark.parametrize(
    "text", ["a=b=c", "a in x", "=b", "a,", "a b", "a in ()", "a>x", "-bad=1", "a=" + "v" * 64]
)
def test_invalid_selectors_raise_with_a_reason(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_empty_selects_everything() -> None:
    assert parse_selector("").everything
    assert parse_selector("").matches({})
