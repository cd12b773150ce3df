"""`pullsecret-injector serve`: the wiring of one serving process.

One process per pod: the store, the watches (or manifests), the replication controller,
stuck-pod recovery and the two servers (HTTPS admission, plain-HTTP operations) on one
asyncio loop. To serve more, run more replicas (the chart's ``replicaCount``): each
replica's /readyz and /metrics then describe exactly the process that answers (README:
"One process per pod").
docs/concurrency.md draws the threads, tasks and pools and what each owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from webhook.cluster.manifests import ManifestError, fill_store, iter_objects
from webhook.cluster.store import Store, freeze_heap
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.serve.app import LiveRead, create_app, create_ops_app
from webhook.serve.server import Drain, DrainingServer, apply_limits
from webhook.serve.tls import CertReloader, server_context

if TYPE_CHECKING:  # only a live cluster loads the Kubernetes client
    from webhook.cluster.watchers import ClusterWatcher
    from webhook.replication.controller import Replicator
    from webhook.replication.recovery import Recovery

log = logging.getLogger(__name__)

# How long a thread may hold the GIL while another waits (CPython's default: 5 ms). The
# event loop gives the GIL up at every socket wait; while a watch thread re-lists 50,000
# secrets (pure CPU), each of those waits cost up to 5 ms, several per request: admission
# p99 during a re-list. 1 ms bounds that wait (issue 11, item 6; bench/cluster_scale.py).
SWITCH_INTERVAL_SECONDS = 0.001


class StartupError(RuntimeError):
    """The cluster state cannot be reached or read: serve exits 2 with the reason."""


def loop_factory(choice: str) -> type[asyncio.AbstractEventLoop] | None:
    """The event loop `serve` runs on (--loop); None: asyncio's own.

    uvloop (libuv, its transports and TLS in Cython) by default when it is installed:
    measured side by side (bench/RESULTS.md, both loops on every row), it serves the same
    admissions with less CPU each, because what it replaces (asyncio's selector loop,
    socket transports and SSL protocol, in Python) is most of the server's own cost
    per request (bench/profiles/).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: asyncio's loop serves without it
    except ImportError:
        if choice == "uvloop":
            raise StartupError("--loop uvloop: uvloop is not installed") from None
        return None
    loop: type[asyncio.AbstractEventLoop] = uvloop.Loop  # the class: called, a new loop
    return loop


def bounded_handshakes(
    loop: type[asyncio.AbstractEventLoop] | None, seconds: float
) -> type[asyncio.AbstractEventLoop]:
    """`loop` (loop_factory's; None: asyncio's own), whose TLS servers drop a connection
    that has not finished its handshake within `seconds` (--header-read-timeout).

    asyncio and uvloop wait 60 s by default and uvicorn passes no other value; a connection
    is the limits' (limits.py) only once its handshake is done, so until then only this
    bounds it. Go bounds the handshake by the smallest of its read timeouts
    (net/http conn.serve: tlsHandshakeTimeout).
    """
    base = loop or asyncio.SelectorEventLoop

    class BoundedHandshakes(base):  # type: ignore[valid-type, misc]
        async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
                kwargs["ssl_handshake_timeout"] = seconds
            server: asyncio.Server = await super().create_server(*args, **kwargs)
            return server

    return BoundedHandshakes


@contextlib.contextmanager
def certificates(settings: Settings) -> Iterator[tuple[Path, Path]]:
    """The serving certificate's files: given, or (--dev) a throwaway pair."""
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


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        ws="none",  # no WebSocket protocol to hand a connection to (limits.py refuses upgrades)
        # the API server keeps connections alive: do not wait on idle ones at shutdown
        timeout_graceful_shutdown=10,
    )


@dataclass
class _State:
    """The cluster state of this process: watcher, replicator and recovery None with
    --objects; each of the last two None when disabled."""

    store: Store
    watcher: ClusterWatcher | None = None
    replicator: Replicator | None = None
    recovery: Recovery | None = None

    def stop(self) -> None:
        if self.recovery is not None:
            self.recovery.stop()
        if self.replicator is not None:
            self.replicator.stop()  # releases the Lease: another replica takes over at once
        if self.watcher is not None:
            self.watcher.stop()


