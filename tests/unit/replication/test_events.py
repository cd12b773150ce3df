"""replication/events.py: each problem told once, grouped per source, as an Event."""

from __future__ import annotations

from typing import Any

from webhook.core.planner import Problem, ProblemKind, SourceRef, clash_problem
from webhook.metrics import Metrics
from webhook.replication.events import ProblemReporter, event_body

REF = SourceRef("psi-system", "harbor")


class Recorder:
    """A Request that records what would be posted."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, Any]] = []

    def __call__(
        self, method: str, path: str, *, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        self.posted.append((method, path, body))
        return {}


def _reporter() -> tuple[ProblemReporter, Metrics]:
    metrics = Metrics()
    return ProblemReporter(metrics, "replica-1", lambda ref: "uid-1"), metrics


def test_clashes_of_one_source_are_one_event_naming_ten_namespaces_and_the_rest_counted() -> None:
    reporter, _ = _reporter()
    post = Recorder()
    clashes = {REF: {f"team-{i:02}" for i in range(12)}}
    reporter.report(post, [], clashes, full=False)
    [(method, path, body)] = post.posted
    assert (method, path) == ("POST", "/api/v1/namespaces/psi-system/events")
    assert body["reason"] == "CopyBlocked"
    assert body["involvedObject"] == {
        "kind": "Secret",
        "apiVersion": "v1",
        "namespace": "psi-system",
        "name": "harbor",
        "uid": "uid-1",
    }
    assert "12 namespace(s)" in body["message"] and body["message"].endswith("and 2 more")
    assert "team-09" in body["message"] and "team-10" not in body["message"]


def test_a_problem_is_told_once_until_a_full_pass_finds_it_gone() -> None:
    reporter, metrics = _reporter()
    post = Recorder()
    problem = clash_problem(REF, "team-a")
    reporter.report(post, [problem], {}, full=True)
    reporter.report(post, [problem], {}, full=False)
    assert len(post.posted) == 1
    gauge = "pullsecret_injector_replication_problems"
    assert metrics.registry.get_sample_value(gauge, {"kind": "clash"}) == 1
    reporter.report(post, [], {}, full=True)  # gone
    assert metrics.registry.get_sample_value(gauge, {"kind": "clash"}) == 0
    reporter.report(post, [problem], {}, full=False)  # back: told again
    assert len(post.posted) == 2


def test_a_failed_post_is_forgotten_not_raised() -> None:
    reporter, _ = _reporter()

    def failing(method: str, path: str, **_: Any) -> dict[str, Any]:
        raise ConnectionError("refused")

    problem = Problem(ProblemKind.INVALID_SELECTOR, REF, None, "invalid selector 'a in x'")
    reporter.report(failing, [problem], {}, full=False)


def test_an_event_message_is_bounded_and_carries_no_data() -> None:
    body = event_body(
        REF, ProblemKind.UNUSABLE_SOURCE, "x" * 5000, uid=None, identity="r" * 300, now=0.0
    )
    assert len(body["message"]) == 1024
    assert len(body["reportingInstance"]) == 128
    assert "uid" not in body["involvedObject"]
    assert body["firstTimestamp"] == "1970-01-01T00:00:00Z"
