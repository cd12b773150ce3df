"""POST /mutate as a lean ASGI handler inside the FastAPI app (issue 14, item 1).

Why not a FastAPI or Starlette route: measured with py-spy under wrk
(bench/profiles/before.txt), the framework's request handling cost more than the
admission's own work. Of 340 µs of server CPU per admission, about 44 µs went to the
layers FastAPI and Starlette put around every request (FastAPI's exception-handling,
body-limit and telemetry wrappers, ServerErrorMiddleware, ExceptionMiddleware,
AsyncExitStackMiddleware, the router's path matching with its regular expression, the
`request_response` wrapper) and 11 µs to the `Request` object (its header parsing and
body stream), against 29 µs for the decision itself. None of it does anything /mutate
needs: the route has no dependencies, no path parameters, no response model.

So `create_app` (webhook/serve/app.py) still builds a FastAPI app, and FastAPI still
serves everything else on that port (GET /mutate is its 405, an unknown path or
POST /mutate/ its 404, each a JSON Status, with no slash redirect), but
:class:`AdmissionApp` hands exactly ``POST /mutate`` to :class:`MutateHandler` before
Starlette's stack. The handler speaks ASGI directly and keeps every behaviour the route
had (tests/http, tests/unit/serve/test_mutate_handler.py):

- Content-Type must be application/json (parameters allowed): else 415;
- the body is capped at --max-body-bytes: a larger Content-Length is refused before
  anything is read, a chunked body once it crosses the cap: 413;
- every 4xx is a JSON Status (core.admission.bad_request_body);
- a client gone before the whole body came (``http.disconnect``, also what
  limits.LimitedHttpProtocol delivers when it ends a request) is counted
  (client_disconnects) and logged at info, not raised;
- large reviews are decoded, decided and encoded on the offload pool (offload.py);
- the in-flight budget, the read timeouts and the drain's ``Connection: close`` belong to
  the protocol (limits.py, shutdown.py) and apply to it unchanged;
- metrics, the injection log line (never a credential: only names, images, reasons),
  both after the answer is sent: the API server does not wait for what only operators read;
- an unexpected error answers a JSON Status 500 and is logged (the route's was a plain-text
  500 from ServerErrorMiddleware); a decision's own error still fails open with a 200.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Scope, Send

from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.core.admission import (
    AdmissionRequest,
    Answer,
    BadRequest,
    Outcome,
    bad_request_body,
    handle,
)
from webhook.core.injection import Decider, Decision, Policy
from webhook.core.model import RegistrySecret
from webhook.metrics import Metrics
from webhook.serve.decode import decode_review
from webhook.serve.logs import LineSampler
from webhook.serve.offload import Offload

log = logging.getLogger("webhook.serve.app")  # the logger the route logged with

LiveRead = Callable[[str], bool]
# ensure_copies bounds itself (--replication-admission-timeout); this only guards.
_COPY_WAIT_SLACK_SECONDS = 0.5
_MAX_LOGGED_IMAGES = 32
JSON = "application/json"
_JSON_HEADER = (b"content-type", JSON.encode())


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


class ClientGoneError(Exception):
    """The client went away before sending the whole body."""


# ---- HTTP: headers, body, answer ----------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case, as the server hands names over)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def check_content_type(scope: Scope) -> None:
    content_type = header(scope, b"content-type") or ""
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        raise BadRequest(
            f"Content-Type must be application/json, got {content_type or 'none'!r}"[:200], 415
        )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before buffering it."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise BadRequest(f"body of {declared} bytes exceeds the {limit}-byte limit", 413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGoneError
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"body exceeds the {limit}-byte limit", 413)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, body: bytes, status: int = 200) -> None:
    """An answer of JSON bytes: the headers Starlette's Response(media_type=JSON) sent."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADER],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_status(send: Send, message: str, status: int) -> None:
    """An error answer: a JSON Status saying `message`."""
    await send_json(send, orjson.dumps(bad_request_body(message, status)), status)


# ---- the decision, metrics and the log line -----------------------------------------------


def _nothing() -> None:
    """Run on the offload pool once a large request's objects are freed: it gives memory back."""


def _log_answer(answer: Answer, req: AdmissionRequest) -> None:
    decision: Decision | None = answer.decision
    changed = decision is not None and decision.changed
    if not changed and answer.outcome is not Outcome.ERROR and not log.isEnabledFor(logging.DEBUG):
        return  # the debug line of an unchanged pod: not built at all at info
    fields: dict[str, Any] = {
        "uid": req.uid,
        "namespace": req.namespace,
        "pod": req.pod_name,
        "operation": "CREATE",
        "outcome": answer.outcome.value,
        "dry_run": req.dry_run,
        "reason": answer.reason,
    }
    if decision is not None and changed:
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


