"""Limits on every HTTPS connection (issue 11, items 2, 3 and 7): sizes, timeouts, count.

uvicorn's httptools protocol reads a request line and headers of any size (a 64 MiB header
was answered 200), waits for a header or a body forever, and accepts any number of
connections. Go's net/http, which the API server and controller-runtime use, has
MaxHeaderBytes (1 MiB), ReadHeaderTimeout and ReadTimeout (ours: a body read timeout from
the end of the headers), and IdleTimeout.

Two ways were weighed. uvicorn's h11 protocol has h11_max_incomplete_event_size, but
answers an oversized header with a plain-text 400, has no read timeouts either, and parses
in pure Python: measured in process on the captured 8.5 KB review request, 38-77 us per
request against 2-7 us for httptools (llhttp, in C), 10-20 times the cost, a few percent
of a ~1 ms admission, for less than this gives. So the httptools protocol is kept and
subclassed here: it counts the bytes of the request line and headers as they arrive and
times each phase of a request on the event loop (one timer a phase, no task). What it
answers is a JSON `Status`, as the admission app's own 4xx are, with `Connection: close`:

- request line over max_header_bytes: 414; request line and headers over it: 431;
- headers not complete within header_read_timeout of the connection (or of the first byte
  of a keep-alive request): 408 when part of a request came, else the connection is closed;
- body not complete within body_read_timeout of the end of the headers: 408;
- more than max_connections connections open: 503 right after the TLS handshake;
- request bytes (line, headers and body) held by all connections until each is answered
  over max_inflight_body_bytes: 503 to the request that would cross it. With the
  connection cap alone, 512 half-sent 7 MiB bodies could hold 3.5 GiB, and 512 headers of
  almost 1 MiB half a GiB; this bounds them (default 64 MiB: hundreds of normal reviews,
  nine of the largest at once);
- a request httptools cannot parse: 400.
idle_timeout is uvicorn's keep-alive timeout (a connection idle after a response is closed).

One more thing the protocol does, for speed (issue 14): uvicorn writes a response's status
line and headers, then its body, as two writes; over TLS each is a record of its own and a
send() of its own, the largest single cost of an admission on uvloop (bench/profiles/).
Each request's cycle writes through a :class:`CoalescingWriter` that holds the head until
the body's write and sends both as one (or sends the head alone at the end of the loop's
iteration, if no body came in it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from webhook.config import Settings
from webhook.core.admission import bad_request_body
from webhook.metrics import Metrics
from webhook.serve.shutdown import Drain


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    header_read_timeout: float
    body_read_timeout: float
    max_connections: int
    max_inflight_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.max_header_bytes,
            settings.header_read_timeout,
            settings.body_read_timeout,
            settings.max_connections,
            settings.max_inflight_body_bytes,
        )


class BodyBudget:
    """Request bytes (heads and bodies) held by all connections of one server, until each
    request is answered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


