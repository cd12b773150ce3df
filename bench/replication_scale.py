"""Replication at scale: 1,000 namespaces, 20 sources. Figures, not assertions.

    python -m bench.replication_scale [--namespaces 1000] [--sources 20] [--qps 100]

The orchestrator (this process) runs the local wire-protocol API server of tests/kube/
(kube_apiserver_writes: real list/watch/write semantics, over TLS) with N namespaces and
S source registries each selecting every namespace, already converged (N*S copies, as a
previous controller left them). The controller runs in a child process, as `serve` would
run it: a ClusterWatcher filling a Store and a Replicator (leader election off),
so that its RSS is its own and it does not share an interpreter with the server.

Printed (one JSON object, and a table):
- startup: seconds from start until the first full reconcile found nothing to do;
- rotation of one source: seconds from the source's update until every one of its N
  copies carries the new data (observed in the server's event log), at the given qps;
- rotation of all sources at once: same for N*S copies (skipped with --quick);
- the controller's RSS: after imports, after the store is synced and the first pass
  done, and after the rotations (peak too).

The API server here is Python (a thread per connection); kube-apiserver answers writes
faster, so the rotation figures at high qps are bounded by this server, not the
controller. At the default qps (100/s) the rate limit dominates: N/qps seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "kube"), str(ROOT / "tests")]

REL = "psi-system"
SECRETS = "secrets"


def _rss_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return round(values.get("VmRSS", 0.0), 1), round(values.get("VmHWM", 0.0), 1)


# ---- the controller (child process) ------------------------------------------------------


def controller(kubeconfig: str, qps: float, workers: int) -> None:
    """Run watcher + replicator; answer `rss` and `passes` on stdin with JSON lines."""
    baseline = _rss_mib()[0]
    trace = bool(os.environ.get("PSI_BENCH_TRACEMALLOC"))
    if trace:
        import tracemalloc  # noqa: PLC0415

        tracemalloc.start(5)
    from webhook.cluster.apiclient import load_api_client  # noqa: PLC0415
    from webhook.cluster.reflector import WatchOptions  # noqa: PLC0415
    from webhook.cluster.store import Store  # noqa: PLC0415
    from webhook.cluster.watchers import ClusterWatcher  # noqa: PLC0415
    from webhook.config import Settings  # noqa: PLC0415
    from webhook.metrics import Metrics  # noqa: PLC0415
    from webhook.replication.controller import ReplicationOptions, Replicator  # noqa: PLC0415

    imported = _rss_mib()[0]
    api = load_api_client(Path(kubeconfig), None)
    store = Store()
    metrics = Metrics(store=store)
    watcher = ClusterWatcher(api, store, metrics, WatchOptions(page_size=500))
    options = ReplicationOptions(
        leader_election=False, qps=qps, burst=int(qps * 2), workers=workers
    )
    settings = Settings(dev=True, release_namespace=REL)
    replicator = Replicator(api, store, metrics, settings, options)
    started = time.monotonic()
    watcher.start()
    replicator.start()

    def say(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    while replicator.passes < 1:
        time.sleep(0.01)
    synced_at = time.monotonic()
    rss, peak = _rss_mib()
    say(
        event="ready",
        startup_seconds=round(synced_at - started, 3),
        rss_before_imports_mib=baseline,
        rss_after_imports_mib=imported,
        rss_synced_mib=rss,
        peak_rss_mib=peak,
        secrets_in_store=store.secret_count(),
        writes_at_startup=sum(
            s.value
            for m in metrics.registry.collect()
            if m.name == "pullsecret_injector_replication_actions"
            for s in m.samples
            if s.name.endswith("_total")
        ),
    )
    for line in sys.stdin:
        command = line.strip()
        if command == "rss":
            if trace:
                import gc  # noqa: PLC0415
                import tracemalloc  # noqa: PLC0415

                gc.collect()
                top = tracemalloc.take_snapshot().statistics("traceback")[:8]
                for stat in top:
                    sys.stderr.write(f"{stat.size / 2**20:.1f} MiB {stat.count}\n")
                    sys.stderr.write(
                        "".join(f"    {line}\n" for line in stat.traceback.format()[-6:])
                    )
            rss, peak = _rss_mib()
            times = os.times()
            say(
                event="rss",
                rss_mib=rss,
                peak_rss_mib=peak,
                passes=replicator.passes,
                cpu_seconds=round(times.user + times.system, 2),
            )
        elif command == "quit":
            break
    replicator.stop()
    watcher.stop()


# ---- the orchestrator ----------------------------------------------------------------------


def _hash_of(cluster: Any, namespace: str, name: str) -> str:
    from webhook.core.planner import data_hash  # noqa: PLC0415

    obj = cluster.secret(namespace, name)
    return str(data_hash(obj["type"], obj.get("data")))


def _seed(cluster: Any, namespaces: int, sources: int) -> list[str]:
    from kube_support import auths  # noqa: PLC0415

    from webhook.core.planner import (  # noqa: PLC0415
        HASH_ANNOTATION,
        SELECTOR_ANNOTATION,
        SOURCE_ANNOTATION,
        copy_labels,
    )

    names = [f"registry-{i:02}" for i in range(sources)]
    for i, name in enumerate(names):
        cluster.create_secret(
            REL,
            name,
            auths=auths(f"r{i}.example.com", password=f"initial-{i}"),
            annotations={SELECTOR_ANNOTATION: ""},
        )
    spaces = [f"ns-{i:04}" for i in range(namespaces)]
    for ns in spaces:
        cluster.create_namespace(ns, {"team": f"t{int(ns[3:]) % 10}"})
    copies = []
    for name in names:
        source = cluster.secret(REL, name)
        digest = _hash_of(cluster, REL, name)
        for ns in spaces:
            copies.append(
                cluster.secret_object(
                    ns,
                    name,
                    data=source["data"],
                    labels=copy_labels({}),
                    annotations={SOURCE_ANNOTATION: f"{REL}/{name}", HASH_ANNOTATION: digest},
                    applied=False,
                )
            )
    cluster.create_secrets(copies)
    return names


def _wait_rotated(
    cluster: Any, since_rv: int, names: set[str], digest: dict[str, str], expected: int
) -> float:
    """Seconds until `expected` copies of `names` were modified to their new hash."""
    from webhook.core.planner import HASH_ANNOTATION  # noqa: PLC0415

    started = time.monotonic()
    done: set[tuple[str, str]] = set()
    cursor = since_rv
    while len(done) < expected:
        events = cluster.events_after(cursor)
        for event in events:
            cursor = event.rv
            if event.resource != SECRETS or event.type != "MODIFIED":
                continue
            meta = event.obj["metadata"]
            name = meta["name"]
            annotations = meta.get("annotations") or {}
            if (
                name in names
                and meta["namespace"] != REL
                and annotations.get(HASH_ANNOTATION) == digest[name]
            ):
                done.add((meta["namespace"], name))
        if len(done) < expected:
            with cluster.cond:
                cluster.cond.wait(0.05)
        if time.monotonic() - started > 900:
            raise TimeoutError(f"only {len(done)} of {expected} copies rotated in 900 s")
    return time.monotonic() - started


def _rotate(cluster: Any, names: list[str], round_: int) -> tuple[int, dict[str, str]]:
    from kube_support import auths  # noqa: PLC0415

    since = cluster.revision
    digest: dict[str, str] = {}
    for i, name in enumerate(names):
        cluster.update_secret(
            REL, name, auths=auths(f"r{i}.example.com", password=f"rotated-{round_}-{i}")
        )
        digest[name] = _hash_of(cluster, REL, name)
    return since, digest


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ssl  # noqa: PLC0415

    from kube_apiserver import kubeconfig_text  # noqa: PLC0415
    from kube_apiserver_writes import WritableApiServer, WritableCluster  # noqa: PLC0415

    from webhook.serve import certs  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="psi-replication-bench-"))
    paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), tmp)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(paths["tls.crt"], paths["tls.key"])

    cluster = WritableCluster()
    cluster.create_namespace(REL)
    t0 = time.monotonic()
    names = _seed(cluster, args.namespaces, args.sources)
    seeded = time.monotonic() - t0
    server = WritableApiServer(cluster, ssl_context=context).start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(server, str(paths["ca.crt"])))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.replication_scale",
            "--controller",
            str(kubeconfig),
            "--qps",
            str(args.qps),
            "--workers",
            str(args.workers),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdin is not None and child.stdout is not None

    def ask(command: str) -> dict[str, Any]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(command + "\n")
        child.stdin.flush()
        return dict(json.loads(child.stdout.readline()))

    try:
        ready = json.loads(child.stdout.readline())
        at_ready = ask("rss")
        writes_before = len(server.writes)
        since, digest = _rotate(cluster, names[:1], 1)
        one = _wait_rotated(cluster, since, set(names[:1]), digest, args.namespaces)
        after_one = ask("rss")
        result: dict[str, Any] = {
            "namespaces": args.namespaces,
            "sources": args.sources,
            "copies": args.namespaces * args.sources,
            "qps": args.qps,
            "workers": args.workers,
            "seed_seconds": round(seeded, 2),
            "startup_to_first_full_pass_seconds": ready["startup_seconds"],
            "writes_at_startup": ready["writes_at_startup"],
            "rotate_one_source_seconds": round(one, 2),
            "rotate_one_source_controller_cpu_seconds": round(
                after_one["cpu_seconds"] - at_ready["cpu_seconds"], 2
            ),
            "rotate_one_source_copies": args.namespaces,
            "rss_after_imports_mib": ready["rss_after_imports_mib"],
            "rss_synced_mib": ready["rss_synced_mib"],
            "rss_after_one_rotation_mib": after_one["rss_mib"],
        }
        if not args.quick:
            since, digest = _rotate(cluster, names, 2)
            every = _wait_rotated(
                cluster, since, set(names), digest, args.namespaces * args.sources
            )
            after_all = ask("rss")
            result["rotate_all_sources_seconds"] = round(every, 2)
            result["rotate_all_sources_controller_cpu_seconds"] = round(
                after_all["cpu_seconds"] - after_one["cpu_seconds"], 2
            )
            result["rotate_all_sources_copies"] = args.namespaces * args.sources
            result["rss_after_all_rotations_mib"] = after_all["rss_mib"]
            result["peak_rss_mib"] = after_all["peak_rss_mib"]
        else:
            result["peak_rss_mib"] = after_one["peak_rss_mib"]
        result["writes_after_startup"] = len(server.writes) - writes_before
        return result
    finally:
        try:
            child.stdin.write("quit\n")
            child.stdin.flush()
            child.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
        server.stop()


def _table(result: dict[str, Any]) -> str:
    rows = [
        (
            "namespaces x sources = copies",
            f"{result['namespaces']} x {result['sources']} = {result['copies']}",
        ),
        ("write rate limit (qps) / workers", f"{result['qps']:g} / {result['workers']}"),
        (
            "startup to first full reconcile",
            f"{result['startup_to_first_full_pass_seconds']} s "
            f"({result['writes_at_startup']:g} writes: already converged)",
        ),
        (
            f"rotate 1 source -> {result['rotate_one_source_copies']} copies updated",
            f"{result['rotate_one_source_seconds']} s "
            f"(controller CPU {result['rotate_one_source_controller_cpu_seconds']} s)",
        ),
    ]
    if "rotate_all_sources_seconds" in result:
        rows.append(
            (
                f"rotate {result['sources']} sources -> "
                f"{result['rotate_all_sources_copies']} copies updated",
                f"{result['rotate_all_sources_seconds']} s "
                f"(controller CPU {result['rotate_all_sources_controller_cpu_seconds']} s)",
            )
        )
    rows += [
        ("controller RSS after imports", f"{result['rss_after_imports_mib']} MiB"),
        ("controller RSS synced (store + replicator)", f"{result['rss_synced_mib']} MiB"),
        (
            "controller RSS after rotation(s), peak",
            f"{result.get('rss_after_all_rotations_mib', result['rss_after_one_rotation_mib'])}"
            f" MiB, {result['peak_rss_mib']} MiB",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--qps", type=float, default=100.0, help="the controller's write limit")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="rotate one source only")
    parser.add_argument("--controller", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.controller:
        controller(args.controller, args.qps, args.workers)
        return 0
    result = run(args)
    print(_table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
