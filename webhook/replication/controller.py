"""The replication controller: carries out replication plans against the API server.

``Replicator`` is built by every serving replica:

- ``start()`` campaigns for the Lease (``cluster/leader.py``). The holder runs the
  controller loop; the others only serve admission. Losing the Lease stops the loop
  cleanly: no new write starts, in-flight writes finish (bounded by their timeouts),
  queued work is dropped, and the next leader starts with a full reconcile.
- The loop is driven by the store's changes (``Store`` listeners: the same list/watch
  streams that feed admission), never by polling, through a work queue
  (``cluster/workqueue.py``, client-go's model) of :class:`Key` items: a namespace
  created or relabelled re-plans that namespace; a change of a source re-reads it and
  re-plans everything; a re-list re-plans everything; ``EVERYTHING`` also comes back
  every ``resync_seconds`` to converge whatever a missed event or a restart left behind.
- Writes are rate limited (token bucket, ``qps``/``burst``) and run on a pool of
  ``workers`` threads. A failed namespace is queued again after its exponential backoff;
  a failed source read, after the backoff of ``EVERYTHING``.
- The admission side (``replication/admission_copies.py``) serves every replica.

Its parts: ``copies.py`` (source reads and copy writes, shared with admission),
``reconcile.py`` (one pass: plan a batch of work and carry it out),
``expectations.py`` (our writes the store has not seen yet, blocked copies),
``events.py`` (problems told as log lines, metrics and Events).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client as k8s_client

from webhook.cluster.apiclient import RawApi, StoppedError
from webhook.cluster.leader import LeaderElector, default_identity
from webhook.cluster.store import NAMESPACES, SECRETS, Change, ChangeKind, Store
from webhook.cluster.workqueue import ItemExponentialBackoff, WorkQueue
from webhook.config import Settings
from webhook.core.model import RegistrySecret
from webhook.core.planner import Config
from webhook.metrics import Metrics
from webhook.replication.admission_copies import AdmissionCopies
from webhook.replication.copies import CopyWriter, Parts, SourceReader
from webhook.replication.events import ProblemReporter
from webhook.replication.expectations import Clashes, Expectations
from webhook.replication.reconcile import (
    EVERYTHING,
    Key,
    KeyKind,
    Reconciler,
    ReplicationOptions,
    Work,
    namespace_key,
)

__all__ = ["EVERYTHING", "ReplicationOptions", "Replicator"]

log = logging.getLogger(__name__)

_STOP_JOIN_SECONDS = 15.0
_UNSYNCED_WAIT_SECONDS = 0.05


class Replicator:
    """Project and cluster registries: copies kept by the leader, created at admission by all.

    ``Replicator(api_client, store, metrics, settings)``; ``start()``/``stop()``. Settings
    give ``release_namespace`` (also the Lease's namespace) and ``source_namespaces``
    (default: the release namespace).
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
        self._queue: WorkQueue[Key] = WorkQueue(
            ItemExponentialBackoff(
                self.options.retry_base_seconds, self.options.retry_cap_seconds, jitter=0.5
            )
        )
        self._expectations = Expectations()
        self._clashes = Clashes()
        self._reader = SourceReader(self._api)
        self._reporter = ProblemReporter(metrics, self.identity, self._reader.uid)
        parts = Parts(
            self._api,
            store,
            metrics,
            self.config,
            self._reader,
            CopyWriter(self.config, self._expectations, self._clashes),
            self._expectations,
            self._clashes,
        )
        self._reconciler = Reconciler(
            parts, self.options, queue=self._queue, reporter=self._reporter
        )
        self.admission = AdmissionCopies(parts, timeout=self.options.admission_timeout)
        self._lock = threading.Lock()  # the loop's lifecycle (never held during I/O)
        self._running = False
        self._loop_stop = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._elector: LeaderElector | None = None
        self._started = False
        # (on_started, on_stopped) of controllers under the same Lease (replication/recovery.py)
        self._leader_hooks: list[tuple[Callable[[], None], Callable[[], None]]] = []

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Listen to the store; campaign for the Lease (or lead at once without election)."""
        if self._started:
            raise RuntimeError("Replicator.start() called twice")
        self._started = True
        self._store.add_listener(self._on_change)
        self._store.add_listener(self.admission.on_change)
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
        self._store.remove_listener(self.admission.on_change)
        self.admission.stop()
        self._queue.shut_down()
        self._metrics.replication_leader.set(0)

    @property
    def is_leader(self) -> bool:
        return self._running

    @property
    def elector(self) -> LeaderElector | None:
        return self._elector

    @property
    def passes(self) -> int:
        """Completed passes (the reconcile histogram counts them too, by scope)."""
        return self._reconciler.passes

    def _start_loop(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            self._queue.clear()
            self._queue.add(EVERYTHING)
            self._reporter.reset()
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
            if not self._running:
                return
            self._running = False
            self._loop_stop.set()
            thread, executor = self._loop_thread, self._executor
            self._loop_thread, self._executor = None, None
        self._queue.add(EVERYTHING)  # wakes the loop, which sees its stop event
        if thread is not None:
            thread.join(_STOP_JOIN_SECONDS)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()
        self._expectations.clear()
        log.info("replication controller stopped")
        self._run_leader_hooks(started=False)

    # ---- other controllers under the same Lease (replication/recovery.py) -------------------
    def add_leader_hooks(
        self, on_started: Callable[[], None], on_stopped: Callable[[], None]
    ) -> None:
        """Run `on_started`/`on_stopped` whenever this replica starts/stops leading."""
        with self._lock:
            self._leader_hooks.append((on_started, on_stopped))
            leading = self._running
        if leading:
            on_started()

    def _run_leader_hooks(self, *, started: bool) -> None:
        for on_started, on_stopped in list(self._leader_hooks):
            try:
                (on_started if started else on_stopped)()
            except Exception:
                log.exception("a controller under the replication Lease failed to start/stop")

    # ---- store listener (watch threads: quick) ---------------------------------------------
    def _on_change(self, change: Change) -> None:
        if change.kind is ChangeKind.SECRET:
            self._expectations.observed(change.namespace, change.name)
        if not self._running:
            return  # a follower keeps no queue; a new leader starts with a full reconcile
        in_sources = change.namespace in self.config.source_namespaces
        if change.kind is ChangeKind.SECRET and in_sources:
            self._queue.add(Key(KeyKind.SOURCE, change.namespace, change.name))
        elif change.kind is ChangeKind.NAMESPACE_SECRETS and in_sources:
            self._queue.add(EVERYTHING)  # a source namespace read whole: re-read them all
        elif change.kind in (ChangeKind.SECRET, ChangeKind.NAMESPACE, ChangeKind.NAMESPACE_SECRETS):
            self._queue.add(namespace_key(change.namespace))
        else:  # a re-list: events may have been missed, data may have changed unseen
            self._queue.add(EVERYTHING)

    # ---- the loop --------------------------------------------------------------------------
    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            keys = self._queue.get_batch()
            if keys is None or stop.is_set():
                break
            if not self._store.is_synced(SECRETS, NAMESPACES):
                # Never act on a partial picture: a source not listed yet would look deleted.
                self._queue.add_all(keys)
                stop.wait(_UNSYNCED_WAIT_SECONDS)
                continue
            work = Work.of(keys)
            if work.full:
                self._clashes.clear()
                self._queue.add_after(EVERYTHING, self.options.resync_seconds)
            executor = self._executor
            if executor is None:
                break
            try:
                self._reconciler.run(work, stop, executor)
            except StoppedError:
                break
            except Exception:
                log.exception("replication pass failed: retrying with a full reconcile")
                self._queue.add_after(EVERYTHING, self.options.retry_base_seconds)

    # ---- the admission path (every replica) -------------------------------------------------
    def pending_copies(
        self, namespace: str, secrets: Mapping[str, RegistrySecret]
    ) -> Mapping[str, RegistrySecret]:
        return self.admission.pending_copies(namespace, secrets)

    def ensure_copies(self, namespace: str, dry_run: bool) -> list[str]:
        return self.admission.ensure_copies(namespace, dry_run)

    def missing_nothing(self, namespace: str) -> bool:
        return self.admission.missing_nothing(namespace)

    # ---- for tests and operators -------------------------------------------------------------
    def request_full_reconcile(self) -> None:
        self._queue.add(EVERYTHING)
