"""What stuck-pod recovery does to a pod: an eviction or an Event, rate limited.

``RecoveryActions.act(action)`` carries out one planned action (``core.recovery``) and
says what the controller (``replication/recovery.py``) should remember of it:

- EVICT: ``POST pods/{name}/eviction`` (policy/v1) with the pod's uid as precondition, so
  a replacement that took the name is never evicted in its place. The Eviction API
  honours PodDisruptionBudgets (429: looked at again later); 404/409 mean the pod is gone
  or replaced (done). Every eviction is recorded as an Event ``PullSecretRecovery``.
- EVENT: a Warning Event ``MissingPullSecret`` on the pod (a bare pod, a Job's pod, or
  mode event).

Two token buckets (``cluster/workqueue.py``): a cluster-wide one for evictions
(``evictions_per_minute``, a minute's worth at once) and one for Events. A pod that finds
no token is looked at again when one is due. Each action is logged (pod, owner, images,
secret names: never a credential) and counted (``pullsecret_injector_recovery_actions``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.cluster.apiclient import (
    CONFLICT,
    NOT_FOUND,
    RawApi,
    describe,
    event_object,
    events_path,
    pod_path,
)
from webhook.cluster.workqueue import TokenBucket
from webhook.core.recovery import NOT_EVICTED_OWNERS, Action, ActionKind
from webhook.metrics import Metrics

log = logging.getLogger(__name__)

EVICTED_REASON = "PullSecretRecovery"
MISSING_REASON = "MissingPullSecret"
TOO_MANY_REQUESTS = 429


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one action.

    ``done``: the pod is handled (never acted on again). Otherwise it is looked at again
    after ``retry_in`` seconds (a token is due then), or after its own growing retry delay
    when ``retry_in`` is None. ``evicted``: its owner's backoff moves on.
    """

    done: bool
    retry_in: float | None = None
    evicted: bool = False


_RETRY = Outcome(done=False)
_DONE = Outcome(done=True)


class RecoveryActions:
    """Evictions and Events on stuck pods, through the two rate limits."""

    def __init__(
        self,
        api: RawApi,
        metrics: Metrics,
        identity: str,
        *,
        evictions: TokenBucket,
        events: TokenBucket,
        request_timeout: float,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._identity = identity
        self._evictions = evictions
        self._events = events
        self._timeout = (request_timeout, request_timeout)

    def act(self, action: Action) -> Outcome:
        limiter = self._evictions if action.kind is ActionKind.EVICT else self._events
        wait = limiter.try_acquire()
        if wait > 0:  # rate limited: looked at again when a token is due
            return Outcome(done=False, retry_in=wait)
        if action.kind is ActionKind.EVICT:
            return self._evict(action)
        return self._warn(action)

    @staticmethod
    def fields(action: Action) -> dict[str, Any]:
        """The log fields of an action: names only, never a credential."""
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

    def _evict(self, action: Action) -> Outcome:
        pod = action.pod
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            # exactly the pod planned for: not a replacement that took its name
            "deleteOptions": {"preconditions": {"uid": pod.uid}},
        }
        path = pod_path(pod.namespace, pod.name, "eviction")
        try:
            self._api.request("POST", path, body=body, timeout=self._timeout)
        except ApiException as exc:
            if exc.status == TOO_MANY_REQUESTS:
                result, outcome = "pdb_blocked", _RETRY  # a PodDisruptionBudget says not now
            elif exc.status in (NOT_FOUND, CONFLICT):
                result, outcome = "gone", _DONE  # deleted, or replaced under its name
            else:
                result, outcome = "error", _RETRY
            self._metrics.recovery_actions.labels("evict", result).inc()
            log.info(
                "stuck pod not evicted",
                extra={**self.fields(action), "result": result, "status": exc.status},
            )
            return outcome
        except Exception as exc:
            self._metrics.recovery_actions.labels("evict", "error").inc()
            log.warning(
                "stuck pod not evicted",
                extra={**self.fields(action), "result": "error", "error": type(exc).__name__},
            )
            return _RETRY
        self._metrics.recovery_actions.labels("evict", "ok").inc()
        log.info("stuck pod evicted: its controller recreates it", extra=self.fields(action))
        owner = pod.owner.kind if pod.owner is not None else "owner"
        self._post_event(
            action,
            "Normal",
            EVICTED_REASON,
            f"Evicted by pullsecret-injector: image {', '.join(action.images)} can now be "
            f"pulled with registry secret {', '.join(action.secrets)}, which this pod does "
            f"not name; its {owner} recreates it with the secret injected.",
        )
        return Outcome(done=True, evicted=True)

    def _warn(self, action: Action) -> Outcome:
        pod = action.pod
        if pod.owner is None:
            why = "A bare pod is never deleted: delete and recreate it to get the secret."
        elif pod.owner.kind in NOT_EVICTED_OWNERS:
            why = (
                f"Not evicted: its {pod.owner.kind} would count that as a failed attempt; "
                "delete the pod if an attempt may be spent, or run the Job again."
            )
        else:
            why = (
                f"recovery.mode is event: delete the pod and its {pod.owner.kind} "
                "recreates it with the secret."
            )
        message = (
            f"Image {', '.join(action.images)} cannot be pulled; registry secret "
            f"{', '.join(action.secrets)} in this namespace can pull it, but this pod does "
            f"not name it and a pod's imagePullSecrets cannot change. {why}"
        )
        if self._post_event(action, "Warning", MISSING_REASON, message):
            self._metrics.recovery_actions.labels("event", "ok").inc()
            log.info("stuck pod reported (Event)", extra=self.fields(action))
            return _DONE
        self._metrics.recovery_actions.labels("event", "error").inc()
        return _RETRY

    def _post_event(self, action: Action, event_type: str, reason: str, message: str) -> bool:
        pod = action.pod
        involved = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        }
        body = event_object(
            involved,
            reason=reason,
            message=message,
            event_type=event_type,
            action="Evict" if action.kind is ActionKind.EVICT else "Report",
            identity=self._identity,
            now=time.time(),
        )
        try:
            self._api.request("POST", events_path(pod.namespace), body=body, timeout=self._timeout)
        except Exception as exc:
            log.info(
                "could not record an Event on a pod",
                extra={"namespace": pod.namespace, "pod": pod.name, "error": describe(exc)},
            )
            return False
        return True
