"""SIGTERM under load (issue 11, item 4): no admission lost, the Kubernetes way.

16 clients keep keep-alive connections busy; SIGTERM arrives. Every request whose bytes
went out on a connection must be answered: a client may only fail to connect (the
listener is closed after the drain period, by when the endpoints no longer route here).
A connection stalled mid-body gets a 4xx or nothing, never a 500.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from helpers import EXAMPLES, review, wait_for
from webhook_server import Server, start_server

CLIENTS = 16


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0
    answered_after_sigterm: int = 0
    not_sent: int = 0  # no connection: the request never left the client
    lost: list[str] = field(default_factory=list)  # sent, never answered
    wrong: list[str] = field(default_factory=list)


def client_loop(server: Server, body: bytes, tally: Tally, sigterm: threading.Event) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=30)
    headers = {"Content-Type": "application/json"}
    while True:
        try:
            conn.request("POST", "/mutate", body=body, headers=headers)
        except OSError:
            with tally.lock:
                tally.not_sent += 1
            if sigterm.is_set():
                return
            continue
        try:
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            with tally.lock:
                tally.lost.append(repr(exc))
            conn.close()
            if sigterm.is_set():
                continue
            return
        with tally.lock:
            tally.answered += 1
            if sigterm.is_set():
                tally.answered_after_sigterm += 1
            if response.status != 200 or b'"allowed":true' not in payload:
                tally.wrong.append(f"{response.status} {payload[:200]!r}")
        if response.will_close:
            conn.close()


def stalled_mid_body(server: Server) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=60),
        server_hostname="localhost",
    )
    sock.sendall(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 5000\r\n\r\n{"apiVersion":'
    )
    return sock


def readiness(server: Server) -> str | None:
    """'unready' once /readyz answers 503, 'exited' if serve exits first, else None."""
    try:
        if httpx.get(f"{server.ops_url}/readyz", timeout=5).status_code == 503:
            return "unready"
    except httpx.HTTPError:
        pass
    return "exited" if server.proc.poll() is not None else None


def test_sigterm_under_load_loses_no_request(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        "--objects", str(EXAMPLES / "cluster.yaml"),
        "--drain-seconds", "2",
        "--shutdown-timeout", "3",
        "--body-read-timeout", "60",  # the shutdown, not the body timer, ends the stalled one
    )  # fmt: skip
    body = json.dumps(review("v1-create-pod-dry-run.json")).encode()
    tally = Tally()
    sigterm = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(server, body, tally, sigterm), daemon=True)
        for _ in range(CLIENTS)
    ]
    stalled = stalled_mid_body(server)
    stalled_answer = b""
    try:
        for t in threads:
            t.start()
        wait_for(lambda: tally.answered >= CLIENTS * 5, "the load to run", 60)
        sigterm.set()
        server.proc.terminate()
        unready = wait_for(lambda: readiness(server), "/readyz to fail or serve to exit", 30)
        assert server.proc.wait(60) == 0, server.logs()
        for t in threads:
            t.join(30)
        with contextlib.suppress(OSError):
            stalled_answer = stalled.recv(65536)
    finally:
        stalled.close()
        if server.proc.poll() is None:
            server.proc.kill()
    print(
        f"answered {tally.answered} ({tally.answered_after_sigterm} after SIGTERM), "
        f"not sent {tally.not_sent}, lost {len(tally.lost)}"
    )
    assert tally.lost == []
    assert tally.wrong == []
    assert unready == "unready"  # /readyz failed while the listener still served
    assert tally.answered_after_sigterm > 0  # served through the drain period
    assert not any(t.is_alive() for t in threads)
    if stalled_answer:
        status = int(stalled_answer.split(b" ", 2)[1])
        assert 400 <= status < 500, stalled_answer[:200]
    assert "Exception in ASGI application" not in server.logs()
