"""`doctor`: check an install end to end, as `cmctl check api` does for cert-manager.

Every check prints PASS, WARN or FAIL and, unless it passed, one line on how to fix it.
Exit status 0 (all passed), 1 (warnings) or 2 (failures); `--output json` for scripts.

Read-only: the identity needs get/list on the objects read (webhook configurations,
Services, EndpointSlices, Deployments, Namespaces, registry Secrets (reduced to their
registry keys the moment they are read, as the watcher does: no credential is held or
printed), Events) and `get services/proxy`. Two requests are writes in form only and
store nothing: SubjectAccessReviews (a question to the authorizer, kept nowhere) and a
server-side dry-run Pod (`dryRun=All`: admitted, never persisted; the webhook creates no
copies for dry runs). Without permission for those, their checks WARN instead of failing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from webhook.ops.doctor_checks import (
    check_certificate,
    check_configuration,
    check_endpoints,
    check_namespace_selector,
    check_rbac,
    check_readiness,
    check_replication,
)
from webhook.ops.doctor_dry_run import check_dry_run
from webhook.ops.doctor_model import (
    Check,
    ForbiddenError,
    Install,
    Options,
    Status,
    find_deployment,
)

if TYPE_CHECKING:
    from webhook.cluster.apiclient import RawApi


CHECKS = (
    "webhook-configuration",
    "namespace-selector",
    "endpoints",
    "serving-certificate",
    "rbac",
    "dry-run",
    "readiness",
    "replication",
)


def run_checks(api: RawApi, opts: Options) -> tuple[Install, list[Check]]:
    """Every check, in order; a check that cannot run without an earlier one warns.

    The Install says which release and namespace were checked (found, or as given)."""
    install = Install(opts.release, opts.namespace)
    steps: list[tuple[str, Callable[[], Check], Callable[[], bool]]] = [
        ("webhook-configuration", lambda: check_configuration(api, opts, install), lambda: True),
        ("namespace-selector", lambda: check_namespace_selector(api, install), _has(install)),
        ("endpoints", lambda: check_endpoints(api, install), _has(install)),
        ("serving-certificate", lambda: check_certificate(install, opts), _has(install)),
        ("rbac", lambda: check_rbac(api, install), _has_deploy(install)),
        ("dry-run", lambda: check_dry_run(api, install, opts), _has(install)),
        ("readiness", lambda: check_readiness(api, install), _has(install, service=True)),
        ("replication", lambda: check_replication(api, install), _has_deploy(install)),
    ]
    out: list[Check] = []
    for name, run, ready in steps:
        if not ready():
            failed = any(c.status is Status.FAIL for c in out)
            fix = (
                "fix the failures above first"
                if failed
                else "run doctor as an identity allowed to read what the checks above could not"
            )
            out.append(
                Check(name, Status.WARN, "not checked: an earlier check found nothing to check",
                      fix)
            )  # fmt: skip
            continue
        try:
            out.append(run())
        except Exception as exc:  # one check's trouble is its own line, not the end of doctor
            out.append(_could_not_check(name, exc))
        if name == "webhook-configuration" and install.hook is not None:
            find_deployment(api, install)
    return install, out


def _could_not_check(name: str, exc: Exception) -> Check:
    """A check that could not run: WARN when forbidden, FAIL for anything else."""
    import urllib3  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    from webhook.cluster.livestate import describe  # noqa: PLC0415

    if isinstance(exc, ForbiddenError) or (isinstance(exc, ApiException) and exc.status == 403):
        return Check(
            name,
            Status.WARN,
            f"could not check: {describe(exc) if isinstance(exc, ApiException) else exc}",
            "run doctor as an identity allowed to (README: doctor lists what it needs)",
        )
    if isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
        fix = "check that the API server is reachable (kubectl cluster-info)"
    elif isinstance(exc, ApiException):
        fix = "see the API server's message above"
    else:
        raise exc  # a bug of doctor's own: let it show
    return Check(name, Status.FAIL, f"could not check: {describe(exc)}", fix)


def _has(install: Install, *, service: bool = False) -> Callable[[], bool]:
    return lambda: (
        install.hook is not None
        and bool(install.service_ref)
        and (not service or install.service is not None)
    )


def _has_deploy(install: Install) -> Callable[[], bool]:
    return lambda: install.hook is not None and install.deployment is not None


def exit_code(checks: Sequence[Check]) -> int:
    """0 all passed, 1 warnings, 2 failures, 3 nothing verified (no PASS, no FAIL)."""
    statuses = {c.status for c in checks}
    if Status.FAIL in statuses:
        return 2
    if Status.PASS not in statuses:
        return 3
    return 1 if Status.WARN in statuses else 0


def render(checks: Sequence[Check], install: Install) -> str:
    width = max(len(c.name) for c in checks)
    lines = [
        f"pullsecret-injector doctor: release {install.release}, namespace {install.namespace}"
    ]
    for c in checks:
        lines.append(f"{c.status.value}  {c.name.ljust(width)}  {c.message}")
        if c.status is not Status.PASS and c.fix:
            lines.append(f"{'':6}{'':{width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    lines.append(
        f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warning(s), "
        f"{counts[Status.FAIL]} failure(s)"
    )
    return "\n".join(lines)


def to_json(checks: Sequence[Check], install: Install) -> str:
    doc = {
        "release": install.release,
        "namespace": install.namespace,
        "checks": [asdict(c) for c in checks],
        "exit_code": exit_code(checks),
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


# ---- command line --------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def add_doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="pullsecret-injector", help="the release namespace")
    p.add_argument(
        "--release",
        help="the Helm release (default psi; when it has no webhook configuration and "
        "exactly one pullsecret-injector install exists, that one)",
    )
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument(
        "--connect",
        type=_host_port,
        metavar="HOST:PORT",
        help="reach the webhook's HTTPS port here (e.g. through kubectl port-forward) "
        "instead of its ClusterIP and endpoints",
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per TLS probe")
    p.add_argument(
        "--dry-run",
        dest="dry_run",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create a server-side dry-run pod (stores nothing; default on)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")


def run_doctor(args: argparse.Namespace) -> int:
    from webhook.cluster import livestate  # noqa: PLC0415

    opts = Options(
        release=args.release or "psi",
        namespace=args.namespace,
        release_given=args.release is not None,
        connect=args.connect,
        timeout=args.timeout,
        dry_run=args.dry_run,
    )
    try:
        api = livestate.connect(args.kubeconfig, args.context)
    except livestate.ClusterAccessError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    install, checks = run_checks(api, opts)
    if args.output == "json":
        sys.stdout.write(to_json(checks, install) + "\n")
    else:
        took = time.monotonic() - started
        sys.stdout.write(render(checks, install) + f"\n({took:.1f}s)\n")
    return exit_code(checks)
