"""The replication controller: carries out replication plans against the API server.

``Replicator`` is built by every serving replica:

- ``start()`` campaigns for the Lease (webhook/leader.py). The holder runs the controller
  loop; the others only serve admission. Losing the Lease stops the loop cleanly: no new
  write starts, in-flight writes finish (bounded by their timeouts), queued work is
  dropped, and the next leader starts with a full reconcile.
- The loop is driven by the store's changes (``Store`` listeners: the same
  list/watch streams that feed admission), never by polling: a namespace created or
  relabelled re-plans that namespace; any change in a source namespace, or a re-list,
  re-plans everything; a periodic full reconcile (``resync_seconds``) re-reads every source
  and converges whatever a missed event or a restart left behind.
- Writes are rate limited (token bucket, ``qps``/``burst``) and run on a few threads.
  Failed namespaces are retried with capped exponential backoff.
- ``ensure_copies(namespace, dry_run)`` serves the admission path on every replica: the
  copies a namespace should hold but does not yet are created before the pod is answered
  (bounded by ``admission_timeout``), and ``pending_copies`` lets the decision see copies
  that are not in the store yet (a dryRun, a creation still in flight), so the pod names
  them either way.

The store holds no credentials, so a source's data is read from the API when copies are
written (once per source per pass), used for the writes and dropped; only its sha256 is
kept between passes (to detect rotation against the copies' hash annotation). No log line,
metric or Event carries data or hashes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from webhook.config import Settings
from webhook.credentials import REGISTRY_SECRET_TYPES
from webhook.leader import LeaderElector, LeaseTimings, RawApi, default_identity, micro_time
from webhook.metrics import Metrics
from webhook.replication import (
    SOURCE_ANNOTATION,
    Action,
    ActionKind,
    Config,
    Desired,
    Problem,
    ProblemKind,
    Source,
    SourceRef,
    copy_object,
    copy_update_patch,
    data_hash,
    desired_in,
    find_sources,
    is_our_object,
    plan,
)
from webhook.store import Change, ChangeKind, RegistrySecret, Store, secret_from_object

log = logging.getLogger(__name__)

_SECRETS, _NAMESPACES = "secrets", "namespaces"
_EMPTY: Mapping[str, RegistrySecret] = MappingProxyType({})
# A write is assumed to reach the store through the watch within this time; until then the
# planner counts it as done (no duplicate create), after it the store's view is trusted.
_EXPECTATION_SECONDS = 30.0
# Labels read live for a namespace the store has not seen yet serve pending_copies until the
# watch delivers the namespace.
_RECENT_LABELS_SECONDS = 30.0
_STOP_JOIN_SECONDS = 15.0
_EVENT_NAMESPACE_LIST = 10  # namespaces named in one clash Event
_SOURCES_RETRY = ""  # the retry key of "reading a source failed" (no namespace is named "")


def _describe(exc: BaseException) -> str:
    """An error for a log line: status and reason of an API error, never a response body."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return type(exc).__name__


# ---- options -------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        if self.qps <= 0 or self.burst < 1 or self.workers < 1:
            raise ValueError("qps must be positive, burst and workers at least 1")
        if self.resync_seconds <= 0 or self.admission_timeout <= 0:
            raise ValueError("resync_seconds and admission_timeout must be positive")


class TokenBucket:
    """client-go's flowcontrol token bucket: `qps` tokens a second, at most `burst` saved."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Take a token, waiting as needed; False when `stop` is set first."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
                self._last = now
                if self._tokens >= 1.0 - 1e-9:  # (float rounding must not leave us waiting)
                    self._tokens -= 1.0
                    return True
                delay = (1.0 - self._tokens) / self._qps
            if stop.wait(delay):
                return False


# ---- the controller ------------------------------------------------------------------------


class _StoppedError(Exception):
    """The controller is stopping: abandon the pass."""


class _RetryError(Exception):
    """The namespace's actions failed in a way worth retrying later."""


@dataclass
class _Work:
    """What the next pass must do (accumulated by store listeners)."""

    full: bool = False
    sources_changed: bool = False
    namespaces: set[str] = field(default_factory=set)
    reread: set[SourceRef] = field(default_factory=set)  # sources whose data may have changed

    def any(self) -> bool:
        return self.full or self.sources_changed or bool(self.namespaces) or bool(self.reread)


