"""Command line: `serve`, `mutate` and `certs`.

The entry point (``pullsecret-injector``, ``python -m webhook.cli``). `serve`'s flags are
generated from the Settings model (webhook/config.py) and its wiring is
webhook/serve/run.py; `certs` is webhook/serve/certs.py; `mutate` is here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import yaml
from pydantic import ValidationError

from webhook import __version__
from webhook.cluster.manifests import ManifestError, fill_store, load_objects
from webhook.cluster.store import Store
from webhook.config import add_arguments, settings_from_args
from webhook.core.admission import BadRequest, handle, parse_review
from webhook.core.injection import Decision, Policy, decide
from webhook.kubelet.labels import SelectorError
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


def cmd_mutate(args: argparse.Namespace) -> int:
    try:
        policy = Policy.build(args.secret_selector, args.private_registries or ())
        store = Store()
        fill_store(store, load_objects(args.objects or []))
        inputs = load_objects(args.filename)
    except (ManifestError, SelectorError) as exc:
        print(f"pullsecret-injector mutate: {exc}", file=sys.stderr)
        return 2
    out: list[str] = []
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
        else:
            print(f"pullsecret-injector mutate: skipping a {kind!r} (not a Pod)", file=sys.stderr)
    if out:
        sys.stdout.write("---\n".join(out))
    return status


# ---- entry -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullsecret-injector",
        description="Inject the in-scope registry imagePullSecrets each pod's images need.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook (HTTPS /mutate, HTTP /metrics)")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    mutate = sub.add_parser("mutate", help="print pods as the webhook would admit them")
    mutate.add_argument(
        "-f",
        "--filename",
        type=Path,
        action="append",
        required=True,
        help="pods or AdmissionReviews (file or folder, YAML/JSON; repeatable)",
    )
    mutate.add_argument(
        "--objects",
        type=Path,
        action="append",
        help="Secrets and Namespaces making up the cluster state (repeatable)",
    )
    mutate.add_argument("-n", "--namespace", default="default", help="for pods without one")
    mutate.add_argument("--explain", action="store_true", help="say what was injected and why")
    add_arguments(mutate, ("secret_selector", "private_registries"), environment=False)
    mutate.set_defaults(func=cmd_mutate)

    from webhook.serve import certs  # noqa: PLC0415 - cryptography loads only when asked for

    certs_parser = sub.add_parser("certs", help="a CA and a serving certificate")
    certs.add_certs_arguments(certs_parser)
    certs_parser.set_defaults(func=certs.run_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
