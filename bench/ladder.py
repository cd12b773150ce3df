"""What stands between the webhook and the raw server, one layer at a time (issue 14, item 1).

    .venv/bin/python -m bench.ladder                      # 3 rounds of 3 s, uvloop
    .venv/bin/python -m bench.ladder --rounds 5 --loop asyncio

Six servers on 127.0.0.1, each served as bench/run serves its targets (one process, the
webhook's uvicorn configuration and TLS context), under the same wrk load (1 thread, 16
keep-alive connections, the three pod sizes in rotation), in interleaved rounds:

1. (a) raw ASGI, fixed answer (bench/baselines.py `raw`);
2. (a) behind the webhook's HTTP limits protocol (webhook/serve/limits.py);
3. (c) the webhook's pure path in (a)'s shell: decode, validate, decide (a warm Decider),
   build and encode the answer (bench/baselines.py `pure`);
4. (c) behind the limits protocol;
5. `serve --objects` with `--log-level warning`: the whole webhook without its injection
   log line;
6. `serve --objects`, as it runs: with the log line (contract item 9: which secret, for
   which image, why).

Printed: the server CPU per admission of each (µs, median of the rounds, and every round),
its ratio to (a), and the step from the row above. Nothing is asserted: it shows which
layer costs what, on this machine, in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import load
from bench.workload import ROOT

STEPS = (
    "(a) raw ASGI, fixed answer",
    "(a) + the limits protocol",
    "(c) the pure path in (a)'s shell",
    "(c) + the limits protocol",
    "webhook without its log line",
    "webhook (serve, as it runs)",
)


def run(rounds: int, seconds: float, loop: str) -> list[tuple[str, list[float]]]:
    with tempfile.TemporaryDirectory(prefix="psi-ladder-") as tmp:
        work = Path(tmp)
        ready = load.setup(work)
        cert_paths, request_bodies, bodies_file = ready.certs, ready.bodies, ready.bodies_file
        cluster = ready.cluster

        def webhook(label: str, level: str) -> Callable[[], load.Server]:
            extra = ["--log-level", level]
            return lambda: load.start_webhook(work, cert_paths, cluster, label, loop, extra)

        starts: list[Callable[[], load.Server]] = [
            lambda: load.start_baseline(work, cert_paths, "raw", loop),
            lambda: load.start_baseline(work, cert_paths, "raw", loop, limits=True),
            lambda: load.start_baseline(work, cert_paths, "pure", loop),
            lambda: load.start_baseline(work, cert_paths, "pure", loop, limits=True),
            webhook("webhook-quiet", "warning"),
            webhook("webhook", "info"),
        ]
        servers: list[load.Server] = []
        try:
            for start in starts:
                server = start()
                servers.append(server)
                load.wait_ready(server, cert_paths["ca.crt"], request_bodies[1])
                load.wrk(server, bodies_file, 1.0)  # warm-up
            figures: list[list[float]] = [[] for _ in servers]
            for i in range(rounds):
                load.wait_quiet()
                for server, got in zip(servers, figures, strict=True):
                    got.append(load.wrk(server, bodies_file, seconds).server_cpu_us_per_req)
                load.log(f"round {i + 1}/{rounds} done")
        finally:
            for server in servers:
                server.stop()
    return list(zip(STEPS, figures, strict=True))


def table(rows: list[tuple[str, list[float]]], loop: str) -> str:
    raw = statistics.median(rows[0][1])
    out = [
        f"server CPU per admission, {loop}, wrk 1 thread x 16 connections, the three pod "
        "sizes in rotation (µs, median of rounds; every round)",
        f"{'step':<36} {'µs':>5} {'x (a)':>6} {'step':>6}  rounds",
    ]
    previous = None
    for name, got in rows:
        median = statistics.median(got)
        step = "" if previous is None else f"{median - previous:+.0f}"
        each = " ".join(f"{x:.0f}" for x in got)
        out.append(f"{name:<36} {median:>5.0f} {median / raw:>6.2f} {step:>6}  {each}")
        previous = median
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ladder", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="wrk seconds per round")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    print(table(run(args.rounds, args.seconds, args.loop), args.loop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