@dataclass
class _Pass:
    """One pass: the sources' objects read for it (data dropped with the pass)."""

    stop: threading.Event
    objects: dict[SourceRef, Future[dict[str, Any] | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: set[str] = field(default_factory=set)  # namespaces to retry
    succeeded: set[str] = field(default_factory=set)
    clashes: dict[SourceRef, set[str]] = field(default_factory=dict)


class Replicator:
    """Project and cluster registries: copies kept by the leader, created at admission by all.

    ``Replicator(api_client, store, metrics, settings)``; ``start()``/``stop()``. It listens
    to the store's changes (``Store.add_listener``); settings give ``release_namespace`` (also the
    Lease's namespace) and ``source_namespaces`` (default: the release namespace).
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        store: Store,
        metrics: Metrics,
        settings: Settings,
        options: ReplicationOptions | None = None,
        *,
        identity: str | None = None,
    ) -> None:
        self._api = RawApi(api_client)
        self._api_client = api_client
        self._store = store
        self._metrics = metrics
        self.options = options or ReplicationOptions()
        self.config = Config.build(settings.release_namespace, settings.source_namespaces)
        self.identity = identity or default_identity()
        self._limiter = TokenBucket(self.options.qps, self.options.burst)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._work = _Work()
        self._retry: dict[str, tuple[float, int]] = {}  # namespace -> (due, failures)
        self._expect: dict[tuple[str, str], tuple[float, RegistrySecret | None]] = {}
        self._clashes: set[tuple[str, str]] = set()  # copies blocked by a secret we cannot see
        self._hashes: dict[SourceRef, str] = {}  # never the data: its sha256
        self._uids: dict[SourceRef, str] = {}  # for Events on the source
        self._reported: set[tuple[ProblemKind, SourceRef, str | None]] = set()  # told
        self._sources_gen = 0
        self._sources_cache: tuple[int, list[Source]] | None = None
        self._desired_cache: dict[str, tuple[int, Mapping[str, str], Desired]] = {}
        self._recent_labels: dict[str, tuple[float, Mapping[str, str]]] = {}

        self._running: threading.Event | None = None  # set while the loop runs (leader)
        self._loop_stop = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._admission_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="copy-admit")
        self._admitting: dict[str, Future[list[str]]] = {}
        self._elector: LeaderElector | None = None
        self._started = False
        self.passes = 0  # completed passes (tests and the benchmark wait on it)
        # (on_started, on_stopped) of controllers under the same Lease (webhook/recovery.py)
        self._leader_hooks: list[tuple[Callable[[], None], Callable[[], None]]] = []

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Listen to the store; campaign for the Lease (or lead at once without election)."""
        if self._started:
            raise RuntimeError("Replicator.start() called twice")
        self._started = True
        self._store.add_listener(self._on_change)
        if self.options.leader_election:
            self._elector = LeaderElector(
                self._api_client,
                self.config.release_namespace,
                self.options.lease_name,
                identity=self.identity,
                timings=self.options.timings,
                on_started=self._start_loop,
                on_stopped=self._stop_loop,
                on_change=lambda leading: self._metrics.replication_leader.set(int(leading)),
            )
            self._elector.start()
        else:
            self._metrics.replication_leader.set(1)
            self._start_loop()
        log.info(
            "replication started",
            extra={
                "source_namespaces": list(self.config.source_namespaces),
                "leader_election": self.options.leader_election,
                "identity": self.identity,
            },
        )

    def stop(self) -> None:
        """Stop the loop (and release the Lease); admission calls fail fast afterwards."""
        if self._elector is not None:
            self._elector.stop()
        self._stop_loop()
        self._store.remove_listener(self._on_change)
        self._admission_pool.shutdown(wait=False, cancel_futures=True)
        self._metrics.replication_leader.set(0)

    @property
    def is_leader(self) -> bool:
        return self._running is not None and self._running.is_set()

    def _start_loop(self) -> None:
        with self._lock:
            if self._running is not None:
                return
            running = threading.Event()
            running.set()
            self._running = running
            self._work = _Work(full=True)
            self._retry.clear()
            self._reported.clear()
            self._executor = ThreadPoolExecutor(
                max_workers=self.options.workers, thread_name_prefix="replicate"
            )
            stop = threading.Event()
            self._loop_stop = stop
            self._loop_thread = threading.Thread(
                target=self._loop, args=(stop,), name="replication", daemon=True
            )
            self._loop_thread.start()
        log.info("replication controller running")
        self._run_leader_hooks(started=True)

    def _stop_loop(self) -> None:
        with self._lock:
            running, self._running = self._running, None
            if running is None:
                return
            running.clear()
            self._loop_stop.set()
            self._wake.notify_all()
            thread, executor = self._loop_thread, self._executor
            self._loop_thread, self._executor = None, None
        if thread is not None:
            thread.join(_STOP_JOIN_SECONDS)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._work = _Work()
            self._retry.clear()
            self._expect.clear()
        log.info("replication controller stopped")
        self._run_leader_hooks(started=False)

    # ---- store listener (watch threads: quick) ---------------------------------------------
    def _on_change(self, change: Change) -> None:
        sources = self.config.source_namespaces
        with self._lock:
            if change.kind is ChangeKind.SECRET:
                self._expect.pop((change.namespace, change.name), None)
                if change.namespace in sources:
                    self._sources_gen += 1
                    self._work.sources_changed = True
                    self._work.reread.add(SourceRef(change.namespace, change.name))
                else:
                    self._work.namespaces.add(change.namespace)
            elif change.kind is ChangeKind.NAMESPACE:
                self._work.namespaces.add(change.namespace)
                self._desired_cache.pop(change.namespace, None)
            elif change.kind is ChangeKind.NAMESPACE_SECRETS:
                if change.namespace in sources:
                    self._sources_gen += 1
                    self._work.full = True
                else:
                    self._work.namespaces.add(change.namespace)
            else:  # a re-list: events may have been missed, data may have changed unseen
                self._sources_gen += 1
                self._work.full = True
            if self._running is None:
                self._work = _Work()  # a follower keeps no queue; a new leader starts full
                return
            self._wake.notify_all()

    # ---- the loop --------------------------------------------------------------------------
    def _loop(self, stop: threading.Event) -> None:
        next_full = time.monotonic() + self.options.resync_seconds
        while not stop.is_set():
            with self._lock:
                while not stop.is_set():
                    now = time.monotonic()
                    due = [ns for ns, (at, _) in self._retry.items() if at <= now]
                    if self._work.any() or due or now >= next_full:
                        break
                    deadlines = [next_full, *(at for at, _ in self._retry.values())]
                    self._wake.wait(max(0.0, min(deadlines) - now))
                if stop.is_set():
                    break
            if not self._store.is_synced(_SECRETS, _NAMESPACES):
                # Never act on a partial picture: a source not listed yet would look deleted.
                stop.wait(0.05)
                continue
            with self._lock:
                now = time.monotonic()
                work, self._work = self._work, _Work()
                for ns in [ns for ns, (at, _) in self._retry.items() if at <= now]:
                    if ns == _SOURCES_RETRY:
                        work.full = True
                    else:
                        work.namespaces.add(ns)
                if now >= next_full:
                    work.full = True
                if work.full:
                    next_full = now + self.options.resync_seconds
                    self._clashes.clear()
            try:
                self._pass(work, stop)
            except _StoppedError:
                break
            except Exception:
                log.exception("replication pass failed: retrying with a full reconcile")
                with self._lock:
                    self._work.full = True
                if stop.wait(self.options.retry_base_seconds):
                    break

    def _pass(self, work: _Work, stop: threading.Event) -> None:
        started = time.monotonic()
        run = _Pass(stop)
        in_source_namespaces = [
            s for ns in self.config.source_namespaces for s in self._store.secrets_in(ns).values()
        ]
        candidates = find_sources(in_source_namespaces, self.config, {})
        refs = {s.ref for s in candidates}
        with self._lock:
            for ref in [r for r in self._hashes if r not in refs]:
                del self._hashes[ref]
            known = set(self._hashes)
        source_errors = False
        for ref in sorted(refs):
            if work.full or ref in work.reread or ref not in known:
                try:
                    self._source_object(run, ref)  # reads it and records its hash
                except _StoppedError:
                    raise
                except Exception as exc:
                    source_errors = True
                    log.warning(
                        "reading a source failed",
                        extra={"source": str(ref), "error": _describe(exc)},
                    )
        sources = find_sources(in_source_namespaces, self.config, self._hash_snapshot())
        everything = work.full or work.sources_changed or bool(work.reread)
        namespaces = self._store.namespaces()
        scope = None if everything else work.namespaces
        targets = set(namespaces) if scope is None else scope & namespaces.keys()
        existing = {ns: self._existing(ns) for ns in targets}
        result = plan(sources, namespaces, existing, self.config, only=scope)
        with self._lock:
            blocked = set(self._clashes)
        actions = [
            a
            for a in result.actions
            if not (a.kind is ActionKind.CREATE and (a.namespace, a.name) in blocked)
        ]
        if actions:
            log.info(
                "replication plan",
                extra={
                    "scope": "full" if scope is None else "partial",
                    "namespaces": len(targets),
                    "actions": {
                        k.value: n for k in ActionKind if (n := sum(a.kind is k for a in actions))
                    },
                },
            )
        self._apply(run, actions)
        self._report(run, result.problems, full=scope is None)
        with self._lock:
            now = time.monotonic()
            for ns in targets - run.failed:
                self._retry.pop(ns, None)
            if source_errors:
                run.failed.add(_SOURCES_RETRY)
            else:
                self._retry.pop(_SOURCES_RETRY, None)
            for ns in run.failed:
                _, failures = self._retry.get(ns, (0.0, 0))
                failures += 1
                delay = min(
                    self.options.retry_cap_seconds,
                    self.options.retry_base_seconds * 2.0 ** min(failures - 1, 20),
                )
                self._retry[ns] = (now + delay * random.uniform(0.5, 1.0), failures)  # noqa: S311
            self._expire_expectations(now)
        if scope is None:
            self._metrics.replication_sources.set(len(sources))
            self._metrics.replication_copies.set(result.desired)
        self._metrics.replication_reconcile.labels("full" if scope is None else "partial").observe(
            time.monotonic() - started
        )
        self.passes += 1

    def _hash_snapshot(self) -> dict[SourceRef, str]:
        with self._lock:
            return dict(self._hashes)

    def _existing(self, namespace: str) -> Mapping[str, RegistrySecret]:
        """The store's secrets of a namespace, with our writes it has not seen yet."""
        current = self._store.secrets_in(namespace)
        now = time.monotonic()
        with self._lock:
            if not self._expect:
                return current
            pending = [
                (name, secret)
                for (ns, name), (at, secret) in self._expect.items()
                if ns == namespace and at > now
            ]
        if not pending:
            return current
        merged = dict(current)
        for name, secret in pending:
            if secret is None:
                merged.pop(name, None)
            else:
                merged[name] = secret
        return merged

    def _expire_expectations(self, now: float) -> None:
        for key in [k for k, (at, _) in self._expect.items() if at <= now]:
            del self._expect[key]

    def _expect_write(self, namespace: str, name: str, obj: Mapping[str, Any] | None) -> None:
        """Before a write: until the watch reports that secret, plan as if it were done.

        Registered before the request, so the watch event of the write (which may arrive
        before the response) clears it; a failed write clears it at once.
        """
        secret = secret_from_object(obj) if obj is not None else None
        with self._lock:
            now = time.monotonic()
            if len(self._expect) > 50_000:
                self._expire_expectations(now)
            self._expect[(namespace, name)] = (now + _EXPECTATION_SECONDS, secret)

    def _forget_write(self, namespace: str, name: str) -> None:
        with self._lock:
            self._expect.pop((namespace, name), None)

    # ---- reading sources -----------------------------------------------------------------
    def _path(self, namespace: str, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{namespace}/secrets"
        return base if name is None else f"{base}/{name}"

    def _timeout(self) -> tuple[float, float]:
        return (5.0, self.options.request_timeout)

    def _read_source(self, ref: SourceRef, timeout: Any) -> dict[str, Any] | None:
        """The source as stored (with its data), or None when it is gone or not a registry."""
        try:
            obj = self._api.request("GET", self._path(ref.namespace, ref.name), timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if obj.get("type") not in REGISTRY_SECRET_TYPES:
            return None
        uid = (obj.get("metadata") or {}).get("uid")
        with self._lock:
            self._hashes[ref] = data_hash(str(obj.get("type")), obj.get("data"))
            if isinstance(uid, str):
                self._uids[ref] = uid
        return obj

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
                    raise _StoppedError
                future.set_result(self._read_source(ref, self._timeout()))
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    # ---- applying actions ------------------------------------------------------------------
    def _apply(self, run: _Pass, actions: Iterable[Action]) -> None:
        """Run the actions on the worker threads, a bounded number queued at a time."""
        executor = self._executor
        if executor is None:
            raise _StoppedError
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
            raise _StoppedError from exc
        finally:
            wait(pending)
        if run.stop.is_set():
            raise _StoppedError

    def _apply_one(self, run: _Pass, action: Action) -> None:
        if run.stop.is_set():
            return
        result = "error"
        try:
            result = self._write(run, action)
            run.succeeded.add(action.namespace)
        except _StoppedError:
            result = "stopped"
        except _RetryError as exc:
            result = "conflict"
            run.failed.add(action.namespace)
            log.info(
                "copy write to retry",
                extra={
                    "namespace": action.namespace,
                    "secret": action.name,
                    "action": action.kind.value,
                    "why": str(exc),
                },
            )
        except Exception as exc:  # an API error or any other: counted, retried next pass
            run.failed.add(action.namespace)
            log.warning(
                "copy write failed",
                extra={
                    "namespace": action.namespace,
                    "secret": action.name,
                    "action": action.kind.value,
                    "error": _describe(exc),  # status and reason, never a response body
                },
            )
        if result != "stopped":
            self._metrics.replication_actions.labels(action.kind.value, result).inc()

    def _request(self, run: _Pass, method: str, path: str, **kw: Any) -> dict[str, Any]:
        if not self._limiter.acquire(run.stop):
            raise _StoppedError
        return self._api.request(method, path, timeout=self._timeout(), **kw)

    def _write(self, run: _Pass, action: Action) -> str:
        ns, name = action.namespace, action.name
        fields = {"namespace": ns, "secret": name, "reason": action.reason}
        if action.kind is ActionKind.DELETE:
            result = self._delete_copy(run, ns, name)
            log.info("copy deleted", extra={**fields, "source": str(action.current_source)})
            return result
        assert action.source is not None
        source = self._source_object(run, action.source)
        if source is None:
            raise _RetryError(f"source {action.source} is gone")
        fields["source"] = str(action.source)
        if action.kind is ActionKind.RECREATE:
            self._delete_copy(run, ns, name)
            result = self._create_copy(run, ns, name, source, action.source)
            log.info("copy recreated", extra=fields)
            return result
        if action.kind is ActionKind.CREATE:
            result = self._create_copy(run, ns, name, source, action.source)
            if result == "ok":
                log.info("copy created", extra=fields)
            return result
        assert action.current_source is not None
        self._expect_write(ns, name, copy_object(source, ns))
        try:
            self._request(
                run,
                "PATCH",
                self._path(ns, name),
                body=copy_update_patch(source, action.current_source),
                content_type="application/json-patch+json",
            )
        except ApiException as exc:
            self._forget_write(ns, name)
            if exc.status in (404, 409, 422):  # gone, or no longer our copy: re-plan
                raise _RetryError(f"HTTP {exc.status} on update") from exc
            raise
        except BaseException:
            self._forget_write(ns, name)
            raise
        log.info("copy updated", extra=fields)
        return "ok"

    def _create_copy(
        self, run: _Pass, ns: str, name: str, source: Mapping[str, Any], ref: SourceRef
    ) -> str:
        body = copy_object(source, ns)
        self._expect_write(ns, name, body)
        try:
            self._request(run, "POST", self._path(ns), body=body)
        except BaseException as exc:
            self._forget_write(ns, name)
            if not isinstance(exc, ApiException):
                raise
            if exc.status in (403, 404):  # namespace terminating or gone: nothing to serve
                log.info(
                    "namespace gone or terminating", extra={"namespace": ns, "status": exc.status}
                )
                return "gone"
            if exc.status != 409:
                raise
            return self._after_conflict(run, ns, name, ref)
        return "ok"

    def _after_conflict(self, run: _Pass | None, ns: str, name: str, ref: SourceRef) -> str:
        """A secret of the copy's name exists: ours (made by another replica) or a clash."""
        try:
            if run is not None:
                current = self._request(run, "GET", self._path(ns, name))
            else:
                current = self._api.request(
                    "GET", self._path(ns, name), timeout=self.options.admission_timeout
                )
        except ApiException as exc:
            if exc.status == 404:
                raise _RetryError("deleted right after a conflict") from exc
            raise
        if is_our_object(current) is not None:
            return "exists"
        with self._lock:
            self._clashes.add((ns, name))
        if run is not None:
            run.clashes.setdefault(ref, set()).add(ns)
        log.warning(
            "copy not created: a secret of the same name that pullsecret-injector did not "
            "create exists (left untouched)",
            extra={"namespace": ns, "secret": name, "source": str(ref)},
        )
        return "clash"

    def _delete_copy(self, run: _Pass, ns: str, name: str) -> str:
        """Delete our copy: read it, check it is ours, delete with uid/rv preconditions."""
        try:
            current = self._request(run, "GET", self._path(ns, name))
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            raise
        ref = is_our_object(current)
        if ref is None or ref.namespace not in self.config.source_namespaces:
            raise _RetryError("no longer our copy")
        meta = current.get("metadata") or {}
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        self._expect_write(ns, name, None)
        try:
            self._request(run, "DELETE", self._path(ns, name), body=options)
        except BaseException as exc:
            self._forget_write(ns, name)
            if not isinstance(exc, ApiException):
                raise
            if exc.status == 404:
                return "gone"
            if exc.status == 409:
                raise _RetryError("changed before the delete") from exc
            raise
        return "ok"

    # ---- problems: log, metric, Event on the source ------------------------------------------
    def _report(self, run: _Pass, problems: Iterable[Problem], *, full: bool) -> None:
        """Tell each new problem once (log line + Event on the source); count them.

        Problems of one kind and source are told together (one Event naming the
        namespaces). A full pass forgets problems that are gone, so one that comes back is
        told again, and sets the problem gauges.
        """
        found: set[Problem] = set(problems)
        for ref, blocked in run.clashes.items():
            for ns in blocked:
                found.add(
                    Problem(
                        ProblemKind.CLASH,
                        ref,
                        ns,
                        f"not copied into {ns}: a secret named {ref.name!r} that "
                        "pullsecret-injector did not create is there (it is left untouched)",
                    )
                )
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
            namespaces = sorted({p.namespace for p in told if p.namespace})
            shown = ", ".join(namespaces[:_EVENT_NAMESPACE_LIST])
            more = len(namespaces) - _EVENT_NAMESPACE_LIST
            if kind is ProblemKind.CLASH:
                message = (
                    f"not copied into {len(namespaces)} namespace(s) holding a secret named "
                    f"{ref.name!r} that pullsecret-injector did not create (left untouched): "
                    f"{shown}"
                )
            elif kind is ProblemKind.NAME_CONFLICT:
                why = told[0].message.split(": ", 1)[-1]
                message = f"not copied into {len(namespaces)} namespace(s) ({shown}): {why}"
            else:
                message = told[0].message
            if more > 0 and kind in (ProblemKind.CLASH, ProblemKind.NAME_CONFLICT):
                message += f" and {more} more"
            log.warning(
                "replication problem",
                extra={
                    "kind": kind.value,
                    "source": str(ref),
                    "namespaces": namespaces[:50],
                    "problem": message,
                },
            )
            self._event(run, ref, kind, message)

    _REASONS: ClassVar[dict[ProblemKind, str]] = {
        ProblemKind.INVALID_SELECTOR: "InvalidNamespaceSelector",
        ProblemKind.UNUSABLE_SOURCE: "UnusableRegistrySecret",
        ProblemKind.CLASH: "CopyBlocked",
        ProblemKind.NAME_CONFLICT: "CopyNameConflict",
    }

    def _event(self, run: _Pass, ref: SourceRef, kind: ProblemKind, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        involved: dict[str, Any] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if ref in self._uids:
            involved["uid"] = self._uids[ref]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{int(now * 1e9):x}", "namespace": ref.namespace},
            "involvedObject": involved,
            "reason": self._REASONS[kind],
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "pullsecret-injector"},
            "reportingComponent": "pullsecret-injector",
            "reportingInstance": self.identity[:128],
            "action": "Replicate",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
        }
        try:
            self._request(run, "POST", f"/api/v1/namespaces/{ref.namespace}/events", body=body)
        except _StoppedError:
            raise
        except Exception as exc:
            log.info(
                "could not record an Event",
                extra={"source": str(ref), "error": getattr(exc, "status", type(exc).__name__)},
            )

    # ---- the admission path (every replica) -------------------------------------------------
    def _sources(self) -> list[Source]:
        with self._lock:
            gen = self._sources_gen
            cached = self._sources_cache
        if cached is not None and cached[0] == gen:
            return cached[1]
        secrets = [
            s for ns in self.config.source_namespaces for s in self._store.secrets_in(ns).values()
        ]
        sources = find_sources(secrets, self.config, {})
        with self._lock:
            self._sources_cache = (gen, sources)
        return sources

    def _labels(self, namespace: str) -> Mapping[str, str] | None:
        labels = self._store.namespace_labels(namespace)
        if labels is not None:
            return labels
        with self._lock:
            recent = self._recent_labels.get(namespace)
        if recent is not None and recent[0] > time.monotonic():
            return recent[1]
        return None

    def _desired(self, namespace: str, labels: Mapping[str, str]) -> Desired:
        sources = self._sources()
        with self._lock:
            gen = self._sources_gen
            cached = self._desired_cache.get(namespace)
        if cached is not None and cached[0] == gen and cached[1] is labels:
            return cached[2]
        desired = desired_in(namespace, labels, sources, self.config)
        with self._lock:
            if len(self._desired_cache) > 10_000:
                self._desired_cache.clear()
            self._desired_cache[namespace] = (gen, labels, desired)
        return desired

    def _missing(self, namespace: str, labels: Mapping[str, str]) -> list[Source]:
        desired = self._desired(namespace, labels)
        if not desired.copies:
            return []
        existing = self._existing(namespace)
        with self._lock:
            clashes = {name for ns, name in self._clashes if ns == namespace}
        return [
            source
            for name, source in desired.copies.items()
            if name not in existing and name not in clashes and not source.held
        ]

    def pending_copies(
        self, namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Mapping[str, RegistrySecret]:
        """`secrets` plus the copies `namespace` should hold but the store has not seen.

        For the admission decision: the pod names a copy that a dryRun did not create, or
        whose creation is still in flight (the kubelet retries the pull and finds it once
        the copy lands). A secret of the same name in `secrets` always wins.
        """
        labels = self._labels(namespace)
        if labels is None:
            return secrets
        desired = self._desired(namespace, labels)
        if not desired.copies:
            return secrets
        missing = {
            name: source
            for name, source in desired.copies.items()
            if name not in secrets and not source.held
        }
        if not missing:
            return secrets
        with self._lock:
            clashes = {name for ns, name in self._clashes if ns == namespace}
        merged = dict(secrets)
        for name, source in missing.items():
            if name in clashes:
                continue
            merged[name] = RegistrySecret(
                namespace=namespace,
                name=name,
                type=source.type,
                keys=source.keys,
                error=source.parse_error,
                labels=source.labels,
                annotations=MappingProxyType({SOURCE_ANNOTATION: str(source.ref)}),
            )
        return MappingProxyType(merged)

    def ensure_copies(self, namespace: str, dry_run: bool) -> list[str]:
        """Create the copies `namespace` should hold and does not, before a pod is admitted.

        Returns the names of the copies that were missing (created, or that would be on a
        dryRun, which writes nothing). Bounded by ``admission_timeout``; on timeout or error
        the names are returned all the same (the controller creates them shortly) and the
        failure is logged and counted. Cheap when nothing is missing: no API call.
        """
        deadline = time.monotonic() + self.options.admission_timeout
        labels = self._labels(namespace)
        if labels is None:
            labels = self._read_namespace_labels(namespace)
            if labels is None:
                return []
        missing = self._missing(namespace, labels)
        if not missing:
            return []
        names = sorted(s.ref.name for s in missing)
        if dry_run:
            self._metrics.replication_admission.labels("dry_run").inc(len(names))
            return names
        with self._lock:
            future = self._admitting.get(namespace)
            if future is None:
                try:
                    future = self._admission_pool.submit(
                        self._create_at_admission, namespace, missing, deadline
                    )
                except RuntimeError:  # stopped
                    return names
                self._admitting[namespace] = future
                future.add_done_callback(lambda _f: self._admitted(namespace, _f))
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            self._metrics.replication_admission.labels("timeout").inc(len(names))
            log.warning(
                "copies not created in time at admission (the controller will)",
                extra={"namespace": namespace, "secrets": names},
            )
        except Exception as exc:
            log.warning(
                "copies not created at admission (the controller will)",
                extra={"namespace": namespace, "error": type(exc).__name__},
            )
        return names

    def _admitted(self, namespace: str, future: Future[list[str]]) -> None:
        with self._lock:
            if self._admitting.get(namespace) is future:
                del self._admitting[namespace]

    def _read_namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """One bounded read of a namespace the store has not seen (created a moment ago)."""
        timeout = self.options.admission_timeout
        try:
            obj = self._api.request(
                "GET", f"/api/v1/namespaces/{namespace}", timeout=(timeout, timeout)
            )
        except Exception as exc:
            log.info(
                "namespace read at admission failed",
                extra={"namespace": namespace, "error": getattr(exc, "status", type(exc).__name__)},
            )
            return None
        raw = (obj.get("metadata") or {}).get("labels") or {}
        labels: Mapping[str, str] = MappingProxyType(
            {str(k): v for k, v in raw.items() if isinstance(v, str)}
        )
        with self._lock:
            self._recent_labels = {
                k: v for k, v in self._recent_labels.items() if v[0] > time.monotonic()
            }
            self._recent_labels[namespace] = (time.monotonic() + _RECENT_LABELS_SECONDS, labels)
        return labels

    def _create_at_admission(
        self, namespace: str, missing: list[Source], deadline: float
    ) -> list[str]:
        created: list[str] = []
        for source in missing:
            left = deadline - time.monotonic()
            if left <= 0:
                self._metrics.replication_admission.labels("timeout").inc()
                continue
            name = source.ref.name
            try:
                obj = self._read_source(source.ref, (left, left))
                if obj is None:
                    continue
                left = max(0.05, deadline - time.monotonic())
                body = copy_object(obj, namespace)
                del obj
                self._expect_write(namespace, name, body)
                try:
                    self._api.request(
                        "POST", self._path(namespace), body=body, timeout=(left, left)
                    )
                except BaseException as exc:
                    self._forget_write(namespace, name)
                    if not isinstance(exc, ApiException) or exc.status != 409:
                        raise
                    result = self._after_conflict(None, namespace, name, source.ref)
                    self._metrics.replication_admission.labels(result).inc()
                    continue
                finally:
                    del body
                created.append(name)
                self._metrics.replication_admission.labels("created").inc()
                log.info(
                    "copy created at admission",
                    extra={"namespace": namespace, "secret": name, "source": str(source.ref)},
                )
            except Exception as exc:
                self._metrics.replication_admission.labels("error").inc()
                log.warning(
                    "copy not created at admission",
                    extra={
                        "namespace": namespace,
                        "secret": name,
                        "error": getattr(exc, "status", None) or type(exc).__name__,
                    },
                )
        return created

    # ---- other controllers under the same Lease (webhook/recovery.py) ------------------------
    def add_leader_hooks(
        self, on_started: Callable[[], None], on_stopped: Callable[[], None]
    ) -> None:
        """Run `on_started`/`on_stopped` whenever this replica starts/stops leading."""
        with self._lock:
            self._leader_hooks.append((on_started, on_stopped))
            leading = self._running is not None
        if leading:
            on_started()

    def _run_leader_hooks(self, *, started: bool) -> None:
        for on_started, on_stopped in list(self._leader_hooks):
            try:
                (on_started if started else on_stopped)()
            except Exception:
                log.exception("a controller under the replication Lease failed to start/stop")

    # ---- for tests and operators -------------------------------------------------------------
    def request_full_reconcile(self) -> None:
        with self._lock:
            self._work.full = True
            self._wake.notify_all()

    @property
    def elector(self) -> LeaderElector | None:
        return self._elector


__all__ = [
    "ReplicationOptions",
    "Replicator",
    "TokenBucket",
    "micro_time",
]
