"""POST /mutate is the lean ASGI handler (webhook/serve/mutate.py), before Starlette; every
other request on the admission app is still FastAPI's (issue 14, item 1).

The app is called as uvicorn calls it: scope, receive, send, messages checked one by one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import pytest
from helpers import EXAMPLES, review
from starlette.types import ASGIApp, Receive, Scope, Send

from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.core.admission import AdmissionRequest, Answer
from webhook.metrics import Metrics
from webhook.serve import mutate
from webhook.serve.app import AdmissionApp, create_app
from webhook.serve.mutate import MutateHandler

Message = dict[str, Any]
CAPTURED = "v1-create-pod-multi-registry-sa-secret.json"


def build(**overrides: Any) -> tuple[AdmissionApp, Metrics]:
    store = Store()
    fill_store(store, load_objects([EXAMPLES / "cluster.yaml"]))
    metrics = Metrics()
    settings = Settings(dev=True, private_registries=("registry.example.com",), **overrides)
    return create_app(settings, store, metrics), metrics


def body_of(name: str = CAPTURED) -> bytes:
    return json.dumps(review(name)).encode()


def call(
    app: ASGIApp,
    method: str,
    path: str,
    messages: list[Message],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """(status, headers, body, messages received) of one request."""
    if headers is None:
        headers = [(b"content-type", b"application/json")]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"timeout=10s", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8443), "state": {},
    }  # fmt: skip
    pending = list(messages)
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # a real server waits for the client: so must this
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, received


def whole(body: bytes) -> list[Message]:
    return [{"type": "http.request", "body": body, "more_body": False}]


def assert_status(status: int, body: bytes, code: int) -> str:
    assert status == code
    doc = orjson.loads(body)
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == code
    message: str = doc["message"]
    return message


class Spy:
    """A Starlette middleware that records each request the framework's stack sees."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        Spy.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


# ---- who serves what -------------------------------------------------------------------------


def test_post_mutate_never_enters_the_framework_and_everything_else_does() -> None:
    app, _ = build()
    app.add_middleware(Spy)
    Spy.seen = []
    status, _, body, _ = call(app, "POST", "/mutate", whole(body_of()))
    assert status == 200 and orjson.loads(body)["response"]["patch"]
    assert Spy.seen == []
    call(app, "GET", "/mutate", [])
    call(app, "POST", "/mutate/", whole(body_of()))
    call(app, "POST", "/nowhere", whole(body_of()))
    assert Spy.seen == [("GET", "/mutate"), ("POST", "/mutate/"), ("POST", "/nowhere")]


def test_fastapi_answers_the_other_requests_with_json_statuses() -> None:
    app, _ = build()
    status, headers, body, _ = call(app, "GET", "/mutate", [])
    assert_status(status, body, 405)
    assert headers[b"allow"] == b"POST"
    status, headers, body, _ = call(app, "POST", "/mutate/", whole(body_of()))
    assert_status(status, body, 404)
    assert b"location" not in headers


def test_the_handler_is_also_the_apps_route_for_mutate() -> None:
    app, _ = build()
    assert isinstance(app.mutate, MutateHandler)
    routes = [r for r in app.router.routes if getattr(r, "path", None) == "/mutate"]
    assert len(routes) == 1 and routes[0].app is app.mutate  # type: ignore[attr-defined]
    # through the framework (the route) the answer is the same as straight
    direct = call(app.mutate, "POST", "/mutate", whole(body_of()))
    routed = call(app.router, "POST", "/mutate", whole(body_of()))
    assert direct[0] == routed[0] == 200 and direct[2] == routed[2]


def test_the_answer_carries_the_headers_the_route_sent() -> None:
    app, _ = build()
    _, headers, body, _ = call(app, "POST", "/mutate", whole(body_of()))
    length = str(len(body)).encode()
    assert headers == {b"content-length": length, b"content-type": b"application/json"}


# ---- the route's behaviours, kept ----------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, b"text/plain", b"application/jsonx"])
def test_a_wrong_content_type_is_415_before_the_body_is_read(content_type: bytes | None) -> None:
    app, _ = build()
    headers = [] if content_type is None else [(b"content-type", content_type)]
    status, _, body, received = call(app, "POST", "/mutate", whole(body_of()), headers)
    assert "Content-Type must be application/json" in assert_status(status, body, 415)
    assert received == 0