def status_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response: a JSON Status, and the connection closed after it."""
    body = orjson.dumps(bad_request_body(message, status))
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )  # fmt: skip


class CoalescingWriter:
    """The transport a request's cycle writes to: a response's head waits for its body.

    A write that is a response head (``HTTP/...`` through the blank line) is held; the next
    write sends it and itself as one; a flush scheduled on the loop sends a head that no
    write followed within the same iteration (a HEAD answer, a 100 Continue, a streamed
    body). Closing sends what is held first. Everything else is the transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes) -> None:
        held = self._held
        if held:
            self._held = b""
            self._transport.write(held + data)
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = b""
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; see the module's docstring."""

    limits: ClassVar[HttpLimits]
    metrics: ClassVar[Metrics]
    drain: ClassVar[Drain]
    budget: ClassVar[BodyBudget]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # request line and headers received of the current request
        self._in_head = False  # between the start of a request and the end of its headers
        self._in_request_line = False
        self._reading_body = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed_by_limit = False
        self._body_held = 0  # bytes of the current request (head, body) counted in the budget
        self.last_active = self.loop.time()

    # ---- connection ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = CoalescingWriter(transport, self.loop)
        if len(self.connections) > self.limits.max_connections:
            self._reject(503, "too_many_connections", "too many connections, try again")
            return
        self._arm(self.limits.header_read_timeout, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release_body()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closed_by_limit:
            return
        self.last_active = self.loop.time()
        if self._timer is None and not self._response_owed() and not self._reading_body:
            self._arm(self.limits.header_read_timeout, self._header_timeout)  # keep-alive
        super().data_received(data)
        if self._in_head and not self._closed_by_limit and not self.transport.is_closing():
            self._head_bytes += len(data)
            self.budget.used += len(data)  # held (parser, url, headers) until answered
            self._body_held += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                if self._in_request_line:
                    self._reject(414, "request_line_too_large", "request line too long")
                else:
                    self._reject(431, "header_too_large", "request headers too large")
            elif self.budget.used > self.budget.limit:
                self._reject(503, "body_budget", "too many requests in flight, try again")

    def _response_owed(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse: a JSON Status instead of uvicorn's plain text."""
        self._reject(400, "malformed", msg)

    # ---- parser callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._in_request_line = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._in_request_line = False
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            # Connection: Upgrade (websocket, h2c) or CONNECT: never what the API server
            # sends. uvicorn would hand the connection to another protocol, out of these
            # limits (the bytes it held never given back to the budget), or drop the body
            # and the pipelined requests behind it: answered and closed instead.
            self._reject(
                400, "upgrade", "protocol upgrades (Upgrade header, CONNECT) are not served"
            )
            return
        refused = self._refused_as_go_refuses()
        if refused is not None:
            self._reject(*refused)
            return
        self._in_head = False
        self._in_request_line = False
        self._head_bytes = 0
        self._reading_body = True
        self._arm(self.limits.body_read_timeout, self._body_timeout)
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = self._writer  # type: ignore[assignment]  # head + body: one write
            if self.drain.draining:
                self.cycle.keep_alive = False  # shutting down: the response says Connection: close

    def _refused_as_go_refuses(self) -> tuple[int, str, str] | None:
        """What Go's server refuses in a request's head and httptools lets through
        (net/http readRequest): an HTTP version other than 1.0 and 1.1, an HTTP/1.1
        request without exactly one Host, a Transfer-Encoding other than chunked."""
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            return 505, "malformed", f"HTTP/{version} is not supported"
        hosts = 0
        coding: bytes | None = None
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                coding = value if coding is None else coding + b"," + value
        if hosts > 1:
            return 400, "malformed", "too many Host headers"
        if hosts == 0 and version == "1.1":
            return 400, "malformed", "missing required Host header"
        if coding is not None and coding.strip().lower() != b"chunked":
            return 501, "malformed", "unsupported transfer encoding"
        return None

    def on_body(self, body: bytes) -> None:
        if self._closed_by_limit:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            if self.budget.used + len(body) > self.budget.limit:
                self._reject(503, "body_budget", "too many request bodies in flight, try again")
                return
            self.budget.used += len(body)
            self._body_held += len(body)
        super().on_body(body)

    def _release_body(self) -> None:
        self.budget.used -= self._body_held
        self._body_held = 0

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.last_active = self.loop.time()
        self._release_body()
        if self._reading_body:
            # Answered before its body was all read (a 413 or 415 on the headers alone, a
            # 404): what is left of it would be read as the next request. Not reused, as
            # Go's server does not (net/http chunkWriter.writeHeader).
            self._disarm()
            self.transport.close()
        super().on_response_complete()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's log line for an upgrade it will not do: on_headers_complete has
        answered it (and counted it) already."""

    # ---- shutdown ----

    def is_idle(self) -> bool:
        """Nothing of a request received and no response owed."""
        return (
            not self._in_head
            and not self._reading_body
            and not self._response_owed()
            and not self.pipeline
        )

    def end_at_shutdown(self) -> None:
        """The shutdown's time is up: a body still coming gets 408, anything else a close."""
        if self._reading_body or self._in_head:
            self._reject(408, "shutdown", "the server is shutting down")
        else:
            self._closed_by_limit = True
            self.transport.close()

    # ---- timers and refusals ----

    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self._reading_body or self.transport.is_closing():
            return
        if self._response_owed():
            return  # a response is owed: the keep-alive and body timers are in charge
        if self._in_head:
            self._reject(408, "header_timeout", "request headers not received in time")
        else:  # a connection that never sent a request (the API server's are never idle)
            self.metrics.http_rejections.labels("header_timeout").inc()
            self._closed_by_limit = True
            self.transport.close()

    def _body_timeout(self) -> None:
        self._timer = None
        if not self._reading_body or self.transport.is_closing():
            return
        self._reject(408, "body_timeout", "request body not received in time")

    def _reject(self, status: int, reason: str, message: str) -> None:
        """Answer `status` (unless a response already started) and close the connection."""
        self._disarm()
        self._closed_by_limit = True
        self.metrics.http_rejections.labels(reason).inc()
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's answer, if any, goes nowhere
            cycle.message_event.set()  # and a body read in progress ends (ClientDisconnect)
        if not started and not self.transport.is_closing():
            self.transport.write(status_response(status, message))
        self.transport.close()


def protocol_class(limits: HttpLimits, metrics: Metrics, drain: Drain) -> type[LimitedHttpProtocol]:
    """LimitedHttpProtocol bound to these limits (uvicorn builds protocols from a class)."""
    budget = BodyBudget(limits.max_inflight_body_bytes)  # shared by the server's connections
    return type(
        "BoundLimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {"limits": limits, "metrics": metrics, "drain": drain, "budget": budget},
    )
