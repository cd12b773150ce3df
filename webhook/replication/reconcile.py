"""One reconcile pass of the replication controller: plan a batch of work, carry it out.

The :class:`Reconciler` belongs to the controller loop (``replication/controller.py``),
which hands it one :class:`Work` at a time, made of the work queue's keys. A pass reads
the sources it needs (each at most once, data dropped with the pass), asks the pure
planner (``core/planner.py``) what to do, runs the actions on the writers' pool under the
token bucket, tells the problems (``events.py``) and feeds the queue back: failed
namespaces after their backoff, a failed source read as a full reconcile after its own.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from webhook.cluster.apiclient import StoppedError, describe
from webhook.cluster.leader import LeaseTimings
from webhook.cluster.workqueue import TokenBucket, WorkQueue
from webhook.config import Settings
from webhook.core.planner import Action, ActionKind, SourceRef, find_sources, plan
from webhook.replication.copies import Parts, Request, RetryError
from webhook.replication.events import ProblemReporter

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ReplicationOptions:
    """Tuning of the controller; the defaults suit clusters up to thousands of namespaces."""

    # Writes per second and burst. A rotation of a source serving 1,000 namespaces takes
    # 1000/qps seconds; 100/s is what kube-controller-manager's busiest controllers are
    # allowed by default API priority and fairness, well within a control plane's capacity.
    qps: float = 100.0
    burst: int = 200
    workers: int = 8  # concurrent writes (each waits for its round trip)
    resync_seconds: float = 300.0  # full reconcile: re-read every source, re-plan everything
    admission_timeout: float = 1.0  # ensure_copies, within the webhook's 3 s timeoutSeconds
    request_timeout: float = 10.0  # read timeout of one controller request
    retry_base_seconds: float = 0.5
    retry_cap_seconds: float = 60.0
    leader_election: bool = True
    lease_name: str = "pullsecret-injector"
    timings: LeaseTimings = field(default_factory=LeaseTimings)

    @classmethod
    def of(cls, settings: Settings) -> ReplicationOptions:
        """The options `serve` runs with: every one of them is a Settings field."""
        return cls(
            qps=settings.replication_qps,
            burst=settings.replication_burst,
            workers=settings.replication_workers,
            resync_seconds=settings.replication_resync_seconds,
            admission_timeout=settings.replication_admission_timeout,
            request_timeout=settings.replication_request_timeout,
            timings=LeaseTimings.of(settings),
        )

    def __post_init__(self) -> None:
        if self.qps <= 0 or self.burst < 1 or self.workers < 1:
            raise ValueError("qps must be positive, burst and workers at least 1")
        if self.resync_seconds <= 0 or self.admission_timeout <= 0:
            raise ValueError("resync_seconds and admission_timeout must be positive")


class KeyKind(enum.Enum):
    EVERYTHING = "everything"  # a full reconcile: re-read every source, re-plan everything
    SOURCE = "source"  # one source changed: re-read it, re-plan everything
    NAMESPACE = "namespace"  # one namespace changed: re-plan it


@dataclass(frozen=True, slots=True)
class Key:
    """An item of the controller's work queue."""

    kind: KeyKind
    namespace: str = ""
    name: str = ""


EVERYTHING = Key(KeyKind.EVERYTHING)


def namespace_key(name: str) -> Key:
    return Key(KeyKind.NAMESPACE, name)


@dataclass
class Work:
    """What one pass must do: a batch of queue keys, read together."""

    full: bool = False
    namespaces: set[str] = field(default_factory=set)
    reread: set[SourceRef] = field(default_factory=set)  # sources whose data may have changed

    @classmethod
    def of(cls, keys: Iterable[Key]) -> Work:
        work = cls()
        for key in keys:
            if key.kind is KeyKind.EVERYTHING:
                work.full = True
            elif key.kind is KeyKind.SOURCE:
                work.reread.add(SourceRef(key.namespace, key.name))
            else:
                work.namespaces.add(key.namespace)
        return work


