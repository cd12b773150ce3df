"""Command line: `serve`, `mutate`, `explain`, `doctor` and `certs`.

The entry points (``pullsecret-injector``, ``python -m webhook.cli``, and
``kubectl-pullsecrets`` for ``kubectl pullsecrets ...``). `serve`'s flags are generated
from the Settings model (webhook/config.py) and its wiring is webhook/serve/run.py;
`certs` is webhook/serve/certs.py; `explain` and `doctor` are webhook/ops/; `mutate` is
here (the live cluster's state through webhook/cluster/livestate.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import yaml
from pydantic import ValidationError

from webhook import __version__
from webhook.cluster.manifests import (
    ManifestError,
    fill_store,
    iter_objects,
    load_objects,
    parse_documents,
)
from webhook.cluster.store import Store
from webhook.config import add_arguments, settings_from_args
from webhook.core.admission import BadRequest, handle, parse_review
from webhook.core.injection import Decision, Policy, decide
from webhook.core.workloads import WorkloadPod, input_namespaces, pod_of, workload_patch
from webhook.kubelet.labels import SelectorError
from webhook.ops import doctor, explain
from webhook.serve.logs import configure as configure_logging

# ---- serve -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"pullsecret-injector serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from webhook.serve.run import serve  # noqa: PLC0415 - uvicorn loads only to serve

    return serve(settings)


# ---- mutate ------------------------------------------------------------------------------


def _explain(pod_label: str, namespace: str, decision: Decision) -> str:
    lines = [f"pod {pod_label} in namespace {namespace}: {decision.reason}"]
    for img in decision.images:
        where = f"{img.field}[{img.container}] {img.image}"
        if img.invalid_reason:
            lines.append(f"  {where}: invalid reference ({img.invalid_reason}), skipped")
        elif not img.used:
            lines.append(f"  {where}: no secret has credentials for {img.name}")
        else:
            how = "Docker Hub fallback key" if img.via_default_registry else "keyring match"
            added = f"added {', '.join(img.added)}" if img.added else "nothing added"
            lines.append(f"  {where}: {img.name} uses {', '.join(img.used)} ({how}); {added}")
    for name, why in decision.not_added:
        lines.append(f"  not added: {name}: {why}")
    lines.extend(f"  warning: {w}" for w in decision.warnings)
    return "\n".join(f"# {line}" for line in lines)


def _mutate_pod(
    pod: dict[str, Any], store: Store, policy: Policy, default_ns: str, explain: bool
) -> str:
    raw_meta = pod.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    namespace = str(meta.get("namespace") or default_ns)
    decision = decide(pod, namespace, store.secrets_in(namespace), policy)
    result = jsonpatch.apply_patch(pod, list(decision.patch)) if decision.patch else pod
    text = yaml.safe_dump(result, sort_keys=False)
    if explain:
        label = str(meta.get("name") or meta.get("generateName") or "<unnamed>")
        text = _explain(label, namespace, decision) + "\n" + text
    return text


def _mutate_workload(
    obj: dict[str, Any], found: WorkloadPod, store: Store, policy: Policy, explain: bool
) -> str:
    """A workload printed with its pod template as the webhook would patch its pods."""
    ns = found.namespace
    decision = decide(found.pod, ns, store.secrets_in(ns), policy)
    patch = workload_patch(found.kind, decision.patch)
    text = yaml.safe_dump(jsonpatch.apply_patch(obj, patch) if patch else obj, sort_keys=False)
    return _explain(f"template of {found.label}", ns, decision) + "\n" + text if explain else text


def _load_inputs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Objects of files and folders, in order; the path `-` reads stdin (once)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        if str(path) == "-":
            out.extend(parse_documents(sys.stdin.read(), Path("<stdin>")))
        else:
            out.extend(iter_objects([path]))
    return out


def _live_state(args: argparse.Namespace) -> bool:
    """--kubeconfig/--context, or KUBECONFIG without --objects: read the live cluster."""
    if args.objects:
        return False
    return bool(args.kubeconfig or args.context or os.environ.get("KUBECONFIG"))


def cmd_mutate(args: argparse.Namespace) -> int:
    from webhook.cluster import livestate  # noqa: PLC0415 - the Kubernetes client loads here

    try:
        policy = Policy.build(args.secret_selector, args.private_registries or ())
        inputs = _load_inputs(args.filename)
        store = Store()
        if _live_state(args):
            api = livestate.connect(args.kubeconfig, args.context)
            livestate.fill_store(store, api, input_namespaces(inputs, args.namespace))
        else:
            fill_store(store, load_objects(args.objects or []))
    except (ManifestError, SelectorError, livestate.ClusterAccessError) as exc:
        print(f"pullsecret-injector mutate: {exc}", file=sys.stderr)
        return 2
    out: list[str] = []
    skipped: list[str] = []
    status = 0
    for obj in inputs:
        kind = obj.get("kind")
        if kind == "AdmissionReview":
            try:
                req = parse_review(obj)
            except BadRequest as exc:
                print(f"pullsecret-injector mutate: AdmissionReview: {exc}", file=sys.stderr)
                status = 2
                continue
            answer = handle(req, lambda pod, ns: decide(pod, ns, store.secrets_in(ns), policy))
            sys.stdout.write(orjson.dumps(answer.review, option=orjson.OPT_INDENT_2).decode())
            sys.stdout.write("\n")
        elif kind == "Pod":
            out.append(_mutate_pod(obj, store, policy, args.namespace, args.explain))
        elif (found := pod_of(obj, args.namespace)) is not None:
            out.append(_mutate_workload(obj, found, store, policy, args.explain))
        else:
            skipped.append(str(kind))
    if skipped:
        print(
            f"pullsecret-injector mutate: skipped {len(skipped)} object(s) without a pod "
            f"template: {', '.join(sorted(set(skipped)))}",
            file=sys.stderr,
        )
    if out:
        sys.stdout.write("---\n".join(out))
    return status


# ---- entry -------------------------------------------------------------------------------


def build_parser(prog: str = "pullsecret-injector") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Inject the in-scope registry imagePullSecrets each pod's images need.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook (HTTPS /mutate, HTTP /metrics)")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    mutate = sub.add_parser(
        "mutate", help="print pods and workloads as the webhook would admit their pods"
    )
    mutate.add_argument(
        "-f",
        "--filename",
        type=Path,
        action="append",
        required=True,
        help="pods, workloads with a pod template (Deployment, CronJob, ...) or "
        "AdmissionReviews (file or folder, YAML/JSON, - for stdin; repeatable)",
    )
    state = mutate.add_mutually_exclusive_group()
    state.add_argument(
        "--objects",
        type=Path,
        action="append",
        help="Secrets and Namespaces making up the cluster state (repeatable)",
    )
    state.add_argument(
        "--kubeconfig",
        type=Path,
        help="read the live cluster's registry Secrets (keys only) and Namespaces "
        "(default with neither flag: KUBECONFIG when set)",
    )
    mutate.add_argument("--context", help="kubeconfig context (implies the live cluster)")
    mutate.add_argument("-n", "--namespace", default="default", help="for pods without one")
    mutate.add_argument("--explain", action="store_true", help="say what was injected and why")
    add_arguments(mutate, ("secret_selector", "private_registries"), environment=False)
    mutate.set_defaults(func=cmd_mutate)

    from webhook.serve import certs  # noqa: PLC0415 - cryptography loads only when asked for

    explain_parser = sub.add_parser(
        "explain", help="why a live pod or workload has or lacks each registry secret"
    )
    explain.add_explain_arguments(explain_parser)
    explain_parser.set_defaults(func=explain.run_explain)

    doctor_parser = sub.add_parser("doctor", help="check an install end to end (read-only)")
    doctor.add_doctor_arguments(doctor_parser)
    doctor_parser.set_defaults(func=doctor.run_doctor)

    certs_parser = sub.add_parser("certs", help="a CA and a serving certificate")
    certs.add_certs_arguments(certs_parser)
    certs_parser.set_defaults(func=certs.run_certs)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "pullsecret-injector") -> int:
    args = build_parser(prog).parse_args(argv)
    return int(args.func(args))


def kubectl_main() -> int:
    """`kubectl-pullsecrets` on PATH: `kubectl pullsecrets explain|doctor|mutate ...`."""
    return main(prog="kubectl pullsecrets")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
