"""The recovery planner: stuck pods + registry secrets -> evict / event / skip, as a table."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from webhook.core.injection import Decider, Policy
from webhook.core.model import RegistrySecret, secret_from_object
from webhook.core.recovery import (
    ActionKind,
    Backoff,
    Config,
    Mode,
    PodInfo,
    SkipReason,
    as_pod_object,
    next_backoff,
    plan,
    pod_info,
)

REL = "psi-system"
REG = "registry.example.com"
IMAGE = f"{REG}/team/app:1"
OTHER = "other.example.org/app:1"
T0 = 1_700_000_000.0  # "now" of the table
CREATED = "2023-11-14T22:00:00Z"  # before T0
LATER = "2023-11-14T22:13:30Z"  # T0 + 10 s


def secret(namespace: str, name: str, *hosts: str, labels: Mapping[str, str] | None = None) -> Any:
    token = base64.b64encode(b"user:pw").decode()
    raw = json.dumps({"auths": {h: {"auth": token} for h in hosts}}).encode()
    made = secret_from_object(
        {
            "metadata": {"namespace": namespace, "name": name, "labels": dict(labels or {})},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(raw).decode()},
        }
    )
    assert made is not None
    return made


def pod(
    name: str = "web-1",
    namespace: str = "team-a",
    *,
    images: tuple[str, ...] = (IMAGE,),
    waiting: tuple[str | None, ...] = ("ImagePullBackOff",),
    ready: tuple[bool, ...] = (),
    init: tuple[tuple[str, str | None], ...] = (),  # (image, waiting reason)
    pull_secrets: tuple[str, ...] = (),
    owner: str | None = "ReplicaSet",
    owner_uid: str = "rs-uid",
    annotations: Mapping[str, str] | None = None,
    terminating: bool = False,
    created: str = CREATED,
    controller: bool = True,
    init_ready: bool = False,  # the kubelet reports an init container that finished as ready
) -> dict[str, Any]:
    """A Pod object as the API server sends it (status included)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "creationTimestamp": created,
        "annotations": dict(annotations or {}),
        "managedFields": [{"manager": "kube-controller-manager"}],
    }
    if owner is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner, "name": "web", "uid": owner_uid,
             "controller": controller, "blockOwnerDeletion": True},
        ]  # fmt: skip
    if terminating:
        meta["deletionTimestamp"] = "2023-11-14T22:13:00Z"
    containers = [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]
    inits = [{"name": f"i{i}", "image": im} for i, (im, _) in enumerate(init)]

    def status_of(name: str, reason: str | None, is_ready: bool) -> dict[str, Any]:
        state = {"waiting": {"reason": reason, "message": "x"}} if reason else {"running": {}}
        return {"name": name, "ready": is_ready, "state": state, "image": "", "imageID": ""}

    status = {
        "phase": "Pending",
        "containerStatuses": [
            status_of(
                c["name"],
                waiting[i] if i < len(waiting) else None,
                ready[i] if i < len(ready) else False,
            )
            for i, c in enumerate(containers)
        ],
        "initContainerStatuses": [
            status_of(c["name"], init[i][1], init_ready) for i, c in enumerate(inits)
        ],
    }
    spec: dict[str, Any] = {"containers": containers}
    if inits:
        spec["initContainers"] = inits
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    return {"metadata": meta, "spec": spec, "status": status}


SECRETS = {
    "team-a": [secret("team-a", "reg", REG)],
    "team-b": [secret("team-b", "reg", REG), secret("team-b", "reg2", REG)],
    "optout": [secret("optout", "reg", REG)],
    "kube-system": [secret("kube-system", "reg", REG)],
    REL: [secret(REL, "reg", REG)],
    "skipped": [secret("skipped", "reg", REG)],
    "gold": [
        secret("gold", "gold-reg", REG, labels={"tier": "gold"}),
        secret("gold", "plain-reg", REG),
    ],
}
LABELS = {
    "team-a": {},
    "team-b": {},
    "empty": {},
    "optout": {"pullsecret-injector.io/inject": "disabled"},
    "kube-system": {},
    REL: {},
    "skipped": {},
    "gold": {},
}
EVICT, EVENT = "evict", "event"


