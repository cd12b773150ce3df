"""ListPacer: a re-list hands its items over with pauses, so the event loop gets the GIL."""

from __future__ import annotations

import time

import pytest

from webhook.cluster.pacing import ListPacer


class _Clock:
    """A thread-time clock that advances by `step` each reading; sleeps are recorded."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.slept: list[float] = []

    def read(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_items_pass_through_unchanged_and_in_order() -> None:
    clock = _Clock(0.0001)
    pacer = ListPacer(every=3, clock=clock.read, sleep=clock.sleep)
    items = [{"n": i} for i in range(10)]
    out = list(pacer.paced(items))
    assert out == items
    assert all(a is b for a, b in zip(out, items, strict=True))


def test_a_pause_after_every_chunk_as_long_as_the_work_before_it() -> None:
    clock = _Clock(0.0004)  # each reading 0.4 ms later: the work between two readings
    pacer = ListPacer(every=4, max_pause=0.005, clock=clock.read, sleep=clock.sleep)
    assert len(list(pacer.paced(range(10)))) == 10
    assert len(clock.slept) == 2  # after items 4 and 8, none for the last 2
    assert clock.slept == pytest.approx([0.0004, 0.0004])


def test_a_pause_never_exceeds_its_cap() -> None:
    clock = _Clock(0.5)  # the machine stalled the thread: half a second of "work"
    pacer = ListPacer(every=1, max_pause=0.005, clock=clock.read, sleep=clock.sleep)
    list(pacer.paced(range(3)))
    assert clock.slept == [0.005, 0.005, 0.005]


def test_a_short_list_is_not_paused() -> None:
    clock = _Clock(0.001)
    pacer = ListPacer(every=100, clock=clock.read, sleep=clock.sleep)
    assert list(pacer.paced(range(99))) == list(range(99))
    assert clock.slept == []


def test_waiting_is_not_work_by_default() -> None:
    """The default clock is the thread's CPU time: waiting for a page (or for the GIL)
    must not lengthen the pauses, or a slow API server would slow the re-list twice."""
    slept: list[float] = []
    pacer = ListPacer(every=2, max_pause=1.0, sleep=slept.append)
    for _ in pacer.paced(range(4)):
        time.sleep(0.05)  # waiting on the network, not working
    assert len(slept) == 2
    assert max(slept) < 0.02  # 0.1 s of wall time each, almost no CPU


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ListPacer(every=0)
