"""`explain KIND/NAME`: why a live pod or workload has or lacks each registry secret.

Reads the object, its namespace's registry Secrets (reduced to keys as the watcher
reduces them: livestate) and labels, and the webhook's MutatingWebhookConfiguration when
the identity may read it; then runs the webhook's own decision on the pod (a workload's
pod template) and says, per image, what the pod has, what it would get if created now,
and why. A container stuck in ErrImagePull/ImagePullBackOff gets a verdict: whether a
secret in scope would fix it now, and what to do about it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from webhook.cluster.store import Store
from webhook.config import add_arguments
from webhook.core import recovery
from webhook.core.injection import Decision, Policy, decide, existing_pull_secrets
from webhook.core.workloads import Kind, WorkloadError, parse_ref, pod_of
from webhook.kubelet.labels import Requirement, Selector, SelectorError

if TYPE_CHECKING:
    from webhook.cluster.apiclient import RawApi

PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff"})
PART_OF_SELECTOR = "app.kubernetes.io/part-of=pullsecret-injector"
WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def label_selector(obj: Any) -> Selector:
    """A metav1.LabelSelector object (matchLabels, matchExpressions) as a Selector.

    A missing selector selects everything, as the API server treats an absent
    namespaceSelector; an unknown operator raises SelectorError.
    """
    if not isinstance(obj, Mapping):
        return Selector((), "")
    reqs: list[Requirement] = []
    labels = obj.get("matchLabels")
    for key, value in (labels or {}).items() if isinstance(labels, Mapping) else ():
        reqs.append(Requirement(str(key), "in", (str(value),)))
    exprs = obj.get("matchExpressions")
    for expr in exprs if isinstance(exprs, list) else ():
        op = _OPERATORS.get(str(expr.get("operator")))
        if op is None:
            raise SelectorError(f"unknown operator {expr.get('operator')!r}")
        values = tuple(str(v) for v in expr.get("values") or ())
        reqs.append(Requirement(str(expr.get("key")), op, values))
    text = ",".join(
        f"{r.key}" if r.operator == "exists" else
        f"!{r.key}" if r.operator == "!" else
        f"{r.key}={r.values[0]}" if r.operator == "in" and len(r.values) == 1 else
        f"{r.key} {r.operator} ({','.join(r.values)})"
        for r in reqs
    )  # fmt: skip
    return Selector(tuple(reqs), text)


@dataclass(frozen=True, slots=True)
class ImageReport:
    field: str
    container: str
    image: str
    has: tuple[str, ...]  # entries the pod already has whose credentials apply
    would_add: tuple[str, ...]  # in-scope secrets the webhook would add for it now
    note: str  # how it is served, or why not
    pull_error: str | None = None  # "ImagePullBackOff: <kubelet message>"
    verdict: str | None = None  # for a pull error: would a secret in scope fix it now


@dataclass(slots=True)
class Explanation:
    target: str  # kind/name
    namespace: str
    webhook: str  # whether the webhook is called for such a pod, and why
    called: bool
    has: list[str]
    would_add: list[str]
    reason: str
    images: list[ImageReport] = field(default_factory=list)
    not_added: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)  # a workload's stuck pods, one line each
    policy: str = ""  # whose secret selector and private registries the decision used

    @property
    def stuck(self) -> bool:
        return any(i.pull_error for i in self.images) or bool(self.pods)


# ---- pure: the decision and the verdicts ---------------------------------------------------


def _pull_errors(pod: Mapping[str, Any]) -> dict[str, str]:
    """container name -> "Reason: message" for containers waiting on an image pull."""
    status = pod.get("status")
    out: dict[str, str] = {}
    if not isinstance(status, Mapping):
        return out
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in PULL_ERRORS:
                message = str(waiting.get("message") or "").strip()
                out[str(cs.get("name"))] = f"{waiting['reason']}" + (
                    f": {message}" if message else ""
                )
    return out


def recovery_outlook(pod: Mapping[str, Any]) -> str:
    """What the stuck-pod recovery controller (README "Stuck pods recover") does with this
    pod, by its rules in core/recovery.py, for the chart's default recovery.mode evict.
    (An opted-out pod gets no verdict at all: the webhook's decision skips it first.)"""
    meta = pod.get("metadata")
    # (a manifest's pod may have no namespace or uid yet: the rules need neither)
    filled = {**pod, "metadata": {"namespace": "", "uid": "", **(meta or {})}}
    info = recovery.pod_info(filled)
    if info is None:
        return "recreate it (delete and apply again) and it gets them"
    if info.terminating:
        return "it is going away already: its replacement, if any, gets them"
    if info.any_ready:
        return "the recovery controller leaves it alone (a container is ready): recreate it"
    if info.owner is None:
        return (
            "the recovery controller never deletes a bare pod, it records a MissingPullSecret "
            "Event: recreate it (delete and apply again) and it gets them"
        )
    return (
        f"the recovery controller (recovery.mode evict, the default) evicts it and its "
        f"{info.owner.kind} {info.owner.name} recreates it with them, within its rate limit; "
        "or delete the pod yourself"
    )


def _verdict(
    has: tuple[str, ...], in_scope: tuple[str, ...], namespace: str, called: bool, outlook: str
) -> str:
    """Would a secret in scope fix this failed pull now, and what to do about it."""
    if in_scope and called:
        return (
            f"fixable now: {', '.join(in_scope)} in scope has credentials for it, but a "
            f"pod's imagePullSecrets cannot change after creation: {outlook}"
        )
    if in_scope:
        return (
            f"{', '.join(in_scope)} has credentials for it, but the webhook is not called "
            "for this pod: add the secret to the workload's imagePullSecrets yourself"
        )
    if has:
        return (
            f"not a missing secret: the pod already uses {', '.join(has)} for this image; "
            "the pull fails for another reason (wrong or expired credentials, the image or "
            "tag does not exist, the registry is unreachable): see the kubelet's message"
        )
    return (
        f"no registry secret in namespace {namespace!r} has credentials for it: create one "
        f"(or a project/cluster source selecting this namespace); then {outlook}"
    )


def explain_pod(
    target: str,
    pod: Mapping[str, Any],
    namespace: str,
    store: Store,
    policy: Policy,
    *,
    webhook: tuple[bool, str] = (True, "webhook configuration not checked"),
) -> Explanation:
    """What the pod has, what the webhook would add if it were created now, and why."""
    called, why = webhook
    decision: Decision = decide(pod, namespace, store.secrets_in(namespace), policy)
    spec = pod.get("spec")
    has = existing_pull_secrets(spec) if isinstance(spec, Mapping) else []
    errors = _pull_errors(pod)
    outlook = recovery_outlook(pod) if errors else ""
    images: list[ImageReport] = []
    for d in decision.images:
        existing = tuple(n for n in d.used if n not in d.added)
        added = d.added if called else ()
        if d.invalid_reason:
            note = f"invalid reference ({d.invalid_reason}): skipped"
        elif not d.used:
            note = f"no secret in scope has credentials for {d.name}"
        else:
            how = "Docker Hub fallback key" if d.via_default_registry else "keyring match"
            note = f"{d.name}: credentials in {', '.join(d.used)} ({how})"
        error = errors.get(d.container)
        verdict = None if error is None else _verdict(existing, d.added, namespace, called, outlook)
        images.append(
            ImageReport(d.field, d.container, d.image, existing, added, note, error, verdict)
        )
    return Explanation(
        target=target,
        namespace=namespace,
        webhook=why,
        called=called,
        has=has,
        would_add=list(decision.add) if called else [],
        reason=decision.reason if called else "the webhook is not called for it",
        images=images,
        not_added=list(decision.not_added),
        warnings=list(decision.warnings),
    )


def webhook_scope(
    configs: Sequence[Mapping[str, Any]] | None,
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> tuple[bool, str]:
    """Whether the API server calls the webhook for a pod with these labels here, and why."""
    if configs is None:
        return True, "could not read MutatingWebhookConfigurations: assuming the webhook is called"
    hooks = [
        (c.get("metadata", {}).get("name"), w)
        for c in configs
        for w in c.get("webhooks") or ()
        if isinstance(w, Mapping)
    ]
    if not hooks:
        return False, "no pullsecret-injector MutatingWebhookConfiguration: nothing is injected"
    name, hook = hooks[0]
    try:
        ns_sel = label_selector(hook.get("namespaceSelector"))
        obj_sel = label_selector(hook.get("objectSelector"))
    except SelectorError as exc:
        return True, f"{name}: cannot evaluate its selectors ({exc}): assuming it is called"
    if not ns_sel.matches(namespace_labels):
        return False, (
            f"{name}: its namespaceSelector excludes this namespace ({ns_sel.text}), so the "
            "API server never calls the webhook here"
        )
    if not obj_sel.matches(pod_labels):
        return False, f"{name}: its objectSelector ({obj_sel.text}) does not select this pod"
    return True, f"{name} is called for pods in this namespace"


# ---- rendering -----------------------------------------------------------------------------


def render(ex: Explanation) -> str:
    lines = [f"{ex.target} in namespace {ex.namespace}"]
    lines.append(f"  webhook: {ex.webhook}")
    if ex.policy:
        lines.append(f"  decided with: {ex.policy}")
    lines.append(f"  has: {', '.join(ex.has) if ex.has else 'no imagePullSecrets'}")
    would = ", ".join(ex.would_add) if ex.would_add else "nothing more"
    lines.append(f"  if created now: would get {would} ({ex.reason})")
    for img in ex.images:
        lines.append(f"  {img.field}[{img.container}] {img.image}")
        lines.append(f"    {img.note}")
        if img.has:
            lines.append(f"    has: {', '.join(img.has)}")
        if img.would_add:
            lines.append(f"    would add: {', '.join(img.would_add)}")
        if img.pull_error:
            lines.append(f"    pulling: {img.pull_error}")
            lines.append(f"    verdict: {img.verdict}")
    lines.extend(f"  not added: {name}: {why}" for name, why in ex.not_added)
    lines.extend(f"  warning: {w}" for w in ex.warnings)
    lines.extend(f"  {line}" for line in ex.pods)
    return "\n".join(lines)


def to_json(ex: Explanation) -> str:
    doc = asdict(ex)
    doc["not_added"] = [{"secret": n, "why": w} for n, w in ex.not_added]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


# ---- the live read -------------------------------------------------------------------------


def _webhook_configs(api: RawApi) -> list[dict[str, Any]] | None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        body = api.request("GET", WEBHOOK_CONFIGS, query={"labelSelector": PART_OF_SELECTOR})
    except ApiException:
        return None
    return [i for i in body.get("items") or () if isinstance(i, dict)]


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def _stuck_pods(
    api: RawApi,
    kind: Kind,
    obj: Mapping[str, Any],
    namespace: str,
    *,
    store: Store,
    policy: Policy,
    scope: tuple[bool, str],
) -> list[str]:
    """One line per pod of the workload (its selector's pods) stuck on an image pull."""
    spec = obj.get("spec")
    selector = spec.get("selector") if isinstance(spec, Mapping) else None
    if kind.kind in ("Pod", "PodTemplate", "CronJob") or not isinstance(selector, Mapping):
        return []
    sel = label_selector(selector if "matchLabels" in selector or "matchExpressions" in selector
                         else {"matchLabels": selector})  # fmt: skip
    body = api.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": sel.text}
    )
    out = []
    for pod in body.get("items") or ():
        if not isinstance(pod, dict) or not _pull_errors(pod):
            continue
        name = str(pod.get("metadata", {}).get("name"))
        ex = explain_pod(f"pod/{name}", pod, namespace, store, policy, webhook=scope)
        for img in ex.images:
            if img.pull_error:
                out.append(
                    f"pod/{name} {img.container}: {img.pull_error}\n    verdict: {img.verdict}"
                )
    return out


def installed_policy(
    api: RawApi, configs: Sequence[Mapping[str, Any]] | None
) -> tuple[Policy, str] | None:
    """The installed webhook's own secret selector and private registries (its Deployment's
    --secret-selector and --private-registry, as the chart renders config.*), and a line
    saying whose they are; None when its Deployment cannot be read."""
    from webhook.ops.doctor_model import Install, find_deployment  # noqa: PLC0415

    for config in configs or ():
        release = _labels(config).get("app.kubernetes.io/instance")
        hooks = config.get("webhooks") or [{}]
        service = (hooks[0].get("clientConfig") or {}).get("service") or {}
        namespace = service.get("namespace")
        if not release or not namespace:
            continue
        install = Install(release, namespace)
        find_deployment(api, install)
        if install.deployment is None:
            return None
        selector, private = install.secret_selector, install.private_registries
        what = f"secret selector {selector!r}" if selector else "no secret selector"
        if private:
            what += f", private registries {', '.join(private)}"
        return install.policy, f"{what}, as the installed webhook ({namespace}/{release}) decides"
    return None


def explain_live(
    api: RawApi, ref: str, namespace: str, policy: Policy | None = None
) -> Explanation:
    """Read KIND/NAME and its namespace's state from the cluster and explain it.

    Without a `policy` (no --secret-selector or --private-registry given), the decision
    uses the installed webhook's own, read from its Deployment."""
    from webhook.cluster import livestate  # noqa: PLC0415

    kind, name = parse_ref(ref)
    obj = api.request("GET", kind.path(namespace, name))
    found = pod_of(obj, namespace)
    if found is None:
        raise WorkloadError(f"{kind.kind.lower()}/{name} has no pod template")
    store = Store()
    assumed = livestate.fill_store(store, api, [namespace])
    ns_labels = store.namespace_labels(namespace) or {}
    configs = _webhook_configs(api)
    scope = webhook_scope(configs, ns_labels, _labels(found.pod))
    if scope[0] and namespace in assumed:
        scope = (
            True,
            f"{scope[1]}, assuming so: this identity may not read the Namespace, so its "
            "labels (an opt-out label included) are unknown",
        )
    used = "as given on the command line"
    if policy is None:
        installed = installed_policy(api, configs)
        if installed is None:
            policy = Policy.build(None)
            used = (
                "no secret selector, no private registries (the installed webhook's "
                "Deployment could not be read: assuming the chart's defaults)"
            )
        else:
            policy, used = installed
    ex = explain_pod(
        f"{kind.kind.lower()}/{name}", found.pod, namespace, store, policy, webhook=scope
    )
    ex.policy = used
    if kind.kind != "Pod":
        ex.target = f"{kind.kind.lower()}/{name} (its pod template)"
        ex.pods = _stuck_pods(api, kind, obj, namespace, store=store, policy=policy, scope=scope)
    return ex


# ---- command line --------------------------------------------------------------------------


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="KIND/NAME",
        help="pod/NAME, deploy/NAME, sts/, ds/, rs/, rc/, job/, cronjob/ or podtemplate/",
    )
    p.add_argument(
        "-n", "--namespace", help="its namespace (default: the kubeconfig context's, as kubectl)"
    )
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: KUBECONFIG, ~/.kube)")
    p.add_argument("--context", help="kubeconfig context")
    add_arguments(p, ("secret_selector", "private_registries"), environment=False)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")


def run_explain(args: argparse.Namespace) -> int:
    import urllib3  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    from webhook.cluster import livestate  # noqa: PLC0415

    prog = "explain"
    namespace = args.namespace
    try:
        given = args.secret_selector is not None or bool(args.private_registries)
        policy = (
            Policy.build(args.secret_selector, args.private_registries or ()) if given else None
        )
        namespace = namespace or livestate.context_namespace(args.kubeconfig, args.context)
        api = livestate.connect(args.kubeconfig, args.context)
        ex = explain_live(api, args.target, namespace, policy)
    except (SelectorError, WorkloadError, livestate.ClusterAccessError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except (ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
        print(f"{prog}: {args.target} in {namespace}: {livestate.describe(exc)}", file=sys.stderr)
        return 2
    sys.stdout.write((to_json(ex) if args.output == "json" else render(ex)) + "\n")
    return 0
