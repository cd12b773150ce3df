"""Stuck-pod recovery: carries out recovery plans (webhook/recovery_plan.py) as the Lease holder.

A pod created before its registry Secret existed (or while the webhook was down, or
before a project registry's copy reached its namespace) waits in ``ErrImagePull`` /
``ImagePullBackOff`` for ever: ``spec.imagePullSecrets`` of a pod is immutable. Once a
secret that serves its image is in its namespace, this controller:

- evicts it when a controller owns it (``POST pods/{name}/eviction``, policy/v1, with
  the pod's uid as precondition): the Eviction API honours PodDisruptionBudgets (429:
  retried later), the owner creates a replacement and admission injects the secret;
- posts a Warning Event ``MissingPullSecret`` on a bare pod (never deleted), or on an
  owned one in mode ``event``; every eviction is recorded as an Event
  ``PullSecretRecovery`` on the pod too. Each action is logged (pod, images, secret
  names: never a credential) and counted (``pullsecret_injector_recovery_*``).

Triggers: the store's changes (a registry Secret added or changed in a namespace,
replication copies included; a namespace relabelled; a re-list), a pod seen waiting on a
failed pull (the pod watch, webhook/pod_watch.py), and a periodic full pass.

Safety: a cluster-wide token bucket (``evictions_per_minute``, default 10), each pod
handled once (by uid), a per-owner exponential backoff for replacements that come back
stuck (``recovery_plan.next_backoff``), the opt-outs of admission, and nothing at all
for pods with a ready container. Admission (dry-run or not) never calls into this
module: only the cluster's state does.

It runs under the replication controller's Lease: with replication on, the Replicator's
leadership starts and stops it (``Replicator.add_leader_hooks``); with replication off it
campaigns for the same Lease itself. Only the leader watches pods.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from webhook.config import Settings
from webhook.injection import Decider, Policy
from webhook.leader import LeaderElector, LeaseTimings, RawApi, default_identity
from webhook.metrics import Metrics
from webhook.pod_watch import Key, PodStore, PodWatcher
from webhook.recovery_plan import (
    Action,
    ActionKind,
    Backoff,
    Config,
    Mode,
    PodInfo,
    SkipReason,
    next_backoff,
    plan,
)
from webhook.store import Change, ChangeKind, Store

log = logging.getLogger(__name__)

EVICTED_REASON = "PullSecretRecovery"
MISSING_REASON = "MissingPullSecret"
_STOP_JOIN_SECONDS = 15.0


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
    retry_seconds: float = 15.0  # after a PDB's 429 or an error, for that pod
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


class Leadership(Protocol):
    """What recovery needs of the Replicator: to start and stop with its leadership."""

    def add_leader_hooks(
        self, on_started: Callable[[], None], on_stopped: Callable[[], None]
    ) -> None: ...


class RateLimit:
    """A token bucket that never blocks: take() is 0 when a token was taken, else the wait."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = per_second
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0 - 1e-9:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


@dataclass
class _Work:
    full: bool = False
    namespaces: set[str] = field(default_factory=set)
    pods: set[Key] = field(default_factory=set)

    def any(self) -> bool:
        return self.full or bool(self.namespaces) or bool(self.pods)


