"""Label selectors in their string form, as Kubernetes parses them."""

from __future__ import annotations

import pytest

from webhook.kubelet.labels import SelectorError, parse_selector

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
    "text",
    [
        *("a=b=c", "a in x", "=b", "a,", "a b", "a>x", "-bad=1", "a=" + "v" * 64),
        # NewRequirement: a Gt/Lt value parses as an int64 and is a valid label value
        *("size>-1", "size<99999999999999999999", "size>\u0663", "size>1_0", "size>+1"),
    ],
)
def test_invalid_selectors_raise_with_a_reason(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_empty_selects_everything() -> None:
    assert parse_selector("").everything
    assert parse_selector("").matches({})


# apimachinery validation.IsQualifiedName: the prefix is a DNS-1123 subdomain (at most 253
# characters), the name at most 63.
PREFIX_253 = ".".join(["a" * 63] * 4)[:253]


@pytest.mark.parametrize(
    "key",
    [
        PREFIX_253 + "/name",
        PREFIX_253 + "/" + "n" * 63,
        "example.com/" + "n" * 63,
        "n" * 63,
    ],
)
def test_label_keys_at_the_limits_are_accepted(key: str) -> None:
    assert parse_selector(f"{key}=v").matches({key: "v"})


@pytest.mark.parametrize(
    "key",
    [
        PREFIX_253 + "a/name",  # prefix of 254 characters, short name: rejected upstream
        "a" * 300 + "/x",
        "example.com/" + "n" * 64,
        "/name",
        "Example.com/name",
    ],
)
def test_label_keys_over_the_limits_are_rejected(key: str) -> None:
    assert len(PREFIX_253) == 253
    with pytest.raises(SelectorError):
        parse_selector(f"{key}=v")


def test_an_empty_value_set_is_the_empty_value() -> None:
    """parseValues: "()" is the set {""}; selector.go's own example is valid."""
    selector = parse_selector("x in (foo,,baz),y,z notin ()")
    assert selector.matches({"x": "", "y": "1"})
    assert not selector.matches({"x": "", "y": "1", "z": ""})
    assert parse_selector("x in ()").matches({"x": ""})
    assert not parse_selector("x in ()").matches({"x": "a"})


@pytest.mark.parametrize("value", ["1_0", "99999999999999999999", "\u0663\u0663", " 7", "+7"])
def test_gt_and_lt_match_only_what_parseint_reads(value: str) -> None:
    """Matches reads the label with strconv.ParseInt(v, 10, 64): false on error."""
    expected = value == "+7"  # Go's ParseInt takes a sign
    assert parse_selector("size>5").matches({"size": value}) is expected


def test_gt_and_lt_at_the_int64_limits() -> None:
    assert parse_selector("size<9223372036854775807").matches({"size": "-9223372036854775808"})
    assert not parse_selector("size>5").matches({"size": "9223372036854775808"})