@dataclass
class Case:
    id: str
    pods: list[dict[str, Any]]
    expect: dict[str, str] = field(default_factory=dict)  # pod name -> action or skip reason
    secrets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pod name -> secrets
    mode: Mode = Mode.EVICT
    handled: frozenset[str] = frozenset()
    backoff: dict[str, Backoff] = field(default_factory=dict)
    policy: Policy = field(default_factory=lambda: Policy.build(None))
    stuck: int | None = None


CASES = [
    Case(
        "owned pod in ImagePullBackOff whose image a new secret serves: evicted",
        [pod()],
        expect={"web-1": EVICT},
        secrets={"web-1": ("reg",)},
    ),
    Case("ErrImagePull counts as stuck", [pod(waiting=("ErrImagePull",))], {"web-1": EVICT}),
    Case(
        "a bare pod gets an Event, never an eviction",
        [pod(owner=None)],
        expect={"web-1": EVENT},
    ),
    Case(
        "an ownerReference that is not the controller does not make a pod owned",
        [pod(controller=False)],
        expect={"web-1": EVENT},
    ),
    Case(
        "StatefulSet and DaemonSet pods are evicted like ReplicaSet pods",
        [pod("s", owner="StatefulSet"), pod("d", owner="DaemonSet")],
        expect={"s": EVICT, "d": EVICT},
    ),
    Case(
        "a Job's pod gets an Event: the Job controller counts an evicted pod as a failure",
        [pod("j", owner="Job")],
        expect={"j": EVENT},
    ),
    Case(
        "a static pod's mirror is left alone: API secrets never reach a static pod",
        [pod(owner="Node", annotations={"kubernetes.io/config.mirror": "0123abcd"})],
        expect={"web-1": "static_pod"},
    ),
    Case(
        "an init container that finished (reported ready) does not protect the pod",
        [pod(init=(("busybox", None),), init_ready=True)],
        expect={"web-1": EVICT},
    ),
    Case(
        "mode event: owned pods get an Event too",
        [pod(), pod("bare", owner=None)],
        expect={"web-1": EVENT, "bare": EVENT},
        mode=Mode.EVENT,
    ),
    Case(
        "a stuck init container counts",
        [pod(images=("busybox",), waiting=(None,), init=((IMAGE, "ImagePullBackOff"),))],
        expect={"web-1": EVICT},
    ),
    Case(
        "other waiting reasons are not stuck (not counted)",
        [
            pod("a", waiting=("ContainerCreating",)),
            pod("b", waiting=("CrashLoopBackOff",)),
            pod("c", waiting=("InvalidImageName",)),
            pod("d", waiting=(None,)),
        ],
        stuck=0,
    ),
    Case(
        "a pod with a ready container is left alone, even if another is stuck",
        [pod(images=("busybox", IMAGE), waiting=(None, "ImagePullBackOff"), ready=(True, False))],
        expect={"web-1": "ready"},
    ),
    Case(
        "a running but not ready container does not protect the pod",
        [pod(images=("busybox", IMAGE), waiting=(None, "ImagePullBackOff"), ready=(False,))],
        expect={"web-1": EVICT},
    ),
    Case(
        "pod opted out by annotation",
        [pod(annotations={"pullsecret-injector.io/inject": "false"})],
        expect={"web-1": "opted_out"},
    ),
    Case(
        "an annotation with another value does not opt out",
        [pod(annotations={"pullsecret-injector.io/inject": "true"})],
        expect={"web-1": EVICT},
    ),
    Case(
        "namespaces the webhook never serves: opted out, kube-system, release, configured",
        [
            pod(namespace="optout"),
            pod(namespace="kube-system"),
            pod(namespace=REL),
            pod(namespace="skipped"),
        ],
        expect={"web-1": "namespace_excluded"},
        stuck=4,
    ),
    Case(
        "the pod names the secret already: not our problem (wrong password, say)",
        [pod(pull_secrets=("reg",))],
        expect={"web-1": "already_named"},
    ),
    Case(
        "names one serving secret, not another that serves too: it would get that one",
        [pod(namespace="team-b", pull_secrets=("reg",))],
        expect={"web-1": EVICT},
        secrets={"web-1": ("reg2",)},
    ),
    Case(
        "names an unrelated secret: the serving one is still missing",
        [pod(pull_secrets=("someone-elses",))],
        expect={"web-1": EVICT},
        secrets={"web-1": ("reg",)},
    ),
    Case(
        "every serving secret is named in the action, sorted",
        [pod(namespace="team-b")],
        expect={"web-1": EVICT},
        secrets={"web-1": ("reg", "reg2")},
    ),
    Case(
        "names every serving secret: left alone",
        [pod(namespace="team-b", pull_secrets=("reg2", "reg"))],
        expect={"web-1": "already_named"},
    ),
    Case(
        "no secret of the namespace serves the stuck image",
        [pod(images=(OTHER,))],
        expect={"web-1": "nothing_to_add"},
    ),
    Case(
        "a namespace without registry secrets",
        [pod(namespace="empty")],
        expect={"web-1": "nothing_to_add"},
    ),
    Case(
        "only the stuck container's image counts: a served image that pulled is not a reason",
        [pod(images=(IMAGE, OTHER), waiting=(None, "ImagePullBackOff"))],
        expect={"web-1": "nothing_to_add"},
    ),
    Case(
        "the secret selector narrows candidates as at admission",
        [pod(namespace="gold")],
        expect={"web-1": EVICT},
        secrets={"web-1": ("gold-reg",)},
        policy=Policy.build("tier=gold"),
    ),
    Case(
        "a pod handled already (by uid) is not acted on again",
        [pod(), pod("web-2")],
        expect={"web-1": "handled", "web-2": EVICT},
        handled=frozenset({"uid-team-a-web-1"}),
    ),
    Case(
        "terminating pods are going away already",
        [pod(terminating=True)],
        expect={"web-1": "terminating"},
    ),
    Case(
        "owner in backoff: a replacement created after the last eviction waits",
        [pod(created=LATER)],
        expect={"web-1": "owner_backoff"},
        backoff={"rs-uid": Backoff(since=T0, until=T0 + 60, failures=1)},
    ),
    Case(
        "owner in backoff: a sibling stuck since before the eviction is still evicted",
        [pod(created=CREATED)],
        expect={"web-1": EVICT},
        backoff={"rs-uid": Backoff(since=T0, until=T0 + 60, failures=1)},
    ),
    Case(
        "owner backoff expired: the replacement is evicted",
        [pod(created=LATER)],
        expect={"web-1": EVICT},
        backoff={"rs-uid": Backoff(since=T0 - 120, until=T0 - 1, failures=1)},
    ),
    Case(
        "another owner's backoff does not hold this pod",
        [pod(created=LATER)],
        expect={"web-1": EVICT},
        backoff={"other-uid": Backoff(since=T0, until=T0 + 60, failures=1)},
    ),
    Case(
        "rule order: ready beats everything after it (handled, backoff)",
        [pod(images=("busybox", IMAGE), waiting=(None, "ErrImagePull"), ready=(True,))],
        expect={"web-1": "ready"},
        handled=frozenset({"uid-team-a-web-1"}),
    ),
]


