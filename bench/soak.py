"""Soak: mixed normal and hostile traffic against one `serve`, RSS and p99 over time.

    python -m bench.soak                 # 10 minutes (issue 11's soak), 127.0.0.1 only
    python -m bench.soak --seconds 60    # a short try

Bounded: every client thread stops at the deadline (sockets time out in 30 s at most),
the server runs in its own process group on 127.0.0.1 and is stopped at the end, however
the run ends. Normal clients send the bench workload's reviews back to back on keep-alive
connections; one hostile client cycles through what issue 11 found: 2.7 MiB reviews of
110,000 made-up imagePullSecrets names, 2.4 MiB reviews of 45,000 containers, oversized
headers, bodies stalled mid-way, and connections that send nothing. Every `--every`
seconds it prints the server's RSS and the normal requests' p50/p99/max of that window.
The server runs with PYTHONMALLOC=malloc, as the image does. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.client
import itertools
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import HOST, Server, client_context, rss_mib, start_webhook, wait_ready
from bench.workload import REQUEST_NAMESPACES, ROOT, bodies, write_cluster
from webhook.serve import certs as certs_mod

JSON = {"Content-Type": "application/json"}
SOCKET_TIMEOUT = 30.0


@dataclass
class Window:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    hostile: dict[str, int] = field(default_factory=dict)

    def take(self) -> tuple[list[float], int, dict[str, int]]:
        with self.lock:
            out = (self.latencies, self.errors, self.hostile)
            self.latencies, self.errors, self.hostile = [], 0, {}
        return out


def _review(name: str) -> dict[str, Any]:
    path = ROOT / "tests/fixtures/admissionreview" / name
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def hostile_names(round_: int) -> bytes:
    doc = copy.deepcopy(_review("v1-create-pod-dry-run.json"))
    doc["request"]["object"]["spec"]["imagePullSecrets"] = [
        {"name": f"s{round_}-{i}"} for i in range(110_000)
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


def hostile_containers() -> bytes:
    doc = copy.deepcopy(_review("v1-create-pod-dry-run.json"))
    doc["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"registry.example.com/team/app-{i}:v1"} for i in range(45_000)
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


def normal_client(
    server: Server, ctx: ssl.SSLContext, payloads: list[bytes], deadline: float, win: Window
) -> None:
    conn = http.client.HTTPSConnection(HOST, server.port, context=ctx, timeout=SOCKET_TIMEOUT)
    for body in itertools.cycle(payloads):
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        try:
            conn.request("POST", "/mutate", body, JSON)
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            ok = False
        with win.lock:
            if ok:
                win.latencies.append(time.perf_counter() - started)
            else:
                win.errors += 1
    conn.close()


def _tls(server: Server, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _drain(sock: ssl.SSLSocket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


HOSTILE_KINDS = ("names", "containers", "header", "stalled", "silent")


def hostile_client(
    server: Server, ctx: ssl.SSLContext, deadline: float, win: Window, kinds_: list[str]
) -> None:
    # Built before the clock starts: building them here would hold the GIL of this process
    # and show up as latency of the normal clients (which share it).
    containers = hostile_containers()
    names = [hostile_names(i) for i in range(4)]
    kinds = itertools.cycle(kinds_)
    for round_ in itertools.count():
        if time.monotonic() >= deadline:
            break
        kind = next(kinds)
        try:
            if kind in ("names", "containers"):
                body = names[round_ % len(names)] if kind == "names" else containers
                conn = http.client.HTTPSConnection(
                    HOST, server.port, context=ctx, timeout=SOCKET_TIMEOUT
                )
                conn.request("POST", "/mutate", body, JSON)
                conn.getresponse().read()
                conn.close()
            else:
                with _tls(server, ctx) as sock:
                    if kind == "header":
                        with contextlib.suppress(OSError):
                            sock.sendall(b"POST /mutate HTTP/1.1\r\nX-Big: " + b"a" * (4 << 20))
                    elif kind == "stalled":
                        sock.sendall(
                            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nContent-Length: 7000000\r\n\r\n" + b" " * 1_000_000
                        )
                    _drain(sock)  # until the server's limit or timeout ends it
        except (OSError, http.client.HTTPException):
            pass
        with win.lock:
            win.hostile[kind] = win.hostile.get(kind, 0) + 1
        time.sleep(1.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600.0, help="duration (default 600)")
    p.add_argument("--every", type=float, default=10.0, help="report interval (default 10)")
    p.add_argument("--clients", type=int, default=4, help="normal keep-alive clients (4)")
    p.add_argument(
        "--hostile",
        default=",".join(HOSTILE_KINDS),
        help=f"hostile requests to cycle through, one a second (default {','.join(HOSTILE_KINDS)})",
    )
    args = p.parse_args(argv)
    os.chdir(ROOT)
    os.environ["PYTHONMALLOC"] = "malloc"  # inherited by the server, as the image sets it
    with tempfile.TemporaryDirectory(prefix="psi-soak-") as tmp:
        work = Path(tmp)
        paths = certs_mod.write_bundle(
            certs_mod.generate(["localhost"], ["127.0.0.1"]), work / "certs"
        )
        cluster = write_cluster(work / "cluster.yaml", REQUEST_NAMESPACES)
        payloads = bodies()
        server = start_webhook(work, paths, cluster, "soak")
        try:
            wait_ready(server, paths["ca.crt"], payloads[0])
            ctx = client_context(paths["ca.crt"])
            win = Window()
            deadline = time.monotonic() + args.seconds
            threads = [
                threading.Thread(
                    target=normal_client, args=(server, ctx, payloads, deadline, win), daemon=True
                )
                for _ in range(args.clients)
            ]
            threads.append(
                threading.Thread(
                    target=hostile_client,
                    args=(server, ctx, deadline, win, args.hostile.split(",")),
                    daemon=True,
                )
            )
            for t in threads:
                t.start()
            started = time.monotonic()
            print("seconds  rss_mib  normal  errors  p50_ms  p99_ms  max_ms  hostile", flush=True)
            while time.monotonic() < deadline:
                time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
                lat, errors, hostile = win.take()
                rss, _ = rss_mib(server.serving_pids())
                print(
                    f"{time.monotonic() - started:7.0f}  {rss:7.1f}  {len(lat):6d}  {errors:6d}  "
                    f"{pct(lat, 0.5):6.1f}  {pct(lat, 0.99):6.1f}  {pct(lat, 1.0):6.1f}  "
                    f"{dict(sorted(hostile.items()))}",
                    flush=True,
                )
            for t in threads:
                t.join(SOCKET_TIMEOUT + 5)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