@dataclass
class _Leading:
    """What exists only while this replica leads: the pod watch and the loop."""

    pods: PodStore
    watcher: PodWatcher
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
        self._api = RawApi(api_client)
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
        self._evictions = RateLimit(
            self.options.evictions_per_minute / 60.0,
            max(1, int(self.options.evictions_per_minute)),
        )
        self._events = RateLimit(self.options.events_per_second, self.options.events_burst)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._work = _Work()
        self._later: dict[Key, float] = {}  # pods to look at again (monotonic due time)
        self._retries: dict[str, int] = {}  # pod uid -> failed attempts (429, errors)
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
            stop = threading.Event()
            watcher = PodWatcher(
                self._api_client,
                pods,
                self._metrics,
                self._on_pod,
                watch_timeout_seconds=self.options.watch_timeout_seconds,
                page_size=self.options.page_size,
                backoff_cap_seconds=self.options.watch_backoff_cap_seconds,
            )
            thread = threading.Thread(target=self._loop, args=(stop,), name="recovery", daemon=True)
            self._leading = _Leading(pods, watcher, stop, thread)
            self._work = _Work(full=True)
        watcher.start()
        thread.start()
        log.info("stuck-pod recovery running")

    def _stop_leading(self) -> None:
        with self._lock:
            leading, self._leading = self._leading, None
            if leading is None:
                return
            leading.stop.set()
            self._wake.notify_all()
            self._work = _Work()
            self._later.clear()
        leading.watcher.stop()
        leading.thread.join(_STOP_JOIN_SECONDS)
        self._metrics.recovery_cached_pods.set(0)
        log.info("stuck-pod recovery stopped")

    # ---- triggers (watch threads: quick) -----------------------------------------------
    def _on_change(self, change: Change) -> None:
        with self._lock:
            if self._leading is None:
                return
            if change.kind in (
                ChangeKind.SECRET,
                ChangeKind.NAMESPACE_SECRETS,
                ChangeKind.NAMESPACE,
            ):
                self._work.namespaces.add(change.namespace)
            else:  # a re-list: anything may have changed
                self._work.full = True
            self._wake.notify_all()

    def _on_pod(self, pod: PodInfo | None) -> None:
        with self._lock:
            if pod is None:
                self._work.full = True
            else:
                self._work.pods.add(pod.key)
            self._wake.notify_all()

    def request_full_pass(self) -> None:
        with self._lock:
            self._work.full = True
            self._wake.notify_all()

    # ---- the loop ------------------------------------------------------------------------
    def _loop(self, stop: threading.Event) -> None:
        next_full = time.monotonic() + self.options.resync_seconds
        while not stop.is_set():
            with self._lock:
                while not stop.is_set():
                    now = time.monotonic()
                    due = any(at <= now for at in self._later.values())
                    if self._work.any() or due or now >= next_full:
                        break
                    self._wake.wait(max(0.0, min([next_full, *self._later.values()]) - now))
                if stop.is_set():
                    break
                leading = self._leading
            if leading is None:
                break
            if not (self._store.is_synced("secrets", "namespaces") and leading.pods.synced):
                stop.wait(0.05)  # never act on a partial picture
                continue
            with self._lock:
                now = time.monotonic()
                work, self._work = self._work, _Work()
                for key in [k for k, at in self._later.items() if at <= now]:
                    del self._later[key]
                    work.pods.add(key)
                if now >= next_full:
                    work.full = True
                    next_full = now + self.options.resync_seconds
            try:
                self._pass(work, leading.pods, stop)
            except Exception:
                log.exception("recovery pass failed: retrying with a full pass")
                with self._lock:
                    self._work.full = True
                if stop.wait(self.options.retry_seconds):
                    break

    def _candidates(self, work: _Work, pods: PodStore) -> list[PodInfo]:
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

    def _pass(self, work: _Work, pods: PodStore, stop: threading.Event) -> None:
        candidates = self._candidates(work, pods)
        with self._lock:
            backoff = dict(self._backoff)
        result = plan(
            candidates,
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
                self._retry_later(pod, max(0.0, held.until - wall) + 0.05)
        for action in result.actions:
            if stop.is_set():
                return
            self._act(action)
        self.passes += 1

    def _is_handled(self, uid: str) -> bool:
        return uid in self._handled

    def _handled_now(self, uid: str) -> None:
        with self._lock:
            self._handled[uid] = None
            self._retries.pop(uid, None)
            while len(self._handled) > self.options.handled_limit:
                self._handled.popitem(last=False)

    def _forget_gone(self, pods: PodStore) -> None:
        """After a full pass: drop retry state of pods no longer watched."""
        present = {p.uid for p in pods.all()}
        with self._lock:
            self._retries = {u: n for u, n in self._retries.items() if u in present}
            now = time.time()
            self._backoff = {
                uid: b
                for uid, b in self._backoff.items()
                if b.until + self.options.backoff_cap_seconds > now
            }

    def _retry_later(self, pod: PodInfo, delay: float | None = None) -> None:
        """Look at `pod` again after `delay`, or after its own growing retry delay."""
        with self._lock:
            if delay is None:
                failures = self._retries[pod.uid] = self._retries.get(pod.uid, 0) + 1
                delay = min(
                    self.options.backoff_cap_seconds,
                    self.options.retry_seconds * 2.0 ** min(failures - 1, 20),
                ) * random.uniform(0.8, 1.0)  # noqa: S311 - jitter
            due = time.monotonic() + delay
            self._later[pod.key] = min(due, self._later.get(pod.key, due))
            self._wake.notify_all()

    # ---- actions ---------------------------------------------------------------------------
    def _act(self, action: Action) -> None:
        pod = action.pod
        limiter = self._evictions if action.kind is ActionKind.EVICT else self._events
        wait = limiter.take()
        if wait > 0:
            self._retry_later(pod, wait)  # rate limited: looked at again when a token is due
            return
        if action.kind is ActionKind.EVICT:
            self._evict(action)
        else:
            self._warn(action)

    def _fields(self, action: Action) -> dict[str, Any]:
        pod = action.pod
        fields: dict[str, Any] = {
            "namespace": pod.namespace,
            "pod": pod.name,
            "uid": pod.uid,
            "images": list(action.images),
            "secrets": list(action.secrets),
            "action": action.kind.value,
        }
        if pod.owner is not None:
            fields["owner"] = f"{pod.owner.kind}/{pod.owner.name}"
        return fields

    def _evict(self, action: Action) -> None:
        pod = action.pod
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            # exactly the pod planned for: not a replacement that took its name
            "deleteOptions": {"preconditions": {"uid": pod.uid}},
        }
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
        timeout = self.options.request_timeout
        try:
            self._api.request("POST", path, body=body, timeout=(timeout, timeout))
        except ApiException as exc:
            if exc.status == 429:
                result = "pdb_blocked"  # a PodDisruptionBudget allows no disruption now
                self._retry_later(pod)
            elif exc.status in (404, 409):
                result = "gone"  # deleted, or replaced by a pod of the same name
                self._handled_now(pod.uid)
            else:
                result = "error"
                self._retry_later(pod)
            self._metrics.recovery_actions.labels("evict", result).inc()
            log.info(
                "stuck pod not evicted",
                extra={**self._fields(action), "result": result, "status": exc.status},
            )
            return
        except Exception as exc:
            self._metrics.recovery_actions.labels("evict", "error").inc()
            self._retry_later(pod)
            log.warning(
                "stuck pod not evicted",
                extra={**self._fields(action), "result": "error", "error": type(exc).__name__},
            )
            return
        self._handled_now(pod.uid)
        if pod.owner is not None:
            with self._lock:
                self._backoff[pod.owner.uid] = next_backoff(
                    self._backoff.get(pod.owner.uid),
                    pod,
                    time.time(),
                    self.options.backoff_base_seconds,
                    self.options.backoff_cap_seconds,
                )
        self._metrics.recovery_actions.labels("evict", "ok").inc()
        log.info("stuck pod evicted: its controller recreates it", extra=self._fields(action))
        owner = pod.owner.kind if pod.owner is not None else "owner"
        self._post_event(
            action,
            "Normal",
            EVICTED_REASON,
            f"Evicted by pullsecret-injector: image {', '.join(action.images)} can now be "
            f"pulled with registry secret {', '.join(action.secrets)}, which this pod does "
            f"not name; its {owner} recreates it with the secret injected.",
        )

    def _warn(self, action: Action) -> None:
        pod = action.pod
        why = (
            "A bare pod is never deleted: delete and recreate it to get the secret."
            if pod.owner is None
            else "recovery.mode is event: delete the pod and its "
            f"{pod.owner.kind} recreates it with the secret."
        )
        message = (
            f"Image {', '.join(action.images)} cannot be pulled; registry secret "
            f"{', '.join(action.secrets)} in this namespace can pull it, but this pod does "
            f"not name it and a pod's imagePullSecrets cannot change. {why}"
        )
        if self._post_event(action, "Warning", MISSING_REASON, message):
            self._handled_now(pod.uid)
            self._metrics.recovery_actions.labels("event", "ok").inc()
            log.info("stuck pod reported (Event)", extra=self._fields(action))
        else:
            self._metrics.recovery_actions.labels("event", "error").inc()
            self._retry_later(pod)

    def _post_event(self, action: Action, kind: str, reason: str, message: str) -> bool:
        pod = action.pod
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod.name}.{int(now * 1e9):x}", "namespace": pod.namespace},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": "pullsecret-injector"},
            "reportingComponent": "pullsecret-injector",
            "reportingInstance": self.identity[:128],
            "action": "Evict" if action.kind is ActionKind.EVICT else "Report",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
        }
        timeout = self.options.request_timeout
        try:
            self._api.request(
                "POST",
                f"/api/v1/namespaces/{pod.namespace}/events",
                body=body,
                timeout=(timeout, timeout),
            )
        except Exception as exc:
            log.info(
                "could not record an Event on a pod",
                extra={
                    "namespace": pod.namespace,
                    "pod": pod.name,
                    "error": getattr(exc, "status", None) or type(exc).__name__,
                },
            )
            return False
        return True


def build(
    api_client: k8s_client.ApiClient,
    store: Store,
    metrics: Metrics,
    settings: Settings,
    leadership: Leadership | None,
) -> Recovery | None:
    """The controller `serve` runs for `settings` (None when recovery is off)."""
    mode = Mode(settings.recovery_mode)
    if mode is Mode.OFF:
        return None
    options = RecoveryOptions(
        mode=mode, evictions_per_minute=settings.recovery_evictions_per_minute
    )
    return Recovery(api_client, store, metrics, settings, options, leadership=leadership)