def test_a_content_type_with_parameters_is_accepted() -> None:
    app, _ = build()
    headers = [(b"content-type", b"Application/JSON; charset=utf-8")]
    assert call(app, "POST", "/mutate", whole(body_of()), headers)[0] == 200


def test_a_declared_body_over_the_cap_is_413_before_it_is_read() -> None:
    app, metrics = build(max_body_bytes=1024)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
    status, _, body, received = call(app, "POST", "/mutate", whole(b"x" * 5000), headers)
    assert "exceeds the 1024-byte limit" in assert_status(status, body, 413)
    assert received == 0
    assert (
        metrics.registry.get_sample_value(
            "pullsecret_injector_admission_requests_total", {"outcome": "bad_request"}
        )
        == 1
    )


def test_a_content_length_that_is_not_a_number_is_400() -> None:
    app, _ = build()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"12x")]
    status, _, body, _ = call(app, "POST", "/mutate", whole(body_of()), headers)
    assert "Content-Length is not a number" in assert_status(status, body, 400)


def test_a_chunked_body_is_refused_as_soon_as_it_crosses_the_cap() -> None:
    app, _ = build(max_body_bytes=1024)
    chunk = {"type": "http.request", "body": b"x" * 600, "more_body": True}
    status, _, body, received = call(app, "POST", "/mutate", [chunk, chunk, chunk, chunk])
    assert_status(status, body, 413)
    assert received == 2  # the third chunk was never asked for


def test_a_body_in_chunks_is_joined() -> None:
    app, _ = build()
    data = body_of()
    parts = [data[:100], data[100:2000], data[2000:]]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    assert call(app, "POST", "/mutate", messages)[2] == call(app, "POST", "/mutate", whole(data))[2]


def test_not_json_and_not_a_review_are_400_saying_why() -> None:
    app, _ = build()
    status, _, body, _ = call(app, "POST", "/mutate", whole(b"{nope"))
    assert "not valid JSON" in assert_status(status, body, 400)
    status, _, body, _ = call(app, "POST", "/mutate", whole(b'{"kind": "Pod"}'))
    assert_status(status, body, 400)


def test_a_client_gone_mid_body_is_counted_and_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, metrics = build()
    part = {"type": "http.request", "body": body_of()[:100], "more_body": True}
    with caplog.at_level(logging.INFO):
        status, _, _, _ = call(app, "POST", "/mutate", [part, {"type": "http.disconnect"}])
    assert status == 400  # goes nowhere: the server drops an answer to a gone client
    assert metrics.registry.get_sample_value("pullsecret_injector_client_disconnects_total") == 1
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_an_injection_is_counted_timed_and_logged_with_its_reasons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, metrics = build()
    with caplog.at_level(logging.INFO):
        call(app, "POST", "/mutate", whole(body_of()))
    get = metrics.registry.get_sample_value
    assert get("pullsecret_injector_admission_requests_total", {"outcome": "patched"}) == 1
    assert (get("pullsecret_injector_injected_secrets_total") or 0) >= 1
    assert get("pullsecret_injector_admission_duration_seconds_count") == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "injected imagePullSecrets"]
    assert record.name == "webhook.serve.app"
    assert record.injected and record.images and record.uid  # type: ignore[attr-defined]


def _boom(*_: Any) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("broken", "status", "logged"),
    [
        ("handle", 500, "admission handler failed"),  # before the answer: a JSON 500
        ("_log_answer", 200, "accounting for an admission failed"),  # after: it stands
    ],
)
def test_an_unexpected_error_is_logged_and_a_json_500_only_before_the_answer(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
    status: int,
    logged: str,
) -> None:
    app, metrics = build()
    monkeypatch.setattr(mutate, broken, _boom)
    got, _, body, _ = call(app, "POST", "/mutate", whole(body_of()))
    if status == 500:
        assert_status(got, body, 500)
    else:
        assert got == 200 and orjson.loads(body)["response"]["allowed"] is True
    assert any(r.getMessage() == logged for r in caplog.records)
    if status == 500:  # counted where the FailingOpen alert looks, and timed
        get = metrics.registry.get_sample_value
        assert get("pullsecret_injector_admission_requests_total", {"outcome": "error"}) == 1
        assert get("pullsecret_injector_admission_duration_seconds_count", {}) == 1