class MutateHandler:
    """The ASGI handler of POST /mutate (what AdmissionApp routes to; see the module)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        live_read: LiveRead | None = None,
        replication: Replication | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._live_read = live_read
        self._replication = replication
        self._decisions = _Decisions(
            Policy.build(
                settings.secret_selector, settings.private_registries, settings.max_containers
            ),
            store,
            replication,
        )
        self._limit = settings.max_body_bytes
        self._copy_wait = settings.replication_admission_timeout + _COPY_WAIT_SLACK_SECONDS
        self.offload = Offload(settings.large_review_bytes, settings.large_review_workers)
        # bound once: the hot path looks none of these up per request
        self._by_outcome: dict[str, Any] = {}  # outcome -> its counter child, made on first use
        self._injected = metrics.injected.inc
        self._warnings = metrics.warnings.inc
        self._latency = metrics.latency.observe
        self._bad_requests = LineSampler()  # their lines: 10 a second, then counted
        self._gone_clients = LineSampler()

    def _count(self, outcome: str) -> None:
        counter = self._by_outcome.get(outcome)
        if counter is None:
            counter = self._by_outcome[outcome] = self._metrics.requests.labels(outcome)
        counter.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            check_content_type(scope)
            body = await read_body(scope, receive, self._limit)
            large = self.offload.is_large(body)
            if large:
                req = await self.offload.run(functools.partial(decode_review, body))
            else:
                req = decode_review(body)
            del body
        except BadRequest as exc:
            sampled = self._bad_requests.allow()
            if sampled is not None:  # any client can send these at will: sampled
                log.warning(
                    "bad request", extra={"status": exc.status, "error": str(exc), **sampled}
                )
            await send_status(send, str(exc), exc.status)
            self._count_failure("bad_request", started)
            return
        except ClientGoneError:
            # The client went away before sending the whole body: nobody to answer.
            self._metrics.client_disconnects.inc()
            sampled = self._gone_clients.allow()
            if sampled is not None:
                log.info("client disconnected before sending the whole body", extra=sampled)
            await send_status(send, "client disconnected", 400)
            return
        try:
            answer = await self._answer(req, large)
            body = orjson.dumps(answer.review)
        except Exception:  # not the decision's (that fails open in handle): ours
            log.exception("admission handler failed", extra={"uid": req.uid})
            await send_status(send, "internal error", 500)
            self._count_failure("error", started)  # what the FailingOpen alert counts
            return
        elapsed = time.perf_counter() - started
        if large:  # its objects are freed now: hand the memory back (off the loop), before
            self._account(answer, req, elapsed)  # answering, so that the next request
            del req, answer  # finds it given back (the answer too: it was kept alive here)
            await self.offload.run(_nothing)
            await send_json(send, body)
            return
        await send_json(send, body)
        # What only the operator reads (metrics, the log line) comes after the answer is on
        # its way: the API server is not kept waiting for it (issue 14, item 4).
        self._account(answer, req, elapsed)

    async def _answer(self, req: AdmissionRequest, large: bool) -> Answer:
        if req.is_pod_create:
            await self._ensure_namespace(req.namespace)
            await self._ensure_copies(req.namespace, req.dry_run)
        if large:
            return await self.offload.run(functools.partial(handle, req, self._decisions.off_loop))
        return handle(req, self._decisions.on_loop)

    def _count_failure(self, outcome: str, started: float) -> None:
        """A request answered with an HTTP error: counted and timed like any other."""
        self._count(outcome)
        self._latency(time.perf_counter() - started)

    def _account(self, answer: Answer, req: AdmissionRequest, elapsed: float) -> None:
        """Count, time and log an answer; an error here is logged, the answer stands."""
        try:
            self._count(answer.outcome.value)
            decision = answer.decision
            if decision is not None:
                self._injected(len(decision.add))
            warned = (
                len(decision.warnings)
                if decision is not None
                else len(answer.review["response"].get("warnings", ()))
            )
            if warned:
                self._warnings(warned)
            if answer.outcome is not Outcome.SKIPPED:
                _log_answer(answer, req)
            self._latency(elapsed)
        except Exception:
            log.exception("accounting for an admission failed", extra={"uid": req.uid})

    async def _ensure_copies(self, namespace: str, dry_run: bool) -> None:
        """Create the project/cluster registry copies the namespace lacks, before answering."""
        replication = self._replication
        if replication is None or not namespace:
            return
        if replication.missing_nothing(namespace):
            return  # nothing missing: no thread hop on the hot path
        try:
            await asyncio.wait_for(
                asyncio.to_thread(replication.ensure_copies, namespace, dry_run),
                self._copy_wait,
            )
        except TimeoutError:
            log.warning("copies not created in time", extra={"namespace": namespace})
        except Exception:  # fail open: the pod names the copy, the controller makes it
            log.exception("creating copies at admission failed", extra={"namespace": namespace})

    async def _ensure_namespace(self, namespace: str) -> None:
        """One bounded live read for a namespace the store has never seen."""
        if self._live_read is None or not namespace or self._store.has_namespace(namespace):
            return
        # live_read bounds itself by settings.live_read_timeout and counts its own result
        await asyncio.to_thread(self._live_read, namespace)