async def _run_servers(
    settings: Settings, state: _State, metrics: Metrics, tls_files: tuple[Path, Path]
) -> None:
    live_read: LiveRead | None = None
    watcher = state.watcher
    if watcher is not None:

        def live_read(namespace: str) -> bool:
            return bool(watcher.live_read(namespace, settings.live_read_timeout))

    cert_file, key_file = tls_files
    ctx = server_context(cert_file, key_file)
    reloader = CertReloader(ctx, cert_file, key_file, metrics)
    main_cfg = uvicorn_config(
        create_app(settings, state.store, metrics, live_read, state.replicator),
        settings.host,
        settings.port,
    )
    drain = Drain()  # issue 11: HTTP limits and shutdown (webhook/serve/limits.py, shutdown.py)
    apply_limits(main_cfg, settings, metrics, drain)
    main_cfg.load()
    main_cfg.ssl = ctx
    ops = _OpsServer(
        uvicorn_config(
            create_ops_app(state.store, metrics, drain),
            settings.metrics_host,
            settings.metrics_port,
        )
    )
    reloading = asyncio.create_task(reloader.run(settings.cert_reload_seconds))
    ops_serving = asyncio.create_task(ops.serve())
    try:
        main = _MainServer(main_cfg, drain, settings.drain_seconds, settings.shutdown_timeout)
        await main.serve()
    finally:
        reloading.cancel()
        ops.should_exit = True
        await ops_serving


def _start_state(settings: Settings, store: Store, metrics: Metrics) -> _State:
    objects = settings.objects
    if not objects and settings.dev and settings.kubeconfig is None:
        objects = (Path(str(resources.files("webhook") / "examples" / "cluster.yaml")),)
        print(f"dev mode: example cluster state from {objects[0]}", file=sys.stderr, flush=True)
    if objects:
        fill_store(store, iter_objects(objects))
        freeze_heap()
        log.info(
            "cluster state loaded from manifests",
            extra={
                "secret_count": store.secret_count(),
                "namespace_count": len(store.namespaces()),
            },
        )
        return _State(store)
    # only a live cluster needs the Kubernetes client
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

    from webhook.cluster.apiclient import load_api_client  # noqa: PLC0415
    from webhook.cluster.reflector import WatchOptions  # noqa: PLC0415
    from webhook.cluster.watchers import ClusterWatcher  # noqa: PLC0415

    try:
        api_client = load_api_client(settings.kubeconfig, settings.context)
    except ConfigException as exc:
        raise StartupError(f"cluster access: {exc}") from exc
    watcher = ClusterWatcher(api_client, store, metrics, WatchOptions.of(settings))
    watcher.start()
    state = _State(store, watcher)
    if settings.replication_enabled:
        from webhook.replication.controller import ReplicationOptions, Replicator  # noqa: PLC0415

        replicator = Replicator(
            api_client, store, metrics, settings, ReplicationOptions.of(settings)
        )
        replicator.start()
        state.replicator = replicator
    from webhook.replication import recovery  # noqa: PLC0415

    state.recovery = recovery.build(api_client, store, metrics, settings, state.replicator)
    if state.recovery is not None:
        state.recovery.start()  # under the replicator's Lease, or its own when replication is off
    return state


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 2 when the cluster state cannot be had."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    with certificates(settings) as tls_files:
        store = Store()  # replication, when on, listens to its changes
        metrics = Metrics(store=store)
        try:
            factory = bounded_handshakes(loop_factory(settings.loop), settings.header_read_timeout)
            state = _start_state(settings, store, metrics)
        except (ManifestError, StartupError) as exc:
            print(f"pullsecret-injector serve: {exc}", file=sys.stderr)
            return 2
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                log.info(
                    "serving",
                    extra={"loop": type(runner.get_loop()).__mro__[1].__module__.split(".")[0]},
                )
                runner.run(_run_servers(settings, state, metrics, tls_files))
        finally:
            state.stop()
    return 0