def _run(case: Case) -> Any:
    store: dict[str, dict[str, RegistrySecret]] = {
        ns: {s.name: s for s in items} for ns, items in SECRETS.items()
    }
    infos = [pod_info(p) for p in case.pods]
    assert all(i is not None for i in infos)
    return plan(
        [i for i in infos if i is not None],
        lambda ns: store.get(ns, {}),
        LABELS.get,
        Config(case.mode, REL, frozenset({"skipped"})),
        Decider(case.policy),
        handled=lambda uid: uid in case.handled,
        backoff=case.backoff,
        now=T0 + 30,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    result = _run(case)
    got: dict[str, str] = {}
    for action in result.actions:
        got[action.pod.name] = action.kind.value
    for skip in result.skipped:
        assert got.setdefault(skip.pod.name, skip.reason.value) == skip.reason.value
    assert got == case.expect
    for action in result.actions:
        if action.pod.name in case.secrets:
            assert action.secrets == case.secrets[action.pod.name]
        assert action.images and action.secrets
    expected_stuck = len(case.pods) if case.stuck is None else case.stuck
    assert result.stuck == expected_stuck


def test_every_skip_reason_and_action_has_a_case() -> None:
    seen = {v for c in CASES for v in c.expect.values()}
    assert seen >= {r.value for r in SkipReason} | {k.value for k in ActionKind}


def test_action_says_which_secret_for_which_image() -> None:
    (action,) = _run(Case("", [pod(owner=None)])).actions
    assert action.images == (IMAGE,)
    assert action.secrets == ("reg",)
    assert "reg" in action.reason and IMAGE in action.reason and "bare pod" in action.reason


# ---- the trimmed pod -------------------------------------------------------------------------


def test_pod_info_keeps_only_what_recovery_needs() -> None:
    obj = pod(
        images=("busybox", IMAGE),
        waiting=(None, "ImagePullBackOff"),
        ready=(True, False),
        init=(("init:1", None),),
        pull_secrets=("a", "b"),
        annotations={"pullsecret-injector.io/inject": "false", "big": "x" * 10_000},
    )
    info = pod_info(obj)
    assert info is not None
    assert (info.namespace, info.name, info.uid) == ("team-a", "web-1", "uid-team-a-web-1")
    assert info.owner is not None and (info.owner.kind, info.owner.uid) == ("ReplicaSet", "rs-uid")
    assert info.opted_out and not info.terminating
    assert info.pull_secrets == ("a", "b")
    assert [(c.field, c.name, c.image, c.waiting, c.ready) for c in info.containers] == [
        ("initContainers", "i0", "init:1", None, False),
        ("containers", "c0", "busybox", None, True),
        ("containers", "c1", IMAGE, "ImagePullBackOff", False),
    ]
    assert info.created == pytest.approx(T0 - 800)
    assert "x" * 100 not in repr(info)  # annotations other than the opt-out are dropped


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"metadata": None},
        {"metadata": {"name": "x", "namespace": "y"}},  # no uid
        {"metadata": {"name": 1, "namespace": "y", "uid": "u"}},
    ],
)
def test_pod_info_refuses_objects_without_identity(broken: dict[str, Any]) -> None:
    assert pod_info(broken) is None


