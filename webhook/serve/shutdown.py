"""Shutting down the Kubernetes way (issue 11, item 4): no admission lost at SIGTERM.

When a pod is deleted, the kubelet sends SIGTERM (after any preStop hook) while the
endpoint controllers, kube-proxy and the API servers' webhook clients still route to it
for a while. uvicorn's own shutdown closes the listener and every idle connection at once:
a request already sent on a keep-alive connection but not yet read was lost (16 of 16
busy connections in every run). Here, as Go's http.Server.Shutdown after a drain period:

1. SIGTERM: /readyz answers 503 at once (Drain.start), and from now on every response
   carries `Connection: close`, so each keep-alive connection ends right after a response.
2. For `drain_seconds` (default 5: longer than endpoint propagation) the listener keeps
   accepting and serving: requests routed here meanwhile are answered.
3. Then no new connection is accepted. Requests in flight finish; a connection with no
   request in progress is closed once it has been quiet for IDLE_GRACE_SECONDS (one
   accepted just before the listener closed gets that long to send its request).
4. After `shutdown_timeout` (default 10) what is left is ended without a 500: a
   connection stalled mid-body gets a 408, any other is closed; then the process exits.
The chart's terminationGracePeriodSeconds covers preStop + drain + shutdown timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

IDLE_GRACE_SECONDS = 1.0
_POLL_SECONDS = 0.05
_TASKS_AFTER_CLOSE_SECONDS = 1.0


class Drain:
    """Whether the process is shutting down: shared by the HTTPS server and /readyz."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server with the shutdown above; its protocols are limits.LimitedHttpProtocol."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        drain_seconds: float,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.shutdown_timeout = shutdown_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.start()  # unready at once, not at the next tick of the main loop
        super().handle_exit(sig, frame)

    def _connections(self) -> list[Any]:
        return list(self.server_state.connections)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.start()
        started = self.drain.started_at or time.monotonic()
        log.info("shutting down: draining", extra={"drain_seconds": self.drain_seconds})
        for connection in self._connections():  # requests already being answered close too
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
        while time.monotonic() - started < self.drain_seconds and not self.force_exit:
            await asyncio.sleep(_POLL_SECONDS)

        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        log.info(
            "shutting down: no new connections; finishing requests in flight",
            extra={"connections": len(self.server_state.connections)},
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:
            now = loop.time()
            for connection in self._connections():
                idle = getattr(connection, "is_idle", None)
                quiet_since = getattr(connection, "last_active", now)
                if idle is not None and idle() and now - quiet_since >= IDLE_GRACE_SECONDS:
                    connection.transport.close()
            await asyncio.sleep(_POLL_SECONDS)

        left = self._connections()
        if left:
            log.warning("shutting down: closing connections still open", extra={"left": len(left)})
        for connection in left:
            end = getattr(connection, "end_at_shutdown", None)
            if end is not None:
                end()
            else:
                connection.transport.close()
        tasks_deadline = loop.time() + _TASKS_AFTER_CLOSE_SECONDS
        while self.server_state.tasks and loop.time() < tasks_deadline:
            await asyncio.sleep(_POLL_SECONDS)
        for server in self.servers:
            await server.wait_closed()