@dataclass
class _Pass:
    """One pass: the sources' objects read for it (data dropped with the pass)."""

    stop: threading.Event
    executor: ThreadPoolExecutor
    objects: dict[SourceRef, Future[dict[str, Any] | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: set[str] = field(default_factory=set)  # namespaces to retry
    clashes: dict[SourceRef, set[str]] = field(default_factory=dict)


class Reconciler:
    """Runs passes for the controller loop; shared state lives in the parts it is given."""

    def __init__(
        self,
        parts: Parts,
        options: ReplicationOptions,
        *,
        queue: WorkQueue[Key],
        reporter: ProblemReporter,
    ) -> None:
        self._parts = parts
        self._api = parts.api
        self._store = parts.store
        self._metrics = parts.metrics
        self.config = parts.config
        self.options = options
        self._queue = queue
        self._reporter = reporter
        self._limiter = TokenBucket(options.qps, options.burst)
        self.passes = 0  # completed passes (the reconcile histogram counts them too)

    def run(self, work: Work, stop: threading.Event, executor: ThreadPoolExecutor) -> None:
        """One pass: plan `work` and carry it out on `executor` (raises StoppedError)."""
        started = time.monotonic()
        run = _Pass(stop, executor)
        in_source_namespaces = [
            s for ns in self.config.source_namespaces for s in self._store.secrets_in(ns).values()
        ]
        refs = {s.ref for s in find_sources(in_source_namespaces, self.config, {})}
        known = self._parts.reader.keep_only(refs)
        source_errors = False
        for ref in sorted(refs):
            if work.full or ref in work.reread or ref not in known:
                try:
                    self._source_object(run, ref)  # reads it and records its hash
                except StoppedError:
                    raise
                except Exception as exc:
                    source_errors = True
                    log.warning(
                        "reading a source failed",
                        extra={"source": str(ref), "error": describe(exc)},
                    )
        sources = find_sources(in_source_namespaces, self.config, self._parts.reader.hashes())
        namespaces = self._store.namespaces()
        scope = None if work.full or work.reread else work.namespaces
        targets = set(namespaces) if scope is None else scope & namespaces.keys()
        existing = {
            ns: self._parts.expectations.overlay(ns, self._store.secrets_in(ns)) for ns in targets
        }
        result = plan(sources, namespaces, existing, self.config, only=scope)
        actions = [
            a
            for a in result.actions
            if not (
                a.kind is ActionKind.CREATE and self._parts.clashes.blocked(a.namespace, a.name)
            )
        ]
        if actions:
            log.info(
                "replication plan",
                extra={
                    "scope": "full" if scope is None else "partial",
                    "namespace_count": len(targets),
                    "actions": {
                        k.value: n for k in ActionKind if (n := sum(a.kind is k for a in actions))
                    },
                },
            )
        self._apply(run, actions)
        self._reporter.report(self._request(run), result.problems, run.clashes, full=scope is None)
        for ns in targets - run.failed:
            self._queue.forget(namespace_key(ns))
        for ns in run.failed:
            self._queue.add_rate_limited(namespace_key(ns))
        if source_errors:
            self._queue.add_rate_limited(EVERYTHING)
        elif work.full:  # every source was read: what a full pass retries has succeeded.
            # Not after a partial pass: it reads only the sources it needs, so its success
            # says nothing of a read that keeps failing (client-go's workqueue forgets an
            # item only when that item was processed).
            self._queue.forget(EVERYTHING)
        self._parts.expectations.expire()
        if scope is None:
            self._metrics.replication_sources.set(len(sources))
            self._metrics.replication_copies.set(result.desired)
        self._metrics.replication_reconcile.labels("full" if scope is None else "partial").observe(
            time.monotonic() - started
        )
        self.passes += 1

    # ---- requests ------------------------------------------------------------------------
    def _request(self, run: _Pass) -> Request:
        """The controller's requests: rate limited, abandoned when the pass stops."""
        timeout = (_CONNECT_TIMEOUT, self.options.request_timeout)

        def request(
            method: str, path: str, *, body: Any = None, content_type: str = "application/json"
        ) -> dict[str, Any]:
            if not self._limiter.acquire(run.stop):
                raise StoppedError
            return self._api.request(
                method, path, body=body, content_type=content_type, timeout=timeout
            )

        return request

    def _source_object(self, run: _Pass, ref: SourceRef) -> dict[str, Any] | None:
        """The source's object for this pass, read at most once (raises on failure)."""
        with run.lock:
            future = run.objects.get(ref)
            mine = future is None
            if future is None:
                future = Future()
                run.objects[ref] = future
        if mine:
            try:
                if not self._limiter.acquire(run.stop):
                    raise StoppedError
                timeout = (_CONNECT_TIMEOUT, self.options.request_timeout)
                future.set_result(self._parts.reader.read(ref, timeout))
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    # ---- applying actions ------------------------------------------------------------------
    def _apply(self, run: _Pass, actions: Iterable[Action]) -> None:
        """Run the actions on the worker threads, a bounded number queued at a time."""
        executor = run.executor
        window = self.options.workers * 16  # bounds memory: 20,000 actions are not queued
        pending: set[Future[None]] = set()
        try:
            for action in actions:
                if run.stop.is_set():
                    break
                if len(pending) >= window:
                    _, pending = wait(pending, return_when=FIRST_COMPLETED)
                pending.add(executor.submit(self._apply_one, run, action))
        except RuntimeError as exc:  # the executor was shut down: we lost the Lease
            raise StoppedError from exc
        finally:
            wait(pending)
        if run.stop.is_set():
            raise StoppedError

    def _apply_one(self, run: _Pass, action: Action) -> None:
        if run.stop.is_set():
            return
        fields = {"namespace": action.namespace, "secret": action.name}
        result = "error"
        try:
            result = self._write(run, action)
        except StoppedError:
            return
        except RetryError as exc:
            result = "conflict"
            run.failed.add(action.namespace)
            log.info(
                "copy write to retry",
                extra={**fields, "action": action.kind.value, "why": str(exc)},
            )
        except Exception as exc:  # an API error or any other: counted, retried
            run.failed.add(action.namespace)
            log.warning(
                "copy write failed",
                extra={**fields, "action": action.kind.value, "error": describe(exc)},
            )
        self._metrics.replication_actions.labels(action.kind.value, result).inc()

    def _write(self, run: _Pass, action: Action) -> str:
        ns, name = action.namespace, action.name
        request = self._request(run)
        fields = {"namespace": ns, "secret": name, "reason": action.reason}
        if action.kind is ActionKind.DELETE:
            result = self._parts.writer.delete(request, ns, name)
            log.info("copy deleted", extra={**fields, "source": str(action.current_source)})
            return result
        assert action.source is not None
        source = self._source_object(run, action.source)
        if source is None:
            raise RetryError(f"source {action.source} is gone")
        fields["source"] = str(action.source)
        if action.kind is ActionKind.UPDATE:
            assert action.current_source is not None
            result = self._parts.writer.update(request, ns, name, source, action.current_source)
            log.info("copy updated", extra=fields)
            return result
        if action.kind is ActionKind.RECREATE:
            self._parts.writer.delete(request, ns, name)
        result = self._parts.writer.create(request, ns, name, source, action.source)
        if result == "clash":
            with run.lock:
                run.clashes.setdefault(action.source, set()).add(ns)
        if action.kind is ActionKind.RECREATE:
            log.info("copy recreated", extra=fields)
        elif result == "ok":
            log.info("copy created", extra=fields)
        return result
