"""Limits on every HTTPS connection (issue 11, items 2, 3 and 7), over raw TLS sockets.

A server of its own with small limits, so that each one is reached at once; each test
waits for what the server does (an answer, a close), never for a fixed time, and would
hang until its socket timeout, then fail, without the limit.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from helpers import review
from webhook_server import Server, example_server

MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 4
BODY_BUDGET = 256 * 1024
WAIT = 20  # seconds a socket waits for the server before the test fails


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with example_server(
        tmp_path_factory.mktemp("limits"),
        "--max-header-bytes", str(MAX_HEADER_BYTES),
        "--header-read-timeout", "1",
        "--body-read-timeout", "1",
        "--idle-timeout", "1",
        "--max-connections", str(MAX_CONNECTIONS),
        "--max-body-bytes", str(BODY_BUDGET),
        "--max-inflight-body-bytes", str(BODY_BUDGET),
    ) as srv:  # fmt: skip
        yield srv


def connect(server: Server) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_all(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


def assert_status(raw: bytes, code: int) -> dict[str, str]:
    status, headers, body = parse(raw)
    assert status == code, raw[:300]
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == code
    assert doc["message"]
    return headers


def test_headers_over_the_limit_get_431_and_the_connection_closes(limited: Server) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        header = b"X-Big: " + b"a" * 1000 + b"\r\n"
        # the server may close before all of it is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            for _ in range(4 * MAX_HEADER_BYTES // len(header)):
                sock.sendall(header)
        headers = assert_status(read_all(sock), 431)
    assert headers["connection"] == "close"


def test_a_request_line_over_the_limit_gets_414(limited: Server) -> None:
    with connect(limited) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            sock.sendall(b"POST /mutate?" + b"q" * (2 * MAX_HEADER_BYTES))  # may be cut short
        assert_status(read_all(sock), 414)


def test_headers_not_finished_in_time_get_408(limited: Server) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")  # and no more
        assert_status(read_all(sock), 408)


def test_a_body_shorter_than_its_content_length_gets_408(limited: Server) -> None:
    body = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    with connect(limited) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
        assert_status(read_all(sock), 408)


def test_a_connection_that_sends_nothing_is_closed(limited: Server) -> None:
    with connect(limited) as sock:
        assert read_all(sock) == b""


def post_review(server: Server, head: bytes) -> bytes:
    """A dry-run review POSTed after `head` (request line and headers but its length);
    everything the server sends until it closes."""
    body = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    with connect(server) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return read_all(sock)


def test_an_idle_keep_alive_connection_is_closed(limited: Server) -> None:
    head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    status, headers, _ = parse(post_review(limited, head))  # the answer, then the close
    assert status == 200
    assert headers.get("connection") != "close"  # kept alive, then closed when idle


def test_connections_beyond_the_cap_get_503(limited: Server) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(connect(limited)) for _ in range(MAX_CONNECTIONS)]
        extra = stack.enter_context(connect(limited))
        assert_status(read_all(extra), 503)
        assert len(held) == MAX_CONNECTIONS


def test_a_malformed_request_gets_a_json_400(limited: Server) -> None:
    with connect(limited) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert_status(read_all(sock), 400)


def test_bodies_in_flight_beyond_the_budget_get_503(limited: Server) -> None:
    head = (
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (BODY_BUDGET - 1024)
    )
    part = b" " * (BODY_BUDGET // 2 + 4096)  # two of them cross the budget
    with connect(limited) as first, connect(limited) as second:
        first.sendall(head + part)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            second.sendall(head + part)
        answers = {parse(read_all(sock))[0] for sock in (first, second)}
    assert answers == {503, 408}  # one refused at once, the other timed out mid-body


WEBSOCKET = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
JSON_HEAD = b"Host: localhost\r\nContent-Type: application/json\r\n"


def statuses(raw: bytes) -> list[int]:
    """The status of every response on a connection, in order."""
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def mutate_ok(server: Server) -> int:
    head = b"POST /mutate HTTP/1.1\r\n" + JSON_HEAD + b"Connection: close\r\n"
    return parse(post_review(server, head))[0]


def test_a_protocol_upgrade_gets_a_json_400_and_the_connection_closes(limited: Server) -> None:
    """uvicorn would hand a websocket upgrade to another protocol (a plain-text 403), out of
    these limits; an h2c upgrade lost its body. Neither is what the API server sends."""
    with connect(limited) as sock:
        sock.sendall(b"GET /mutate HTTP/1.1\r\nHost: localhost\r\n" + WEBSOCKET)
        assert_status(read_all(sock), 400)
    with connect(limited) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\n" + JSON_HEAD + b"Connection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert_status(read_all(sock), 400)


def test_upgrades_give_back_what_their_heads_held_of_the_body_budget(limited: Server) -> None:
    """Handed to the WebSocket protocol, a connection never released the bytes of its head:
    64 upgrades with 1 MB heads made every later /mutate a 503 until a restart."""
    for _ in range(2 * BODY_BUDGET // 4096):  # heads of 4 KB, twice the budget in all
        with connect(limited) as sock:
            sock.sendall(b"GET /mutate HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
            sock.sendall(b"a" * 4000 + b"\r\n")
            time.sleep(0.05)  # the head in more than one read: counted before it is complete
            sock.sendall(WEBSOCKET)
            read_all(sock)
    assert mutate_ok(limited) == 200


@pytest.mark.parametrize(
    "head",
    [
        b"POST /mutate HTTP/1.1\r\n" + JSON_HEAD
        + b"Expect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",  # 413 on the headers
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 10\r\n\r\n",  # 415 before the body
        b"POST /nowhere HTTP/1.1\r\n" + JSON_HEAD + b"Content-Length: 10\r\n\r\n",  # 404
    ],
)  # fmt: skip
def test_an_answer_before_the_body_was_read_closes_the_connection(
    limited: Server, head: bytes
) -> None:
    """What is left of the body would be read as the next request (Go does not reuse such
    a connection); kept open, the body timeout then wrote a 408 no request had asked for."""
    with connect(limited) as sock:
        sock.sendall(head)
        answers = statuses(read_all(sock))  # until the server closes (or WAIT: a failure)
    assert len(answers) == 1 and answers[0] in (413, 415, 404), answers


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"POST /mutate HTTP/1.1\r\nContent-Type: application/json\r\n"
         b"Content-Length: 2\r\n\r\n{}", 400),  # no Host
        (b"POST /mutate HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Type: application/json\r\n"
         b"Content-Length: 2\r\n\r\n{}", 400),  # two
        (b"POST /mutate HTTP/1.1\r\n" + JSON_HEAD
         + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501),
        (b"GET /healthz HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
    ],
)  # fmt: skip
def test_what_gos_server_refuses_is_refused(
    limited: Server, request_head: bytes, status: int
) -> None:
    """net/http readRequest: exactly one Host in HTTP/1.1, only the chunked coding, HTTP/1.x."""
    with connect(limited) as sock:
        sock.sendall(request_head)
        assert_status(read_all(sock), status)


def test_an_http_1_0_request_needs_no_host(limited: Server) -> None:
    head = b"POST /mutate HTTP/1.0\r\nContent-Type: application/json\r\n"
    assert parse(post_review(limited, head))[0] == 200


def test_a_connection_that_never_starts_its_tls_handshake_is_dropped_in_time(
    limited: Server,
) -> None:
    """Not yet a connection the limits see: asyncio and uvloop would wait 60 s for its
    ClientHello. Bounded by --header-read-timeout (1 s here), as Go bounds it by its read
    timeouts."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=WAIT) as raw:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(1) == b""  # closed by the server, or a timeout: a failure
        assert time.monotonic() - started < 5
