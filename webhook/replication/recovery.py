"""Stuck-pod recovery: carries out recovery plans (``core/recovery.py``) as the Lease holder.

A pod created before its registry Secret existed (or while the webhook was down, or
before a project registry's copy reached its namespace) waits in ``ErrImagePull`` /
``ImagePullBackOff`` for ever: ``spec.imagePullSecrets`` of a pod is immutable. Once a
secret that serves its image is in its namespace, this controller evicts it when a
controller owns it (the owner creates a replacement and admission injects the secret),
or posts a Warning Event on a bare pod (never deleted) or, in mode ``event``, on an owned
one: ``replication/recovery_actions.py``.

Triggers: the store's changes (a registry Secret added or changed in a namespace,
replication copies included; a namespace relabelled; a re-list), a pod seen waiting on a
failed pull (the pod watch, ``cluster/pods.py``), and a periodic full pass, all through a work
queue (``cluster/workqueue.py``) of full passes, namespaces and pods.

Safety: a cluster-wide token bucket (``evictions_per_minute``, default 10), each pod
handled once (by uid), a per-pod exponential retry backoff (429s, errors), a per-owner
exponential backoff for replacements that come back stuck
(``core.recovery.next_backoff``), the opt-outs of admission, and nothing at all for pods
with a ready container. Admission (dry-run or not) never calls into this
module: only the cluster's state does.

It runs under the replication controller's Lease: with replication on, the Replicator's
leadership starts and stops it (``Replicator.add_leader_hooks``); with replication off it
campaigns for the same Lease itself. Only the leader watches pods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from kubernetes import client as k8s_client

from webhook.cluster.apiclient import RawApi
from webhook.cluster.leader import LeaderElector, LeaseTimings, default_identity
from webhook.cluster.pods import Key, PodStore, PodWatcher
from webhook.cluster.reflector import WatchOptions
from webhook.cluster.store import NAMESPACES, SECRETS, Change, ChangeKind, Store
from webhook.cluster.workqueue import ItemExponentialBackoff, TokenBucket, WorkQueue
from webhook.config import Settings
from webhook.core.injection import Decider, Policy
from webhook.core.recovery import (
    Action,
    Backoff,
    Config,
    Mode,
    PodInfo,
    SkipReason,
    next_backoff,
    plan,
)
from webhook.metrics import Metrics
from webhook.replication.recovery_actions import (
    EVICTED_REASON,
    MISSING_REASON,
    RecoveryActions,
)

__all__ = ["EVICTED_REASON", "MISSING_REASON", "Leadership", "Recovery", "RecoveryOptions", "build"]

log = logging.getLogger(__name__)

_STOP_JOIN_SECONDS = 15.0
_UNSYNCED_WAIT_SECONDS = 0.05

# Work queue items: a full pass, one namespace's pods, one pod.
WorkKey = tuple[str, str, str]
FULL: WorkKey = ("full", "", "")


def _namespace_key(namespace: str) -> WorkKey:
    return ("namespace", namespace, "")


def _pod_key(key: Key) -> WorkKey:
    return ("pod", key[0], key[1])


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    """Tuning of the controller; the defaults are the documented safety limits."""

    mode: Mode = Mode.EVICT
    # Cluster-wide evictions a minute; a minute's worth may go at once (burst), so a few
    # stuck replicas of one Deployment recover together.
    evictions_per_minute: float = 10.0
    events_per_second: float = 5.0  # Events on pods (bare pods, event mode, evictions)
    events_burst: int = 50
    resync_seconds: float = 300.0  # full pass over every watched pod
    backoff_base_seconds: float = 60.0  # per owner, doubled for each replacement stuck again
    backoff_cap_seconds: float = 3600.0
    retry_seconds: float = 15.0  # after a PDB's 429 or an error, for that pod (doubling)
    request_timeout: float = 10.0
    handled_limit: int = 100_000  # uids remembered as handled (oldest forgotten first)
    watch_timeout_seconds: int = 300
    page_size: int = 500
    watch_backoff_cap_seconds: float = 30.0
    leader_election: bool = True  # campaign for the Lease (when no Replicator leads)
    lease_name: str = "pullsecret-injector"
    timings: LeaseTimings = field(default_factory=LeaseTimings)

    def __post_init__(self) -> None:
        if self.evictions_per_minute <= 0 or self.events_per_second <= 0:
            raise ValueError("evictions_per_minute and events_per_second must be positive")
        if self.resync_seconds <= 0 or self.retry_seconds <= 0:
            raise ValueError("resync_seconds and retry_seconds must be positive")

    @classmethod
    def of(cls, settings: Settings) -> RecoveryOptions:
        """The options `serve` runs with: mode, limit, and the watch and Lease settings."""
        return cls(
            mode=Mode(settings.recovery_mode),
            evictions_per_minute=settings.recovery_evictions_per_minute,
            watch_timeout_seconds=settings.watch_timeout_seconds,
            page_size=settings.list_page_size,
            timings=LeaseTimings.of(settings),
        )

    @property
    def watch(self) -> WatchOptions:
        return WatchOptions(
            watch_timeout_seconds=self.watch_timeout_seconds,
            page_size=self.page_size,
            backoff_cap_seconds=self.watch_backoff_cap_seconds,
        )


class Leadership(Protocol):
    """What recovery needs of the Replicator: to start and stop with its leadership."""

    def add_leader_hooks(
        self, on_started: Callable[[], None], on_stopped: Callable[[], None]
    ) -> None: ...


@dataclass
class _Work:
    full: bool = False
    namespaces: set[str] = field(default_factory=set)
    pods: set[Key] = field(default_factory=set)

    @classmethod
    def of(cls, keys: Iterable[WorkKey]) -> _Work:
        work = cls()
        for kind, namespace, name in keys:
            if kind == "full":
                work.full = True
            elif kind == "namespace":
                work.namespaces.add(namespace)
            else:
                work.pods.add((namespace, name))
        return work


@dataclass
class _Leading:
    """What exists only while this replica leads: the pod watch, the queue and the loop."""

    pods: PodStore
    watcher: PodWatcher
    queue: WorkQueue[WorkKey]
    stop: threading.Event
    thread: threading.Thread


class Recovery:
    """``Recovery(api_client, store, metrics, settings, options, leadership=replicator)``.

    ``start()``/``stop()``. ``passes`` counts completed passes (tests and the benchmark).
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        store: Store,
        metrics: Metrics,
        settings: Settings,
        options: RecoveryOptions | None = None,
        *,
        leadership: Leadership | None = None,
        identity: str | None = None,
    ) -> None:
        self.options = options or RecoveryOptions()
        if self.options.mode is Mode.OFF:
            raise ValueError("recovery mode off: do not build a Recovery")
        self._api_client = api_client
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._leadership = leadership
        self.identity = identity or default_identity()
        self.config = Config(
            self.options.mode,
            settings.release_namespace,
            frozenset(settings.recovery_exclude_namespaces),
        )
        self._policy = Policy.build(settings.secret_selector, settings.private_registries)
        per_minute = self.options.evictions_per_minute
        self._actions = RecoveryActions(
            RawApi(api_client),
            metrics,
            self.identity,
            evictions=TokenBucket(per_minute / 60.0, max(1, int(per_minute))),
            events=TokenBucket(self.options.events_per_second, self.options.events_burst),
            request_timeout=self.options.request_timeout,
        )
        # pod uid -> failed attempts (429s, errors): its next look is delayed accordingly
        self._retries: ItemExponentialBackoff[str] = ItemExponentialBackoff(
            self.options.retry_seconds, self.options.backoff_cap_seconds, jitter=0.2
        )
        self._lock = threading.Lock()
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._backoff: dict[str, Backoff] = {}  # owner uid -> backoff
        self._leading: _Leading | None = None
        self._elector: LeaderElector | None = None
        self._started = False
        self.passes = 0

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("Recovery.start() called twice")
        self._started = True
        self._store.add_listener(self._on_change)
        if self._leadership is not None:
            self._leadership.add_leader_hooks(self._start_leading, self._stop_leading)
        elif self.options.leader_election:
            self._elector = LeaderElector(
                self._api_client,
                self._settings.release_namespace,
                self.options.lease_name,
                identity=self.identity,
                timings=self.options.timings,
                on_started=self._start_leading,
                on_stopped=self._stop_leading,
            )
            self._elector.start()
        else:
            self._start_leading()
        log.info(
            "stuck-pod recovery started",
            extra={
                "mode": self.options.mode.value,
                "evictions_per_minute": self.options.evictions_per_minute,
                "under": "replication lease" if self._leadership is not None else "own lease",
            },
        )

    def stop(self) -> None:
        if self._elector is not None:
            self._elector.stop()
        self._stop_leading()
        self._store.remove_listener(self._on_change)

    @property
    def is_leading(self) -> bool:
        return self._leading is not None

    @property
    def pods(self) -> PodStore | None:
        leading = self._leading
        return None if leading is None else leading.pods

    def _start_leading(self) -> None:
        with self._lock:
            if self._leading is not None:
                return
            pods = PodStore()
            # (the queue's own backoff is unused: a pod's retries are counted by uid)
            queue: WorkQueue[WorkKey] = WorkQueue(
                ItemExponentialBackoff(self.options.retry_seconds, self.options.backoff_cap_seconds)
            )
            queue.add(FULL)
            watcher = PodWatcher(
                self._api_client, pods, self._metrics, self._on_pod, self.options.watch
            )
            stop = threading.Event()
            thread = threading.Thread(
                target=self._loop, args=(pods, queue, stop), name="recovery", daemon=True
            )
            self._leading = _Leading(pods, watcher, queue, stop, thread)
        watcher.start()
        thread.start()
        log.info("stuck-pod recovery running")

    def _stop_leading(self) -> None:
        with self._lock:
            leading, self._leading = self._leading, None
            if leading is None:
                return
            leading.stop.set()
            leading.queue.shut_down()  # wakes the loop
        leading.watcher.stop()
        leading.thread.join(_STOP_JOIN_SECONDS)
        self._metrics.recovery_cached_pods.set(0)
        log.info("stuck-pod recovery stopped")

    # ---- triggers (watch threads: quick) -----------------------------------------------
    def _queue(self) -> WorkQueue[WorkKey] | None:
        leading = self._leading
        return None if leading is None else leading.queue

    def _on_change(self, change: Change) -> None:
        queue = self._queue()
        if queue is None:
            return
        if change.kind in (ChangeKind.SECRET, ChangeKind.NAMESPACE_SECRETS, ChangeKind.NAMESPACE):
            queue.add(_namespace_key(change.namespace))
        else:  # a re-list: anything may have changed
            queue.add(FULL)

    def _on_pod(self, pod: PodInfo | None) -> None:
        queue = self._queue()
        if queue is not None:
            queue.add(FULL if pod is None else _pod_key(pod.key))

    def request_full_pass(self) -> None:
        queue = self._queue()
        if queue is not None:
            queue.add(FULL)

    # ---- the loop ------------------------------------------------------------------------
    def _loop(self, pods: PodStore, queue: WorkQueue[WorkKey], stop: threading.Event) -> None:
        queue.add_after(FULL, self.options.resync_seconds)
        while not stop.is_set():
            keys = queue.get_batch()
            if keys is None or stop.is_set():
                break
            if not (self._store.is_synced(SECRETS, NAMESPACES) and pods.synced):
                queue.add_all(keys)  # never act on a partial picture
                stop.wait(_UNSYNCED_WAIT_SECONDS)
                continue
            work = _Work.of(keys)
            if work.full:
                queue.add_after(FULL, self.options.resync_seconds)
            try:
                self._pass(work, pods, queue, stop)
            except Exception:
                log.exception("recovery pass failed: retrying with a full pass")
                queue.add_after(FULL, self.options.retry_seconds)

    @staticmethod
    def _candidates(work: _Work, pods: PodStore) -> list[PodInfo]:
        if work.full:
            return pods.all()
        found: dict[Key, PodInfo] = {}
        for ns in work.namespaces:
            for p in pods.in_namespace(ns):
                found[p.key] = p
        for key in work.pods:
            known = pods.get(key)
            if known is not None:
                found[key] = known
        return list(found.values())

    def _pass(
        self, work: _Work, pods: PodStore, queue: WorkQueue[WorkKey], stop: threading.Event
    ) -> None:
        with self._lock:
            backoff = dict(self._backoff)
        result = plan(
            self._candidates(work, pods),
            self._store.secrets_in,
            self._store.namespace_labels,
            self.config,
            Decider(self._policy),
            handled=self._is_handled,
            backoff=backoff,
            now=time.time(),
        )
        self._metrics.recovery_stuck_pods.set(pods.stuck)
        if work.full:
            for reason in SkipReason:
                self._metrics.recovery_skipped.labels(reason.value).set(
                    len(result.skipped_for(reason))
                )
            self._forget_gone(pods)
        wall = time.time()
        for pod in result.skipped_for(SkipReason.OWNER_BACKOFF):
            held = backoff.get(pod.owner.uid) if pod.owner is not None else None
            if held is not None:  # looked at again when its owner's backoff ends
                queue.add_after(_pod_key(pod.key), max(0.0, held.until - wall) + 0.05)
        for action in result.actions:
            if stop.is_set():
                return
            self._act(action, queue)
        self.passes += 1

    def _act(self, action: Action, queue: WorkQueue[WorkKey]) -> None:
        pod = action.pod
        outcome = self._actions.act(action)
        if outcome.evicted and pod.owner is not None:
            with self._lock:
                self._backoff[pod.owner.uid] = next_backoff(
                    self._backoff.get(pod.owner.uid),
                    pod,
                    time.time(),
                    self.options.backoff_base_seconds,
                    self.options.backoff_cap_seconds,
                )
        if outcome.done:
            self._handled_now(pod.uid)
        elif outcome.retry_in is not None:
            queue.add_after(_pod_key(pod.key), outcome.retry_in)
        else:  # its own growing delay
            queue.add_after(_pod_key(pod.key), self._retries.when(pod.uid))

    # ---- what is remembered ----------------------------------------------------------------
    def _is_handled(self, uid: str) -> bool:
        return uid in self._handled

    def _handled_now(self, uid: str) -> None:
        self._retries.forget(uid)
        with self._lock:
            self._handled[uid] = None
            while len(self._handled) > self.options.handled_limit:
                self._handled.popitem(last=False)

    def _forget_gone(self, pods: PodStore) -> None:
        """After a full pass: drop the retry state of pods no longer watched, and the
        backoffs of owners long past theirs."""
        present = {p.uid for p in pods.all()}
        self._retries.retain(present.__contains__)
        now = time.time()
        with self._lock:
            self._backoff = {
                uid: b
                for uid, b in self._backoff.items()
                if b.until + self.options.backoff_cap_seconds > now
            }


def build(
    api_client: k8s_client.ApiClient,
    store: Store,
    metrics: Metrics,
    settings: Settings,
    leadership: Leadership | None,
) -> Recovery | None:
    """The controller `serve` runs for `settings` (None when recovery is off)."""
    if Mode(settings.recovery_mode) is Mode.OFF:
        return None
    options = RecoveryOptions.of(settings)
    return Recovery(api_client, store, metrics, settings, options, leadership=leadership)
