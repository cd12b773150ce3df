"""cluster/reflector.py WatchOptions: bounds, and the read timeout that catches half-open
watches (the list+watch loop itself runs against the wire-protocol server in tests/kube/)."""

from __future__ import annotations

import pytest

from webhook.cluster.reflector import WatchOptions
from webhook.config import Settings


@pytest.mark.parametrize(
    "bad",
    [
        {"watch_timeout_seconds": 0},
        {"page_size": 0},
        {"backoff_cap_seconds": 0},
        {"backoff_base_seconds": -1},
        {"list_read_timeout": 0},
    ],
)
def test_nonsense_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WatchOptions(**bad)  # type: ignore[arg-type]


def test_a_silent_watch_is_dropped_a_little_after_the_server_would_have_ended_it() -> None:
    assert WatchOptions(watch_timeout_seconds=300).watch_read_timeout == 310
    assert WatchOptions(watch_timeout_seconds=4).watch_read_timeout == 6


def test_serve_passes_its_settings() -> None:
    options = WatchOptions.of(Settings(dev=True, watch_timeout_seconds=60, list_page_size=50))
    assert (options.watch_timeout_seconds, options.page_size) == (60, 50)