def test_pod_info_tolerates_odd_shapes() -> None:
    info = pod_info(
        {
            "metadata": {
                "name": "p",
                "namespace": "n",
                "uid": "u",
                "creationTimestamp": "bad",
                "ownerReferences": "nope",
                "annotations": None,
            },
            "spec": {"containers": [None, {"name": "c", "image": 3}], "imagePullSecrets": [{}]},
            "status": {"containerStatuses": [{"name": "c", "state": None}, "junk"]},
        }
    )
    assert info is not None
    assert info.created == 0.0 and info.owner is None and info.pull_secrets == ()
    assert [(c.name, c.image, c.waiting) for c in info.containers] == [("c", "", None)]


def test_as_pod_object_is_what_the_decision_reads() -> None:
    info = pod_info(pod(pull_secrets=("x",), init=(("i:1", None),)))
    assert info is not None
    assert as_pod_object(info)["spec"] == {
        "initContainers": [{"name": "i0", "image": "i:1"}],
        "containers": [{"name": "c0", "image": IMAGE}],
        "imagePullSecrets": [{"name": "x"}],
    }


# ---- backoff ---------------------------------------------------------------------------------


def _info(created: str) -> PodInfo:
    info = pod_info(pod(created=created))
    assert info is not None
    return info


def test_backoff_doubles_for_replacements_and_is_capped() -> None:
    first = next_backoff(None, _info(CREATED), T0, base=60, cap=300)
    assert (first.failures, first.until - T0) == (1, 60)
    replacement = _info(LATER)  # created after the first eviction
    second = next_backoff(first, replacement, T0 + 100, base=60, cap=300)
    assert (second.failures, second.until - (T0 + 100)) == (2, 120)
    third = next_backoff(
        Backoff(since=T0, until=T0 + 1, failures=5), replacement, T0 + 200, base=60, cap=300
    )
    assert (third.failures, third.until - (T0 + 200)) == (6, 300)


def test_backoff_does_not_grow_for_siblings_evicted_in_one_wave() -> None:
    first = next_backoff(None, _info(CREATED), T0, base=60, cap=300)
    sibling = next_backoff(first, _info(CREATED), T0 + 50, base=60, cap=300)
    assert sibling == first  # the wave and what it holds stay as they were


