"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica serves admission; only the holder of the Lease runs the replication
controller. The algorithm is client-go's (``tools/leaderelection``):

- A candidate reads the Lease every ``retry_period``. It may take it when nobody holds it
  (no Lease, or an empty ``holderIdentity``) or when the holder has not renewed it for
  ``leaseDurationSeconds`` *as observed by this candidate's own clock* (the time it last
  saw the record change; clocks of different nodes are never compared). Taking it is an
  update with the Lease's ``resourceVersion``: of two candidates at most one succeeds.
- The leader renews (``renewTime``) every ``retry_period``. When it has not renewed for
  ``renew_deadline`` seconds, or it sees another holder, it stops leading at once and the
  controller is stopped before anyone else can take over (``renew_deadline`` is shorter
  than the lease duration).
- ``stop()`` releases the Lease (empty holder, duration 1 s) so another replica takes over
  within a retry period instead of a lease duration.

The official client's leaderelection package is not used: it blocks forever in
``run()``, cannot be stopped or release its lock, and uses the global client
configuration. Times are written as ``MicroTime`` (RFC 3339 with exactly six fractional
digits), which the API server requires; the generated models serialise datetimes with
``isoformat()``, which drops the digits when the microseconds are zero, so the Lease is
read and written as plain JSON through the official client's transport
(``cluster.apiclient.RawApi``). Followers jitter their retries (``cluster.workqueue.jittered``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from webhook.cluster.apiclient import CONFLICT, NOT_FOUND, RawApi, describe, leases_path
from webhook.cluster.workqueue import jittered
from webhook.config import Settings

log = logging.getLogger(__name__)


def micro_time(moment: datetime | None = None) -> str:
    """A MicroTime as the API server writes and requires it: 2006-01-02T15:04:05.000000Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``<pod name>_<random>``: unique per process, even for forked workers of one pod."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "pullsecret-injector"
    return f"{base}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """client-go's defaults for controllers (kube-controller-manager uses the same)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def of(cls, settings: Settings) -> LeaseTimings:
        """The timings `serve` runs with (--lease-duration-seconds and the rest)."""
        return cls(
            lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.lease_renew_deadline_seconds,
            retry_period=settings.lease_retry_period_seconds,
        )

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry_period < renew_deadline < lease_duration"
            )


@dataclass(frozen=True, slots=True)
class _Record:
    holder: str
    duration: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> _Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


