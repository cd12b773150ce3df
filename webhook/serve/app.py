"""The HTTP adapters: the admission app (POST /mutate) and the operations app.

Thin by design: read and bound the body, decode JSON, hand the document to the pure
admission/injection code, encode the answer, count and log it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.config import Settings
from webhook.core.admission import (
    AdmissionRequest,
    Answer,
    BadRequest,
    Outcome,
    bad_request_body,
    handle,
    parse_review,
)
from webhook.core.injection import Decider, Decision, Policy
from webhook.core.model import RegistrySecret
from webhook.metrics import Metrics
from webhook.serve.errors import json_status_errors
from webhook.serve.offload import Offload
from webhook.serve.shutdown import Drain

log = logging.getLogger(__name__)

LiveRead = Callable[[str], bool]
# ensure_copies bounds itself (--replication-admission-timeout); this only guards.
_COPY_WAIT_SLACK_SECONDS = 0.5
_MAX_LOGGED_IMAGES = 32


class Replication(Protocol):
    """The admission side of replication (webhook.replication.admission_copies).

    Its calls take only locks held for memory work, never during I/O, so the event loop
    may call ``pending_copies`` and ``missing_nothing``; ``ensure_copies`` waits for API
    calls and runs on a worker thread.
    """

    def ensure_copies(self, namespace: str, dry_run: bool) -> list[str]: ...

    def missing_nothing(self, namespace: str) -> bool: ...

    def pending_copies(
        self, namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Mapping[str, RegistrySecret]: ...


JSON = "application/json"


def _json_response(doc: Mapping[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise BadRequest(f"body of {declared} bytes exceeds the {limit}-byte limit", 413)
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"body exceeds the {limit}-byte limit", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        raise BadRequest(
            f"Content-Type must be application/json, got {content_type or 'none'!r}"[:200], 415
        )


def decode_review(body: bytes) -> AdmissionRequest:
    """The AdmissionReview in a request body; raises BadRequest saying what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    return parse_review(doc)


async def read_review(
    request: Request, limit: int, offload: Offload
) -> tuple[AdmissionRequest, bool]:
    """The request's AdmissionReview, and whether it is large (decoded off the loop then)."""
    _check_content_type(request)
    body = await read_body(request, limit)
    if offload.is_large(body):
        return await offload.run(functools.partial(decode_review, body)), True
    return decode_review(body), False


def _nothing() -> None:
    """Run on the offload pool once a large request's objects are freed: it gives memory back."""


def _log_answer(answer: Answer, uid: str, namespace: str, pod: str, dry_run: bool) -> None:
    decision: Decision | None = answer.decision
    fields: dict[str, Any] = {
        "uid": uid,
        "namespace": namespace,
        "pod": pod,
        "operation": "CREATE",
        "outcome": answer.outcome.value,
        "dry_run": dry_run,
        "reason": answer.reason,
    }
    if decision is not None and decision.changed:
        fields["injected"] = list(decision.add)
        served = [i for i in decision.images if i.added]
        fields["images"] = {i.image: list(i.added) for i in served[:_MAX_LOGGED_IMAGES]}
        if len(served) > _MAX_LOGGED_IMAGES:  # issue 11: a log line does not grow with the pod
            fields["images_not_listed"] = len(served) - _MAX_LOGGED_IMAGES
        log.info("injected imagePullSecrets", extra=fields)
    elif answer.outcome is Outcome.ERROR:
        log.error("admission failed open", extra=fields)
    else:
        log.debug("admission answered", extra=fields)


class _Decisions:
    """The loop's Decider (remembering), and a fresh one for each large review on the pool."""

    def __init__(self, policy: Policy, store: Store, replication: Replication | None) -> None:
        self._policy = policy
        self._store = store
        self._replication = replication
        self._decider = Decider(policy)

    def _in_scope(self, namespace: str) -> Mapping[str, RegistrySecret]:
        secrets = self._store.secrets_in(namespace)
        if self._replication is not None:  # copies not in the store yet (dryRun, in flight)
            secrets = self._replication.pending_copies(namespace, secrets)
        return secrets

    def on_loop(self, pod: Mapping[str, Any], namespace: str) -> Decision:
        return self._decider.decide(pod, namespace, self._in_scope(namespace))

    def off_loop(self, pod: Mapping[str, Any], namespace: str) -> Decision:
        """On the offload pool: a Decider of its own (the loop's is not thread-safe)."""
        return Decider(self._policy).decide(pod, namespace, self._in_scope(namespace))


