"""replication/expectations.py: our writes until the watch reports them; blocked copies."""

from __future__ import annotations

from helpers import registry_secret

from webhook.replication.expectations import Clashes, Expectations


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


STORED = {"kept": registry_secret("a1", "kept", "registry.example.com")}


def test_an_expected_write_overlays_the_store_until_observed() -> None:
    expectations = Expectations(ttl=30, clock=Clock())
    created = registry_secret("a1", "copy", "ghcr.io")
    expectations.expect("a1", "copy", created)
    expectations.expect("a1", "kept", None)  # a delete
    view = expectations.overlay("a1", STORED)
    assert dict(view) == {"copy": created}
    assert expectations.overlay("a2", STORED) is STORED  # other namespaces: untouched
    expectations.observed("a1", "copy")
    expectations.observed("a1", "kept")
    assert expectations.overlay("a1", STORED) is STORED
    assert len(expectations) == 0


def test_after_the_ttl_the_store_is_trusted_again() -> None:
    clock = Clock()
    expectations = Expectations(ttl=30, clock=clock)
    expectations.expect("a1", "copy", registry_secret("a1", "copy", "ghcr.io"))
    clock.now += 30
    assert expectations.overlay("a1", STORED) is STORED
    expectations.expire()
    assert len(expectations) == 0


def test_expecting_a_name_twice_counts_it_once() -> None:
    expectations = Expectations(clock=Clock())
    expectations.expect("a1", "copy", None)
    expectations.expect("a1", "copy", None)
    assert len(expectations) == 1
    expectations.observed("a1", "copy")
    expectations.observed("a1", "copy")  # again: nothing to forget
    assert len(expectations) == 0


def test_clashes_are_per_namespace_and_cleared_together() -> None:
    clashes = Clashes()
    clashes.add("a1", "reg")
    assert clashes.blocked("a1", "reg") and not clashes.blocked("a2", "reg")
    assert clashes.names_in("a1") == frozenset({"reg"})
    clashes.clear()
    assert not clashes.blocked("a1", "reg")