def test_a_wave_spread_by_the_rate_limit_still_doubles_the_backoff() -> None:
    """20 replicas whose replacements keep coming back stuck (admission down), evicted at
    the default rate (10 a minute, burst 10): each wave after a replacement doubles the
    owner's delay up to the cap, however the rate limit spreads the evictions of a wave
    (a moving `since` once made every replacement look like a sibling: 3,600 evictions in
    6 hours, the whole cluster's budget)."""
    from webhook.cluster.workqueue import TokenBucket  # noqa: PLC0415

    clock = [T0]
    bucket = TokenBucket(10 / 60, 10, clock=lambda: clock[0])
    pods = [_info(CREATED) for _ in range(20)]
    pods = [replace(p, name=f"web-{i}", uid=f"uid-{i}") for i, p in enumerate(pods)]
    store = {"team-a": {s.name: s for s in SECRETS["team-a"]}}
    backoff: dict[str, Backoff] = {}
    evictions = 0
    while clock[0] < T0 + 6 * 3600:
        result = plan(
            pods, lambda ns: store.get(ns, {}), LABELS.get, Config(Mode.EVICT, REL),
            Decider(Policy()), backoff=dict(backoff), now=clock[0],
        )  # fmt: skip
        for action in result.of(ActionKind.EVICT):
            if bucket.try_acquire() > 0:
                continue  # no token: looked at again later
            evictions += 1
            backoff["rs-uid"] = next_backoff(backoff.get("rs-uid"), action.pod, clock[0], 60, 3600)
            replaced = replace(
                action.pod, uid=f"{action.pod.uid}+", created=float(int(clock[0]) + 1)
            )
            pods = [replaced if p.name == action.pod.name else p for p in pods]
        clock[0] += 5.0
    assert backoff["rs-uid"].failures >= 7  # 1, 2, 4 ... 64 minutes: capped at the hour
    assert evictions <= 20 * 12  # a wave of 20 at most every hour once capped


# ---- the controller's rate limit (pure given a clock) ---------------------------------------


def test_rate_limit_gives_a_burst_then_one_token_per_interval() -> None:
    from webhook.cluster.workqueue import TokenBucket  # noqa: PLC0415

    now = [0.0]
    limit = TokenBucket(10 / 60, 10, clock=lambda: now[0])  # the default: 10 a minute
    assert [limit.try_acquire() for _ in range(10)] == [0.0] * 10
    assert limit.try_acquire() == pytest.approx(6.0)  # the 11th waits one interval
    now[0] = 5.9
    assert limit.try_acquire() == pytest.approx(0.1)
    now[0] = 6.0
    assert limit.try_acquire() == 0.0
    now[0] = 600.0  # a long pause saves no more than the burst
    assert sum(limit.try_acquire() == 0.0 for _ in range(20)) == 10


# ---- the pod store of the watch ----------------------------------------------------------------


def test_pod_store_counts_pods_and_stuck_pods_through_every_write() -> None:
    from webhook.cluster.pods import PodStore  # noqa: PLC0415

    def info(name: str, namespace: str = "team-a", **kw: Any) -> PodInfo:
        made = pod_info(pod(name, namespace, **kw))
        assert made is not None
        return made

    store = PodStore()
    assert not store.synced
    store.replace([info("a"), info("b", waiting=(None,)), info("c", "team-b")])
    assert store.synced and (len(store), store.stuck) == (3, 2)
    assert store.upsert(info("b")) is not None  # b now stuck too
    assert (len(store), store.stuck) == (3, 3)
    store.upsert(info("a", waiting=("ContainerCreating",)))  # a no longer stuck
    assert (len(store), store.stuck) == (3, 2)
    store.upsert(info("d", "team-c"))
    store.delete("team-b", "c")
    store.delete("team-b", "c")  # twice: nothing more
    store.delete("nowhere", "x")
    assert (len(store), store.stuck) == (3, 2)
    assert sorted(p.name for p in store.in_namespace("team-a")) == ["a", "b"]
    assert store.in_namespace("team-b") == []
    got = store.get(("team-c", "d"))
    assert got is not None and got.stuck
    assert sorted(p.name for p in store.all()) == ["a", "b", "d"]
