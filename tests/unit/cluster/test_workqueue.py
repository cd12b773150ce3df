"""cluster/workqueue.py: client-go's rate limiters and work queue, on a fake clock."""

from __future__ import annotations

import threading

import pytest

from webhook.cluster.workqueue import ItemExponentialBackoff, TokenBucket, WorkQueue, jittered


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_per_failure_up_to_the_cap_and_forget_starts_over() -> None:
    backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff(0.5, 4.0)
    assert [backoff.when("a") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.num_requeues("a") == 6
    assert backoff.when("b") == 0.5  # per item
    backoff.forget("a")
    assert backoff.num_requeues("a") == 0
    assert backoff.when("a") == 0.5


def test_backoff_jitter_scales_down_within_its_factor() -> None:
    low: ItemExponentialBackoff[str] = ItemExponentialBackoff(
        1.0, 8.0, jitter=0.5, rand=lambda: 1.0
    )
    high: ItemExponentialBackoff[str] = ItemExponentialBackoff(
        1.0, 8.0, jitter=0.5, rand=lambda: 0.0
    )
    assert [low.when("a") for _ in range(3)] == [0.5, 1.0, 2.0]
    assert [high.when("a") for _ in range(3)] == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("base", "cap", "jitter"), [(0, 1, 0), (1, 0, 0), (1, 1, 1.0), (1, 1, -0.1)]
)
def test_backoff_refuses_nonsense(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        ItemExponentialBackoff(base, cap, jitter=jitter)


def test_jittered_adds_up_to_its_factor() -> None:
    assert jittered(2.0, 0.2, rand=lambda: 0.0) == 2.0
    assert jittered(2.0, 0.2, rand=lambda: 1.0) == pytest.approx(2.4)


def _queue(clock: Clock) -> WorkQueue[str]:
    return WorkQueue(ItemExponentialBackoff(1.0, 8.0), clock=clock)


def test_an_item_is_queued_once_and_batches_keep_insertion_order() -> None:
    queue = _queue(Clock())
    for item in ("b", "a", "b", "c", "a"):
        queue.add(item)
    assert queue.get_batch() == ["b", "a", "c"]
    assert len(queue) == 0


def test_add_after_waits_and_the_earliest_due_time_wins() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add_after("x", 10)
    queue.add_after("x", 5)
    queue.add_after("x", 20)
    assert len(queue) == 1
    clock.now += 5
    assert queue.get_batch() == ["x"]


def test_add_after_without_delay_is_add() -> None:
    queue = _queue(Clock())
    queue.add_after("now", 0)
    assert queue.get_batch() == ["now"]


def test_add_rate_limited_backs_off_per_item_until_forgotten() -> None:
    clock = Clock()
    queue = _queue(clock)
    assert queue.add_rate_limited("ns") == 1.0
    clock.now += 1.0
    assert queue.get_batch() == ["ns"]
    assert queue.add_rate_limited("ns") == 2.0
    assert queue.num_requeues("ns") == 2
    queue.forget("ns")
    assert queue.num_requeues("ns") == 0


def test_get_batch_waits_for_an_item_from_another_thread() -> None:
    queue: WorkQueue[str] = WorkQueue(ItemExponentialBackoff(1.0, 8.0))
    got: list[list[str] | None] = []
    consumer = threading.Thread(target=lambda: got.append(queue.get_batch()))
    consumer.start()
    queue.add("late")
    consumer.join(5)
    assert got == [["late"]]


def test_shut_down_wakes_the_consumer_and_drops_what_is_queued() -> None:
    queue: WorkQueue[str] = WorkQueue(ItemExponentialBackoff(1.0, 8.0))
    queue.add_after("later", 60)
    got: list[list[str] | None] = []
    consumer = threading.Thread(target=lambda: got.append(queue.get_batch()))
    consumer.start()
    queue.shut_down()
    consumer.join(5)
    assert got == [None]
    queue.add("ignored")
    assert len(queue) == 0


def test_clear_drops_items_and_failures() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a")
    queue.add_rate_limited("b")
    queue.clear()
    assert len(queue) == 0
    assert queue.num_requeues("b") == 0


# ---- the token bucket (the replication controller's write rate limit) ---------------------


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:  # a stop Event's wait: time passes, no stop
        self.waits.append(seconds)
        self.now += seconds
        return False


def test_token_bucket_allows_a_burst_then_qps() -> None:
    clock = _FakeClock()
    bucket = TokenBucket(qps=10, burst=5, clock=clock.monotonic)
    stop = type("Stop", (), {"wait": staticmethod(clock.wait), "is_set": lambda self: False})()
    for _ in range(5):
        assert bucket.acquire(stop)  # type: ignore[arg-type]
    assert clock.waits == []  # the burst passes at once
    started = clock.now
    for _ in range(20):
        assert bucket.acquire(stop)  # type: ignore[arg-type]
    assert clock.now - started == pytest.approx(2.0)  # then 10 a second


def test_token_bucket_gives_up_when_stopped() -> None:
    bucket = TokenBucket(qps=0.001, burst=1)
    stop = threading.Event()
    assert bucket.acquire(stop)
    stop.set()
    assert not bucket.acquire(stop)


def test_retain_forgets_the_failures_of_items_gone_for_good() -> None:
    backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff(1.0, 60.0)
    backoff.when("kept")
    backoff.when("gone")
    backoff.retain(lambda item: item == "kept")
    assert (backoff.num_requeues("kept"), backoff.num_requeues("gone")) == (1, 0)
