"""The baselines the webhook is measured against, served exactly as the webhook is.

(a) ``raw``: the server's limit. A bare ASGI app that drains the request body and answers a
    fixed AdmissionReview response, byte for byte what the webhook answers for the
    captured pod (so the response is valid and of the same size), without parsing.
(b) ``floor``: the framework's floor. A FastAPI route that reads the body, parses it with
    orjson (the fastest JSON library installed) and answers allowed with the request's
    uid and a fixed patch (the webhook's patch for the captured pod).
(c) ``pure``: (a)'s shell around the webhook's pure path (decode, validate, decide, build and
    encode the answer), without its limits, metrics or log line: what the work itself costs
    on this server (bench/ladder.py; bench/profile.py --target pure).
``python -m bench.baselines raw|floor|pure ...`` serves one of them with the webhook's own
TLS context (webhook.serve.tls.server_context), uvicorn configuration (webhook.serve.run) and
worker model (N forked processes accepting on one shared socket).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from bench.workload import ROOT, cluster_store, medium_body
from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.core.admission import handle, parse_review
from webhook.core.injection import Policy, decide
from webhook.metrics import Metrics
from webhook.serve.run import loop_factory, uvicorn_config
from webhook.serve.server import Drain, apply_limits
from webhook.serve.tls import server_context

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def webhook_answer(cluster: Path | None = None) -> dict[str, Any]:
    """The webhook's own AdmissionReview response to the captured pod's shape."""
    if cluster is None:
        store = cluster_store(1)
    else:
        store = Store()
        fill_store(store, load_objects([cluster]))
    policy = Policy.build(None)
    req = parse_review(orjson.loads(medium_body()))
    answer = handle(req, lambda pod, ns: decide(pod, ns, store.secrets_in(ns), policy))
    assert answer.review["response"].get("patch"), "the captured pod must get a patch"
    return answer.review


def raw_app(response: bytes) -> ASGIApp:
    """(a) Drain the body, answer `response`: no routing, no parsing, no framework."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(response)).encode()),
    ]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    body = {"type": "http.response.body", "body": response}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send(start)
        await send(body)

    return app


def floor_app(patch: str) -> FastAPI:
    """(b) A FastAPI route: read, orjson-parse, answer allowed with the uid and `patch`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        review = {
            "apiVersion": doc["apiVersion"],
            "kind": "AdmissionReview",
            "response": {
                "uid": doc["request"]["uid"],
                "allowed": True,
                "patchType": "JSONPatch",
                "patch": patch,
            },
        }
        return Response(orjson.dumps(review), media_type="application/json")

    return app


def pure_app() -> ASGIApp:
    """(c) (a)'s shell around the webhook's pure path: decode, validate, decide (the
    server's Decider, warm), build and encode the answer; no limits, metrics or log line."""
    from bench.workload import SMALL_NAMESPACES  # noqa: PLC0415
    from webhook.core.injection import Decider  # noqa: PLC0415
    from webhook.serve.decode import decode_review  # noqa: PLC0415

    store = cluster_store(SMALL_NAMESPACES)
    decider = Decider(Policy.build(None))

    def decide_in_store(pod: Any, ns: str) -> Any:
        return decider.decide(pod, ns, store.secrets_in(ns))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        answer = handle(decode_review(b"".join(chunks)), decide_in_store)
        body = orjson.dumps(answer.review)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return app


def build(kind: str) -> Any:
    if kind == "pure":
        return pure_app()
    answer = webhook_answer()
    if kind == "raw":
        return raw_app(orjson.dumps(answer))
    if kind == "floor":
        return floor_app(answer["response"]["patch"])
    raise ValueError(f"unknown baseline {kind!r}")


def _serve(app: Any, args: argparse.Namespace) -> None:
    config = uvicorn_config(app, args.host, args.port)
    if args.limits:  # the webhook's HTTP limits protocol (bench/ladder.py), default settings
        settings = Settings(cert_file=args.cert_file, key_file=args.key_file)
        apply_limits(config, settings, Metrics(), Drain())
    config.load()
    config.ssl = server_context(args.cert_file, args.key_file)
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(uvicorn.Server(config).serve())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    p.add_argument("kind", choices=["raw", "floor", "pure"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert-file", type=Path, required=True)
    p.add_argument("--key-file", type=Path, required=True)
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    p.add_argument("--limits", action="store_true",
                   help="behind the webhook's limits protocol (serve/limits.py)")  # fmt: skip
    args = p.parse_args(argv)
    os.chdir(ROOT)
    _serve(build(args.kind), args)  # as `serve`: one process, uvicorn binds the socket
    return 0


if __name__ == "__main__":
    sys.exit(main())
