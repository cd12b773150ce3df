"""Command line: `serve`, `mutate` and `certs`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import uvicorn
import yaml
from pydantic import ValidationError

from webhook import __version__
from webhook.cluster.manifests import ManifestError, fill_store, iter_objects, load_objects
from webhook.cluster.store import Store, freeze_heap
from webhook.config import Settings
from webhook.core.admission import BadRequest, handle, parse_review
from webhook.core.injection import Decision, Policy, decide
from webhook.kubelet.labels import SelectorError
from webhook.metrics import Metrics
from webhook.serve.app import create_app, create_ops_app
from webhook.serve.limits import add_hardening_arguments
from webhook.serve.logs import configure as configure_logging
from webhook.serve.server import Drain, DrainingServer, apply_limits
from webhook.serve.tls import CertReloader, server_context

log = logging.getLogger("webhook.cli")


class StartupError(RuntimeError):
    """The cluster state cannot be reached or read: serve exits 2 with the reason."""


# ---- serve -------------------------------------------------------------------------------


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address of the HTTPS /mutate listener (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="HTTPS port (default 8443)")
    p.add_argument("--metrics-host", help="address of the plain-HTTP listener")
    p.add_argument("--metrics-port", type=int, help="/healthz /readyz /metrics port (8080)")
    p.add_argument("--cert-file", type=Path, help="serving certificate (PEM), reloaded on change")
    p.add_argument("--key-file", type=Path, help="its private key (PEM)")
    p.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="without --cert-file: generate a throwaway CA and localhost certificate",
    )
    p.add_argument(
        "--objects",
        type=Path,
        action="append",
        help="cluster state from manifests (file or folder; repeatable) instead of a cluster",
    )
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: KUBECONFIG, in-cluster)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--secret-selector", help="label selector narrowing the registry secrets")
    p.add_argument(
        "--private-registry",
        dest="private_registries",
        action="append",
        help="registry host whose images warn when no credential matches (repeatable)",
    )
    p.add_argument("--release-namespace", help="namespace the webhook runs in")
    p.add_argument(
        "--source-namespace",
        dest="source_namespaces",
        action="append",
        help="namespace holding project/cluster source registries (repeatable)",
    )
    p.add_argument(
        "--replication",
        dest="replication_enabled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy annotated source registries into the namespaces they select, and create "
        "missing copies at admission (default: on; a live cluster only)",
    )
    p.add_argument("--max-body-bytes", type=int, help="largest accepted request body")
    p.add_argument("--live-read-timeout", type=float, help="seconds for a never-seen namespace")
    p.add_argument("--workers", type=int, help="serving processes (default 1)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    add_hardening_arguments(p)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags override PSI_* environment variables, which override the defaults."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**given)


@contextlib.contextmanager
def _certificates(settings: Settings) -> Iterator[tuple[Path, Path]]:
    if settings.cert_file is not None and settings.key_file is not None:
        yield settings.cert_file, settings.key_file
        return
    from webhook.serve import certs  # noqa: PLC0415 - only --dev needs certificate generation

    with tempfile.TemporaryDirectory(prefix="pullsecret-injector-") as tmp:
        bundle = certs.generate(["localhost"], ["127.0.0.1", "::1"])
        paths = certs.write_bundle(bundle, Path(tmp))
        print(
            "dev mode: throwaway CA and certificate for localhost/127.0.0.1 in "
            f"{tmp}\n  try: curl --cacert {paths['ca.crt']} -H 'Content-Type: application/json' "
            f"--data @tests/fixtures/admissionreview/v1-create-pod-multi-registry-sa-secret.json "
            f"https://localhost:{settings.port}/mutate",
            file=sys.stderr,
            flush=True,
        )
        print(f"dev mode CA: {paths['ca.crt']}", flush=True)  # stdout, for scripts (issue 11)
        yield paths["tls.crt"], paths["tls.key"]


class _MainServer(DrainingServer):
    """The HTTPS server: a signal shuts it down gracefully, and is not raised again after.

    uvicorn re-raises SIGTERM/SIGINT once it has shut down, so that the default handler
    ends the process: `serve`'s cleanup (releasing the replication Lease so that another
    replica takes over at once, stopping the watches) would never run.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class _OpsServer(uvicorn.Server):
    """The plain-HTTP server: signals are the main server's business."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        # the API server keeps connections alive: do not wait on idle ones at shutdown
        timeout_graceful_shutdown=10,
    )


@dataclass(frozen=True)
class _Listeners:
    """Pre-bound sockets shared by forked workers (None: each server binds its own)."""

    main: socket.socket | None = None
    ops: socket.socket | None = None
    serve_ops: bool = True


async def _run_servers(
    settings: Settings,
    store: Store,
    metrics: Metrics,
    watcher: Any,
    replicator: Any,
    *,
    tls_files: tuple[Path, Path],
    listeners: _Listeners,
) -> None:
    live_read = None
    if watcher is not None:

        def live_read(namespace: str) -> bool:
            return bool(watcher.live_read(namespace, settings.live_read_timeout))

    cert_file, key_file = tls_files
    ctx = server_context(cert_file, key_file)
    reloader = CertReloader(ctx, cert_file, key_file, metrics)
    main_cfg = _uvicorn_config(
        create_app(settings, store, metrics, live_read, replicator),
        settings.host,
        settings.port,
    )
    drain = Drain()  # issue 11: HTTP limits and shutdown (webhook/serve/limits.py, shutdown.py)
    apply_limits(main_cfg, settings, metrics, drain)
    main_cfg.load()
    main_cfg.ssl = ctx
    ops: _OpsServer | None = None
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(reloader.run(settings.cert_reload_seconds))
    ]
    if listeners.serve_ops:
        ops = _OpsServer(
            _uvicorn_config(
                create_ops_app(store, metrics, drain), settings.metrics_host, settings.metrics_port
            )
        )
        ops_sockets = [listeners.ops] if listeners.ops is not None else None
        tasks.append(asyncio.create_task(ops.serve(ops_sockets)))
    try:
        main_sockets = [listeners.main] if listeners.main is not None else None
        main = _MainServer(main_cfg, drain, settings.drain_seconds, settings.shutdown_timeout)
        await main.serve(main_sockets)
    finally:
        tasks[0].cancel()
        if ops is not None:
            ops.should_exit = True
            await tasks[1]


def _start_state(settings: Settings, store: Store, metrics: Metrics) -> tuple[Any, Any]:
    """(watcher, replicator): both None with --objects; the replicator None when disabled."""
    if settings.objects:
        fill_store(store, iter_objects(settings.objects))
        freeze_heap()
        log.info(
            "cluster state loaded from manifests",
            extra={"secrets": store.secret_count(), "namespaces": len(store.namespaces())},
        )
        return None, None
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

    from webhook.cluster import reflector as kube  # noqa: PLC0415 - only a live cluster needs the client

    try:
        api_client = kube.load_api_client(settings.kubeconfig, settings.context)
    except ConfigException as exc:
        raise StartupError(f"cluster access: {exc}") from exc
    watcher = kube.ClusterWatcher(api_client, store, metrics)
    watcher.start()
    replicator = None
    if settings.replication_enabled:
        from webhook.replication.controller import Replicator  # noqa: PLC0415

        replicator = Replicator(api_client, store, metrics, settings)
        replicator.start()
    return watcher, replicator


def _serve_one(settings: Settings, tls_files: tuple[Path, Path], listeners: _Listeners) -> int:
    """One serving process: its own store (and watches), the HTTPS and ops servers."""
    store = Store()  # replication, when on, listens to its changes
    metrics = Metrics()
    try:
        watcher, replicator = _start_state(settings, store, metrics)
    except (ManifestError, StartupError) as exc:
        print(f"pullsecret-injector serve: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            _run_servers(
                settings,
                store,
                metrics,
                watcher,
                replicator,
                tls_files=tls_files,
                listeners=listeners,
            )
        )
    finally:
        if replicator is not None:
            replicator.stop()  # releases the Lease: another replica takes over at once
        if watcher is not None:
            watcher.stop()
    return 0


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every small response waits for a delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve_forked(settings: Settings, tls_files: tuple[Path, Path]) -> int:
    """--workers N: N forked processes, each accepting on its own SO_REUSEPORT socket.

    One listening socket per worker (all bound here, so a busy port fails before any
    fork) lets the kernel spread connections evenly; with one shared socket the API
    server's few keep-alive connections tend to land on one worker. Each worker keeps
    its own store (and its own watches, against a cluster). Only the first serves the
    plain-HTTP port, so /metrics and /readyz describe that worker.
    """
    mains = [_bind(settings.host, settings.port, reuse_port=True) for _ in range(settings.workers)]
    ops = _bind(settings.metrics_host, settings.metrics_port)
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for other, sock in enumerate(mains):
                    if other != index:
                        sock.close()
                code = _serve_one(settings, tls_files, _Listeners(mains[index], ops, index == 0))
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"pullsecret-injector serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    with _certificates(settings) as tls_files:
        if settings.workers == 1:
            return _serve_one(settings, tls_files, _Listeners())
        return _serve_forked(settings, tls_files)


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
    _add_serve_arguments(serve)
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
    mutate.add_argument("--secret-selector", help="label selector narrowing the secrets")
    mutate.add_argument(
        "--private-registry",
        dest="private_registries",
        action="append",
        help="registry host whose images warn when no credential matches (repeatable)",
    )
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
