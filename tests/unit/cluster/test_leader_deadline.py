"""A leader whose renewals hang stops leading by its renew deadline, before the Lease can
be taken over (client-go, tools/leaderelection renew(): each renew runs under
context.WithTimeout(RenewDeadline), which cancels the requests themselves). The Lease
requests of a leader get only the time left to that deadline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.cluster.leader import LeaderElector, LeaseTimings

TIMINGS = LeaseTimings(lease_duration=1.5, renew_deadline=1.0, retry_period=0.2)


class HangingApi:
    """Once hanging: one more GET answers at once, then every request waits out its timeouts."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.hang = False
        self.renewed_at = 0.0
        self.gets_after_hang = 0

    def request(
        self, method: str, path: str, *, body: Any = None, timeout: Any = None, **_: Any
    ) -> dict[str, Any]:
        if self.hang:
            connect, read = timeout
            if method == "GET" and self.gets_after_hang == 0:
                self.gets_after_hang += 1
                assert self.lease is not None
                return self.lease  # fast GET, then the PUT hangs
            time.sleep(connect + read)  # a dead connection: both timeouts run out
            raise ApiException(status=0, reason="timed out")
        if method == "GET":
            if self.lease is None:
                raise ApiException(status=404, reason="NotFound")
            return self.lease
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        self.renewed_at = time.monotonic()
        return self.lease


def test_a_leader_whose_renewals_hang_steps_down_by_its_renew_deadline() -> None:
    api = HangingApi()
    stopped_at: list[float] = []
    started = threading.Event()
    elector = LeaderElector(
        None,  # type: ignore[arg-type]
        "psi",
        "lease",
        identity="me",
        timings=TIMINGS,
        on_started=started.set,
        on_stopped=lambda: stopped_at.append(time.monotonic()),
    )
    elector._api = api  # type: ignore[assignment]
    elector.start()
    assert started.wait(2)
    api.hang = True
    last_renew = api.renewed_at
    deadline = time.monotonic() + 5
    while not stopped_at and time.monotonic() < deadline:
        time.sleep(0.02)
    elector.stop(release=False)
    assert stopped_at
    led_for = stopped_at[0] - last_renew
    # another candidate may take the Lease lease_duration after the last renewal
    assert TIMINGS.renew_deadline - 0.05 <= led_for < TIMINGS.lease_duration, led_for