class LeaderElector:
    """Campaigns for a Lease in a thread; calls back when leadership starts and stops.

    ``on_started`` and ``on_stopped`` run in the elector's thread and must return promptly
    (start or stop the controller's own threads). ``on_stopped`` is called exactly once
    after each ``on_started``: when the Lease is lost, or by ``stop()``.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        namespace: str,
        name: str,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        identity: str | None = None,
        timings: LeaseTimings | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = RawApi(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timings = timings or LeaseTimings()
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leading = False
        self._step_lock = threading.Lock()
        self._observed: _Record | None = None
        self._observed_at = 0.0  # monotonic time the observed record last changed
        self._deadline: float | None = None  # a leader's renew deadline (monotonic)
        self._path = leases_path(namespace)

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def observed_holder(self) -> str | None:
        return None if self._observed is None else self._observed.holder or None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LeaderElector.start() called twice")
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        log.info(
            "campaigning for leadership",
            extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity},
        )

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; a leader stops leading and (by default) releases the Lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timings.retry_period + 15.0)
        if self._leading:  # the thread did not finish: stop leading from here
            self._step_down("stopped")
        if release and self._observed is not None and self._observed.holder == self.identity:
            self._release()

    # ---- the loop -----------------------------------------------------------------------
    def _run(self) -> None:
        t = self.timings
        last_renew = 0.0
        while not self._stop.is_set():
            # A leader's round ends by its renew deadline, whatever the API server does
            # (client-go runs each renew under context.WithTimeout(RenewDeadline)): its
            # requests get only the time left, so that it steps down before the Lease can
            # be taken over (lease_duration after its last renewal).
            self._deadline = last_renew + t.renew_deadline if self._leading else None
            ok = self._try_acquire_or_renew()
            now = time.monotonic()
            if ok:
                last_renew = now
                if not self._leading:
                    self._leading = True
                    log.info(
                        "became leader",
                        extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity},
                    )
                    self._notify(True)
                    try:
                        self._on_started()
                    except Exception:
                        log.exception("starting the leader's work failed: stepping down")
                        self._step_down("on_started failed")
                        self._release()
            elif self._leading:
                other = self._observed is not None and self._observed.holder not in (
                    "",
                    self.identity,
                )
                if other or now - last_renew >= t.renew_deadline:
                    self._step_down("lease taken by another" if other else "renew deadline passed")
            # Followers jitter their retries (client-go: JitterFactor 1.2) so that replicas
            # started together do not hit the API server in lockstep.
            wait = t.retry_period if self._leading else jittered(t.retry_period, 0.2)
            self._stop.wait(wait)
        if self._leading:
            self._step_down("stopped")

    def _notify(self, leading: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(leading)
            except Exception:
                log.exception("leader change callback failed")

    def _step_down(self, why: str) -> None:
        with self._step_lock:
            if not self._leading:
                return
            self._leading = False
        log.warning(
            "stopped leading",
            extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity, "why": why},
        )
        self._notify(False)
        try:
            self._on_stopped()
        except Exception:
            log.exception("stopping the leader's work failed")

    # ---- one round: client-go's tryAcquireOrRenew ----------------------------------------
    def _timeout(self) -> tuple[float, float]:
        """(connect, read) of one Lease request; a leader's fit in what is left of its
        renew deadline (raises TimeoutError when nothing is left)."""
        t = self.timings.retry_period
        connect, read = t, max(t, self.timings.renew_deadline / 2)
        if self._deadline is None:
            return connect, read
        left = self._deadline - time.monotonic()
        if left <= 0.01:
            raise TimeoutError("renew deadline passed")
        return min(connect, left / 2), min(read, left / 2)

    def _try_acquire_or_renew(self) -> bool:
        now = micro_time()
        try:
            lease = self._api.request("GET", f"{self._path}/{self.name}", timeout=self._timeout())
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                log.info("reading the lease failed", extra={"error": describe(exc)})
                return False
            return self._create(now)
        except Exception as exc:  # connection errors, timeouts
            log.info("reading the lease failed", extra={"error": describe(exc)})
            return False
        record = _Record.of(lease)
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        held_by_other = record.holder not in ("", self.identity)
        if held_by_other and self._observed_at + record.duration > time.monotonic():
            return False
        mine = record.holder == self.identity
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timings.lease_duration),
            "acquireTime": record.acquire_time if mine and record.acquire_time else now,
            "renewTime": now,
            "leaseTransitions": record.transitions if mine else record.transitions + 1,
        }
        body = {**lease, "spec": {**(lease.get("spec") or {}), **spec}}
        updated = self._send("PUT", f"{self._path}/{self.name}", body, "updating")
        if updated is None:
            return False
        self._remember(updated)
        if not mine:
            log.info(
                "took over the lease",
                extra={"lease": f"{self.namespace}/{self.name}", "previous": record.holder},
            )
        return True

    def _create(self, now: str) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.timings.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        created = self._send("POST", self._path, body, "creating")
        if created is None:
            return False
        self._remember(created)
        return True

    def _send(
        self, method: str, path: str, body: Mapping[str, Any], doing: str
    ) -> Mapping[str, Any] | None:
        """One Lease write; None when it failed (a 409, another holder won, is not logged)."""
        try:
            result: Mapping[str, Any] = self._api.request(
                method, path, body=body, timeout=self._timeout()
            )
        except ApiException as exc:
            if exc.status != CONFLICT:
                log.info(f"{doing} the lease failed", extra={"error": describe(exc)})
            return None
        except Exception as exc:
            log.info(f"{doing} the lease failed", extra={"error": describe(exc)})
            return None
        return result

    def _remember(self, lease: Mapping[str, Any]) -> None:
        self._observed = _Record.of(lease)
        self._observed_at = time.monotonic()

    def _release(self) -> None:
        """Give the Lease up: empty holder and a one-second duration (client-go's release)."""
        self._deadline = None  # not leading any more: the usual timeouts
        now = micro_time()
        try:
            lease = self._api.request("GET", f"{self._path}/{self.name}", timeout=self._timeout())
            record = _Record.of(lease)
            if record.holder != self.identity:
                return
            spec = {
                **(lease.get("spec") or {}),
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            self._api.request(
                "PUT",
                f"{self._path}/{self.name}",
                body={**lease, "spec": spec},
                timeout=self._timeout(),
            )
            self._observed = None
            log.info("released the lease", extra={"lease": f"{self.namespace}/{self.name}"})
        except Exception as exc:
            log.info("releasing the lease failed", extra={"error": describe(exc)})