def _record(answer: Answer, req: AdmissionRequest, metrics: Metrics) -> None:
    metrics.requests.labels(answer.outcome.value).inc()
    if answer.decision is not None:
        metrics.injected.inc(len(answer.decision.add))
    if answer.outcome is not Outcome.SKIPPED:
        _log_answer(answer, req.uid, req.namespace, req.pod_name, req.dry_run)


def create_app(
    settings: Settings,
    store: Store,
    metrics: Metrics,
    live_read: LiveRead | None = None,
    replication: Replication | None = None,
) -> FastAPI:
    """The admission app: POST /mutate."""
    app = FastAPI(title="pullsecret-injector", docs_url=None, redoc_url=None, openapi_url=None)
    json_status_errors(app)  # issue 11: every 4xx a JSON Status, no slash redirect
    decisions = _Decisions(
        Policy.build(
            settings.secret_selector, settings.private_registries, settings.max_containers
        ),
        store,
        replication,
    )
    limit = settings.max_body_bytes
    copy_wait = settings.replication_admission_timeout + _COPY_WAIT_SLACK_SECONDS
    offload = Offload(settings.large_review_bytes, settings.large_review_workers)

    async def ensure_copies(namespace: str, dry_run: bool) -> None:
        """Create the project/cluster registry copies the namespace lacks, before answering."""
        if replication is None or not namespace:
            return
        if replication.missing_nothing(namespace):
            return  # nothing missing: no thread hop on the hot path
        try:
            await asyncio.wait_for(
                asyncio.to_thread(replication.ensure_copies, namespace, dry_run),
                copy_wait,
            )
        except TimeoutError:
            log.warning("copies not created in time", extra={"namespace": namespace})
        except Exception:  # fail open: the pod names the copy, the controller makes it
            log.exception("creating copies at admission failed", extra={"namespace": namespace})

    async def ensure_namespace(namespace: str) -> None:
        """One bounded live read for a namespace the store has never seen."""
        if live_read is None or not namespace or store.has_namespace(namespace):
            return
        # live_read bounds itself by settings.live_read_timeout and counts its own result
        await asyncio.to_thread(live_read, namespace)

    async def respond(req: AdmissionRequest, large: bool, started: float) -> Response:
        if req.is_pod_create:
            await ensure_namespace(req.namespace)
            await ensure_copies(req.namespace, req.dry_run)
        if large:
            answer = await offload.run(functools.partial(handle, req, decisions.off_loop))
        else:
            answer = handle(req, decisions.on_loop)
        _record(answer, req, metrics)
        response = _json_response(answer.review)
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            req, large = await read_review(request, limit, offload)
        except BadRequest as exc:
            metrics.requests.labels("bad_request").inc()
            log.warning("bad request", extra={"status": exc.status, "error": str(exc)})
            return _json_response(bad_request_body(str(exc)), exc.status)
        except ClientDisconnect:
            # The client went away before sending the whole body: nobody to answer.
            metrics.client_disconnects.inc()
            log.info("client disconnected before sending the whole body")
            return _json_response(bad_request_body("client disconnected"), 400)
        response = await respond(req, large, started)
        if large:  # its objects are freed now: hand the memory back (off the loop)
            del req
            await offload.run(_nothing)
        return response

    # A plain (Starlette) route: the handler takes the Request and returns a Response, so
    # FastAPI's per-request dependency solving and response validation of an APIRoute
    # would do nothing but cost about half of the framework's time per request (bench/).
    app.add_route("/mutate", mutate, methods=["POST"])
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
