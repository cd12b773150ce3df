"""Micro-benchmark of the pure decision, per pod: no HTTP, no TLS, no event loop.

`decide()` is pod + the namespace's secrets -> names to add + JSON Patch, from scratch
(what `mutate` and the tests call); `Decider` is the same decision through the memo the
server keeps (warm: the namespace's keyring, the image lookups and the whole decision of a
pod seen before are remembered); "parse+handle+encode" is the whole pure path of one
request as the /mutate handler runs it (serve/decode.py's decode of the fields it reads,
AdmissionReview validation, the Decider, response building, orjson encode). Each figure
is the best of 5 repeats of a loop timed with timeit, in microseconds per pod.

    .venv/bin/python -m bench.micro [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from bench.workload import SHAPES, cluster_store, namespace_name, review
from webhook.core.admission import handle
from webhook.core.injection import Decider, Policy, decide
from webhook.serve.decode import decode_review


def per_call_us(fn: Callable[[], Any], budget: float = 0.25) -> float:
    """Best of 5 repeats, each a loop of about `budget` seconds; microseconds per call."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def run(namespaces: int = 20) -> list[dict[str, Any]]:
    store = cluster_store(namespaces)
    policy = Policy.build(None)
    ns = namespace_name(namespaces // 2)
    rows = []
    for shape in SHAPES:
        doc = review(shape, ns, "pod", "00000000-0000-0000-0000-000000000000")
        body = orjson.dumps(doc)
        pod = doc["request"]["object"]

        decider = Decider(policy)  # as the server keeps one: its memo warms up

        def decide_cold(pod: Any = pod) -> Any:
            return decide(pod, ns, store.secrets_in(ns), policy)

        def decide_warm(pod: Any = pod, decider: Decider = decider) -> Any:
            return decider.decide(pod, ns, store.secrets_in(ns))

        def full(body: bytes = body, decider: Decider = decider) -> bytes:
            req = decode_review(body)
            answer = handle(req, lambda p, n: decider.decide(p, n, store.secrets_in(n)))
            return orjson.dumps(answer.review)

        rows.append(
            {
                "shape": shape.name,
                "secrets": store.secret_count(),
                "decide_us": per_call_us(decide_cold),
                "decider_us": per_call_us(decide_warm),
                "parse_handle_encode_us": per_call_us(full),
                "body_bytes": len(body),
            }
        )
    return rows


HEADER = (
    f"{'pod':<14} {'secrets':>7} {'decide() µs':>12} {'Decider µs':>11} "
    f"{'parse+handle+encode µs':>23}"
)


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['shape']:<14} {r['secrets']:>7} {r['decide_us']:>12.1f} {r['decider_us']:>11.1f} "
        f"{r['parse_handle_encode_us']:>23.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro")
    p.add_argument("--namespaces", type=int, nargs="+", default=[20, 10_000])
    p.add_argument("--json", action="store_true", help="print JSON rows")
    args = p.parse_args(argv)
    rows = [row for n in args.namespaces for row in run(n)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(HEADER)
    for r in rows:
        print(format_row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