def test_bad_requests_are_counted_and_timed() -> None:
    app, metrics = build()
    status, _, body, _ = call(app, "POST", "/mutate", whole(b"{not json"))
    assert_status(status, body, 400)
    get = metrics.registry.get_sample_value
    assert get("pullsecret_injector_admission_requests_total", {"outcome": "bad_request"}) == 1
    assert get("pullsecret_injector_admission_duration_seconds_count", {}) == 1


def test_the_warnings_a_decision_gives_are_counted() -> None:
    app, metrics = build()
    doc = review(CAPTURED)
    doc["request"]["object"]["spec"]["containers"][0]["image"] = "Not A Valid Image"
    doc["request"]["object"]["spec"]["imagePullSecrets"] = [{"name": "nowhere"}]
    status, _, body, _ = call(app, "POST", "/mutate", whole(json.dumps(doc).encode()))
    warnings = orjson.loads(body)["response"]["warnings"]
    assert status == 200 and len(warnings) >= 2
    total = metrics.registry.get_sample_value("pullsecret_injector_admission_warnings_total", {})
    assert total == len(warnings)


def test_the_log_line_and_metrics_come_after_the_answer_is_sent(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, metrics = build()
    events: list[str] = []
    original = mutate._log_answer

    def logged(*args: Any) -> None:
        events.append("log")
        original(*args)

    original_send = mutate.send_json

    async def sent(*args: Any) -> None:
        await original_send(*args)
        events.append("sent")

    monkeypatch.setattr(mutate, "_log_answer", logged)
    monkeypatch.setattr(mutate, "send_json", sent)
    with caplog.at_level(logging.INFO):
        status, _, body, _ = call(app, "POST", "/mutate", whole(body_of()))
    assert status == 200 and orjson.loads(body)["response"]["patch"]
    assert events == ["sent", "log"]
    get = metrics.registry.get_sample_value
    assert get("pullsecret_injector_admission_requests_total", {"outcome": "patched"}) == 1


def post_large(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Callable[[], Any]], Callable[[], Any]]
) -> None:
    """POST a review the handler takes as large; each offloaded call runs as `wrap(fn)`."""
    app, _ = build(large_review_bytes=1024)
    original = app.mutate.offload.run

    async def run(fn: Callable[[], Any]) -> Any:
        return await original(wrap(fn))

    monkeypatch.setattr(app.mutate.offload, "run", run)
    try:
        status, _, body, _ = call(app, "POST", "/mutate", whole(body_of()))
    finally:
        app.mutate.offload.close()
    assert status == 200 and orjson.loads(body)["response"]["patch"]


def test_a_large_review_is_decided_on_the_offload_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Callable[[], Any]] = []

    def record(fn: Callable[[], Any]) -> Callable[[], Any]:
        ran.append(fn)
        return fn

    post_large(monkeypatch, record)
    assert len(ran) == 3  # decoded, decided, then the memory given back: all off the loop


def test_a_large_review_is_freed_before_its_memory_is_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the release runs on the pool, neither the parsed request nor its answer is alive
    any more: what it gives back includes them (the loop's step kept the answer's future)."""
    alive: list[int] = []

    def count_alive() -> None:
        alive.append(sum(isinstance(o, (Answer, AdmissionRequest)) for o in gc.get_objects()))

    post_large(monkeypatch, lambda fn: count_alive if fn is mutate._nothing else fn)
    assert alive == [0]


def test_a_flood_of_bad_requests_is_counted_whole_and_logged_sampled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any client can send malformed requests at will: each is answered and counted, but
    their log lines are sampled (10 a second), not one a request."""
    app, metrics = build()
    with caplog.at_level(logging.WARNING):
        for _ in range(200):
            status, _, body, _ = call(app, "POST", "/mutate", whole(b"{not json"))
            assert_status(status, body, 400)
    get = metrics.registry.get_sample_value
    assert get("pullsecret_injector_admission_requests_total", {"outcome": "bad_request"}) == 200
    lines = [r for r in caplog.records if r.getMessage() == "bad request"]
    assert 10 <= len(lines) <= 40  # 10 a second: the 200 take well under 4 s here
