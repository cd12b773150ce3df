"""The HTTP adapters: the admission app (POST /mutate) and the operations app.

Thin by design: read and bound the body, decode JSON, hand the document to the pure
admission/injection code, encode the answer, count and log it. POST /mutate is answered by
a lean ASGI handler (webhook/serve/mutate.py) that :class:`AdmissionApp` calls before
Starlette's middleware and routing; mutate.py's docstring says why, bench/README.md
shows the measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.serve.errors import json_status_errors
from webhook.serve.mutate import JSON, LiveRead, MutateHandler, Replication
from webhook.serve.shutdown import Drain

__all__ = ["AdmissionApp", "LiveRead", "Replication", "create_app", "create_ops_app"]


def _json_response(doc: Mapping[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


class AdmissionApp(FastAPI):
    """The admission app: a FastAPI app whose ``POST /mutate`` skips the framework.

    Exactly ``POST /mutate`` (no trailing slash, any query) goes straight to the lean
    handler; everything else, GET /mutate (405) and unknown paths (404) included, is
    FastAPI's, answered with JSON Statuses (errors.py). The handler is also the app's
    route for /mutate, so what the app lists is what it serves.
    """

    mutate: MutateHandler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mutate" and scope["method"] == "POST":
            await self.mutate(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    store: Store,
    metrics: Metrics,
    live_read: LiveRead | None = None,
    replication: Replication | None = None,
) -> AdmissionApp:
    """The admission app: POST /mutate."""
    app = AdmissionApp(title="pullsecret-injector", docs_url=None, redoc_url=None, openapi_url=None)
    json_status_errors(app)  # issue 11: every 4xx a JSON Status, no slash redirect
    app.mutate = MutateHandler(settings, store, metrics, live_read, replication)
    # the same handler as a plain ASGI route: reached only by what __call__ does not take
    # (other methods: 405 from the route's method check)
    app.router.routes.append(Route("/mutate", app.mutate, methods=["POST"]))
    return app


def create_ops_app(store: Store, metrics: Metrics, drain: Drain | None = None) -> FastAPI:
    """Plain-HTTP operations app: /healthz, /readyz, /metrics. Unready once `drain` starts."""
    app = FastAPI(title="pullsecret-injector-ops", docs_url=None, redoc_url=None, openapi_url=None)
    json_status_errors(app)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if drain is not None and drain.draining:  # issue 11: SIGTERM makes it unready at once
            return _json_response({"status": "shutting down"}, 503)
        if store.is_synced(SECRETS, NAMESPACES):
            return _json_response({"status": "ready"})
        return _json_response({"status": "waiting for the first full sync"}, 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        # the cache gauges are read from the store now (webhook.metrics.StoreCollector)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
