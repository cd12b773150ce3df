"""Replication problems told to people: a log line, a metric and an Event on the source.

Each problem is told once (until a full reconcile finds it gone, so one that comes back is
told again); problems of one kind and source are told together, in one Event naming the
namespaces. Events are core/v1 Events built here and posted through the controller's own
rate-limited requests; a failed post is logged and forgotten. No Event carries data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from webhook.cluster.apiclient import StoppedError, describe, event_object, events_path
from webhook.core.planner import Problem, ProblemKind, SourceRef, clash_problem
from webhook.metrics import Metrics
from webhook.replication.copies import Request

log = logging.getLogger(__name__)

_EVENT_NAMESPACE_LIST = 10  # namespaces named in one Event
_LOG_NAMESPACE_LIST = 50  # namespaces named in one log line

REASONS: dict[ProblemKind, str] = {
    ProblemKind.INVALID_SELECTOR: "InvalidNamespaceSelector",
    ProblemKind.UNUSABLE_SOURCE: "UnusableRegistrySecret",
    ProblemKind.CLASH: "CopyBlocked",
    ProblemKind.NAME_CONFLICT: "CopyNameConflict",
}


def event_body(
    ref: SourceRef, kind: ProblemKind, message: str, *, uid: str | None, identity: str, now: float
) -> dict[str, Any]:
    """A Warning Event on the source secret `ref`."""
    involved: dict[str, Any] = {
        "kind": "Secret",
        "apiVersion": "v1",
        "namespace": ref.namespace,
        "name": ref.name,
    }
    if uid is not None:
        involved["uid"] = uid
    return event_object(
        involved,
        reason=REASONS[kind],
        message=message,
        event_type="Warning",
        action="Replicate",
        identity=identity,
        now=now,
    )


def _message(kind: ProblemKind, ref: SourceRef, told: list[Problem]) -> tuple[str, list[str]]:
    namespaces = sorted({p.namespace for p in told if p.namespace})
    shown = ", ".join(namespaces[:_EVENT_NAMESPACE_LIST])
    more = len(namespaces) - _EVENT_NAMESPACE_LIST
    if kind is ProblemKind.CLASH:
        message = (
            f"not copied into {len(namespaces)} namespace(s) holding a secret named "
            f"{ref.name!r} that pullsecret-injector did not create (left untouched): {shown}"
        )
    elif kind is ProblemKind.NAME_CONFLICT:
        why = told[0].message.split(": ", 1)[-1]
        message = f"not copied into {len(namespaces)} namespace(s) ({shown}): {why}"
    else:
        message = told[0].message
    if more > 0 and kind in (ProblemKind.CLASH, ProblemKind.NAME_CONFLICT):
        message += f" and {more} more"
    return message, namespaces


class ProblemReporter:
    """Tells each new problem once; a full pass also sets the problem gauges."""

    def __init__(
        self, metrics: Metrics, identity: str, uid: Callable[[SourceRef], str | None]
    ) -> None:
        self._metrics = metrics
        self._identity = identity
        self._uid = uid
        self._reported: set[tuple[ProblemKind, SourceRef, str | None]] = set()

    def reset(self) -> None:
        """A new leader tells everything again."""
        self._reported.clear()

    def report(
        self,
        request: Request,
        problems: Iterable[Problem],
        clashes: dict[SourceRef, set[str]],
        *,
        full: bool,
    ) -> None:
        found: set[Problem] = set(problems)
        found.update(clash_problem(ref, ns) for ref, blocked in clashes.items() for ns in blocked)
        items = {(p.kind, p.source, p.namespace) for p in found}
        if full:
            self._reported &= items
            for kind in ProblemKind:
                count = sum(1 for p in found if p.kind is kind)
                self._metrics.replication_problems.labels(kind.value).set(count)
        fresh: dict[tuple[ProblemKind, SourceRef], list[Problem]] = {}
        for problem in sorted(found):
            item = (problem.kind, problem.source, problem.namespace)
            if item in self._reported:
                continue
            self._reported.add(item)
            fresh.setdefault((problem.kind, problem.source), []).append(problem)
        for (kind, ref), told in fresh.items():
            message, namespaces = _message(kind, ref, told)
            log.warning(
                "replication problem",
                extra={
                    "kind": kind.value,
                    "source": str(ref),
                    "namespaces": namespaces[:_LOG_NAMESPACE_LIST],
                    "problem": message,
                },
            )
            self._post(request, ref, kind, message)

    def _post(self, request: Request, ref: SourceRef, kind: ProblemKind, message: str) -> None:
        body = event_body(
            ref, kind, message, uid=self._uid(ref), identity=self._identity, now=time.time()
        )
        try:
            request("POST", events_path(ref.namespace), body=body)
        except StoppedError:
            raise
        except Exception as exc:
            log.info(
                "could not record an Event", extra={"source": str(ref), "error": describe(exc)}
            )
