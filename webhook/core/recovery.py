"""Stuck pods: which pods a registry secret could now unstick, and what to do about each.

Pure: no I/O, no clock, no Kubernetes client, no threads. Everything arrives as
arguments (the trimmed pods, the registry secrets of each namespace, the namespace labels,
what was handled already, the owners in backoff, "now"), and the answer is a `Plan` of
evict/event actions and the reasons the other pods were skipped. webhook/replication/recovery.py
carries plans out; tests/unit/core/test_recovery_plan.py holds the rules below to a table.

A pod is *stuck* when one of its containers or init containers waits in ``ErrImagePull``
or ``ImagePullBackOff``. The secrets that would unstick it are decided by the admission
decision itself (``core.injection.Decider``: the kubelet's keyring over the namespace's
registry secrets after the pod's own entries): the secrets admission would add *for the
images of the stuck containers*. Rules, in order (the first that applies wins):

- not stuck -> skip (not counted as stuck);
- terminating (``deletionTimestamp``) -> skip: it is going away already;
- namespace never served: ``kube-system``, the release namespace, extra excluded
  namespaces (the webhook's own exclusions: a replacement there would not be injected),
  or labelled ``pullsecret-injector.io/inject=disabled`` -> skip;
- pod annotated ``pullsecret-injector.io/inject: "false"`` -> skip;
- a static pod's mirror (annotation ``kubernetes.io/config.mirror``) -> skip: its kubelet
  runs it from a manifest file, API secrets never reach it, and deleting the mirror only
  makes the kubelet create it again (``kubectl drain`` skips mirror pods for the same
  reason);
- any regular container ready -> skip: a pod serving traffic is never touched (init
  containers do not count: the kubelet reports one that finished as ready, and a pod
  whose app container cannot pull serves nothing);
- handled already (its uid) -> skip: each pod is acted on once;
- no secret of its namespace serves a stuck image, or every one that does is named by
  the pod already -> skip ("nothing to add" / "already named": not our problem);
- owned by a controller (an ``ownerReferences`` entry with ``controller: true``) whose
  backoff holds this pod (a replacement created after our last eviction of that owner,
  before the backoff expires) -> skip;
- owned by a controller and mode ``evict`` -> EVICT (the controller recreates the pod,
  admission injects the secret), except a Job's pod;
- otherwise (a bare pod, a Job's pod, or mode ``event``) -> EVENT (a bare pod is never
  deleted; the Job controller counts a deleted pod as a failed attempt, so an eviction
  would spend the Job's ``backoffLimit`` and may fail it: job_controller.go isPodFailed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from webhook.core.injection import OPT_OUT_ANNOTATION, Decider
from webhook.core.model import RegistrySecret

PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff"})
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # what the kubelet sets on a static pod's
NOT_EVICTED_OWNERS = frozenset({"Job"})  # an eviction counts as a failed attempt
INJECT_LABEL = "pullsecret-injector.io/inject"
INJECT_DISABLED = "disabled"
ALWAYS_EXCLUDED = frozenset({"kube-system"})


class Mode(StrEnum):
    EVICT = "evict"
    EVENT = "event"
    OFF = "off"


class ActionKind(StrEnum):
    EVICT = "evict"
    EVENT = "event"


class SkipReason(StrEnum):
    TERMINATING = "terminating"
    NAMESPACE_EXCLUDED = "namespace_excluded"
    OPTED_OUT = "opted_out"
    STATIC = "static_pod"
    READY = "ready"
    HANDLED = "handled"
    NOTHING_TO_ADD = "nothing_to_add"
    ALREADY_NAMED = "already_named"
    OWNER_BACKOFF = "owner_backoff"


# ---- the trimmed pod ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """The controller of a pod (``ownerReferences`` entry with ``controller: true``)."""

    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Container:
    """One container or init container: what it runs and where it stands."""

    field: str  # "initContainers" or "containers"
    name: str
    image: str
    waiting: str | None  # the waiting reason from the status, if it waits
    ready: bool


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What recovery keeps of a pod: a few hundred bytes, never its whole object."""

    namespace: str
    name: str
    uid: str
    created: float  # creationTimestamp, epoch seconds (0 when unknown)
    owner: Owner | None
    opted_out: bool  # annotation pullsecret-injector.io/inject: "false"
    terminating: bool
    mirror: bool  # a static pod's mirror (annotation kubernetes.io/config.mirror)
    pull_secrets: tuple[str, ...]
    containers: tuple[Container, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def stuck(self) -> tuple[Container, ...]:
        """The containers waiting on a failed image pull."""
        return tuple(c for c in self.containers if c.waiting in PULL_FAILURES)

    @property
    def any_ready(self) -> bool:
        """A regular container is ready (an init container that finished is reported
        ready by the kubelet: prober_manager.go UpdatePodStatus)."""
        return any(c.ready for c in self.containers if c.field == "containers")


Intern = Callable[[str], str]


def _same(value: str) -> str:
    return value


def _s(value: Any, intern: Intern) -> str:
    """A string through `intern` (the pod watch passes sys.intern: pods of one workload
    share names, images and owner kinds), "" for anything else."""
    return intern(value) if isinstance(value, str) else ""


def _epoch(stamp: Any) -> float:
    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _controller(meta: Mapping[str, Any], intern: Intern) -> Owner | None:
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return Owner(
                _s(ref.get("kind"), intern), _s(ref.get("name"), intern), _s(ref.get("uid"), intern)
            )
    return None


def _statuses(
    status: Mapping[str, Any], key: str, intern: Intern
) -> dict[str, tuple[str | None, bool]]:
    out: dict[str, tuple[str | None, bool]] = {}
    items = status.get(key)
    for st in items if isinstance(items, list) else ():
        if not isinstance(st, Mapping) or not isinstance(st.get("name"), str):
            continue
        state = st.get("state")
        waiting = state.get("waiting") if isinstance(state, Mapping) else None
        reason = waiting.get("reason") if isinstance(waiting, Mapping) else None
        out[st["name"]] = (
            _s(reason, intern) if isinstance(reason, str) else None,
            st.get("ready") is True,
        )
    return out


def pod_info(obj: Mapping[str, Any], intern: Intern = _same) -> PodInfo | None:
    """A Pod object (API JSON) trimmed to what recovery needs; None without name or uid.

    Its strings go through `intern` (cluster/pods.py passes ``sys.intern``)."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    if not (isinstance(name, str) and isinstance(namespace, str) and isinstance(uid, str)):
        return None
    annotations = meta.get("annotations")
    opted_out = isinstance(annotations, Mapping) and annotations.get(OPT_OUT_ANNOTATION) == "false"
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(spec, Mapping) and isinstance(status, Mapping)
    containers: list[Container] = []
    for fld, status_key in (
        ("initContainers", "initContainerStatuses"),
        ("containers", "containerStatuses"),
    ):
        states = _statuses(status, status_key, intern)
        items = spec.get(fld)
        for c in items if isinstance(items, list) else ():
            if not isinstance(c, Mapping):
                continue
            cname = _s(c.get("name"), intern)
            waiting, ready = states.get(cname, (None, False))
            containers.append(
                Container(_s(fld, intern), cname, _s(c.get("image"), intern), waiting, ready)
            )
    entries = spec.get("imagePullSecrets")
    pull_secrets = tuple(
        _s(e["name"], intern)
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, Mapping) and isinstance(e.get("name"), str)
    )
    return PodInfo(
        namespace=_s(namespace, intern),
        name=name,
        uid=uid,
        created=_epoch(meta.get("creationTimestamp")),
        owner=_controller(meta, intern),
        opted_out=opted_out,
        terminating=meta.get("deletionTimestamp") is not None,
        mirror=isinstance(annotations, Mapping) and MIRROR_ANNOTATION in annotations,
        pull_secrets=pull_secrets,
        containers=tuple(containers),
    )


def as_pod_object(pod: PodInfo) -> dict[str, Any]:
    """The pod as the admission decision reads it (spec images and entries, annotations)."""
    spec: dict[str, Any] = {}
    for c in pod.containers:
        spec.setdefault(c.field, []).append({"name": c.name, "image": c.image})
    if pod.pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pod.pull_secrets]
    return {"metadata": {"name": pod.name, "namespace": pod.namespace}, "spec": spec}


# ---- configuration, backoff and the plan -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    mode: Mode
    release_namespace: str
    excluded_namespaces: frozenset[str] = frozenset()

    def excluded(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        return (
            namespace in ALWAYS_EXCLUDED
            or namespace == self.release_namespace
            or namespace in self.excluded_namespaces
            or (labels or {}).get(INJECT_LABEL) == INJECT_DISABLED
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """One owner's backoff: pods it created at or after `since` wait until `until`.

    Evictions of an owner come in waves. The first eviction once its backoff is over
    opens one (`since`); the replacements created from then on are held until `until`,
    while the siblings stuck since before it are evicted in the same wave, which leaves it
    as it is (the cluster-wide rate limit may spread a wave over minutes).
    """

    since: float  # when the current wave began (epoch seconds)
    until: float  # epoch seconds
    failures: int  # waves opened by a replacement that came back stuck, plus one

    def holds(self, pod: PodInfo, now: float) -> bool:
        # creationTimestamp has whole seconds: a pod created in the second of the eviction
        # counts as a replacement.
        return pod.created >= int(self.since) and now < self.until


def next_backoff(
    previous: Backoff | None, pod: PodInfo, now: float, base: float, cap: float
) -> Backoff:
    """The owner's backoff after evicting `pod` at `now`.

    Within a wave (the backoff still running: `pod` was not held, so it is a sibling from
    before the wave) nothing changes. Otherwise a new wave begins; begun by a replacement
    of the previous wave (created after it began) it doubles the delay, up to `cap`.
    """
    if previous is not None and now < previous.until:
        return previous
    failures = 1
    if previous is not None:
        replacement = pod.created >= int(previous.since)
        failures = previous.failures + 1 if replacement else previous.failures
    delay = min(cap, base * 2.0 ** min(failures - 1, 30))
    return Backoff(since=now, until=now + delay, failures=failures)


@dataclass(frozen=True, slots=True)
class Action:
    pod: PodInfo
    kind: ActionKind
    secrets: tuple[str, ...]  # what the pod lacks (sorted)
    images: tuple[str, ...]  # the stuck images those secrets serve
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    pod: PodInfo
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    skipped: tuple[Skip, ...]
    stuck: int  # pods waiting on a failed pull, whatever happens to them

    def of(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    def skipped_for(self, reason: SkipReason) -> list[PodInfo]:
        return [s.pod for s in self.skipped if s.reason is reason]


SecretsIn = Callable[[str], Mapping[str, RegistrySecret]]


def _missing(
    pod: PodInfo, secrets: Mapping[str, RegistrySecret], decider: Decider
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(secrets to add, stuck images they serve, whether a named secret serves them already)."""
    stuck = {(c.field, c.name) for c in pod.stuck}
    decision = decider.decide(as_pod_object(pod), pod.namespace, secrets)
    add: set[str] = set()
    images: list[str] = []
    named = False
    for image in decision.images:
        if (image.field, image.container) not in stuck:
            continue
        if image.added:
            add.update(image.added)
            images.append(image.image)
        elif image.used:
            named = True
    return tuple(sorted(add)), tuple(dict.fromkeys(images)), named


def plan(
    pods: Iterable[PodInfo],
    secrets_in: SecretsIn,
    namespace_labels: Callable[[str], Mapping[str, str] | None],
    config: Config,
    decider: Decider,
    *,
    handled: Callable[[str], bool] = lambda _uid: False,
    backoff: Mapping[str, Backoff] | None = None,
    now: float = 0.0,
) -> Plan:
    """Actions for the stuck pods among `pods` (see the module's rules)."""
    actions: list[Action] = []
    skipped: list[Skip] = []
    stuck_count = 0
    owners = backoff or {}
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name, p.uid)):
        if not pod.stuck:
            continue
        stuck_count += 1

        def skip(reason: SkipReason, pod: PodInfo = pod) -> None:
            skipped.append(Skip(pod, reason))

        if pod.terminating:
            skip(SkipReason.TERMINATING)
            continue
        if config.excluded(pod.namespace, namespace_labels(pod.namespace)):
            skip(SkipReason.NAMESPACE_EXCLUDED)
            continue
        if pod.opted_out:
            skip(SkipReason.OPTED_OUT)
            continue
        if pod.mirror:
            skip(SkipReason.STATIC)
            continue
        if pod.any_ready:
            skip(SkipReason.READY)
            continue
        if handled(pod.uid):
            skip(SkipReason.HANDLED)
            continue
        add, images, named = _missing(pod, secrets_in(pod.namespace), decider)
        if not add:
            skip(SkipReason.ALREADY_NAMED if named else SkipReason.NOTHING_TO_ADD)
            continue
        owner = pod.owner
        held = owners.get(owner.uid) if owner is not None else None
        if held is not None and held.holds(pod, now):
            skip(SkipReason.OWNER_BACKOFF)
            continue
        lacks = f"lacks {', '.join(add)} for {', '.join(images)}"
        if owner is None:
            kind, why = ActionKind.EVENT, "a bare pod is never deleted"
        elif owner.kind in NOT_EVICTED_OWNERS:
            kind, why = (
                ActionKind.EVENT,
                f"evicting a {owner.kind}'s pod would count as a failed attempt",
            )
        elif config.mode is Mode.EVICT:
            kind, why = ActionKind.EVICT, f"{owner.kind} recreates it"
        else:
            kind, why = ActionKind.EVENT, "recovery mode is event"
        actions.append(Action(pod, kind, add, images, f"{lacks}; {why}"))
    return Plan(tuple(actions), tuple(skipped), stuck_count)
