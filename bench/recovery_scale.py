"""Stuck-pod recovery at scale. Figures, not assertions.

    python -m bench.recovery_scale [--pods 1000] [--namespaces 100] [--memory-pods 10000]

Everything runs against the local wire-protocol API server of tests/kube/
(kube_apiserver_pods: real list/watch/eviction semantics over TLS, but Python, one thread
per connection, and no kubelet or ReplicaSet controller behind it). The controller runs in
a child process, as `serve` runs it (a ClusterWatcher filling a Store, and Recovery with
leader election off), so that its RSS is its own.

Printed (a table, then one JSON object):

1. latency: P stuck pods (owned, ImagePullBackOff) across N namespaces, no registry
   secret yet. Then one registry Secret is created in each namespace, one after the other
   (as replication does for a cluster registry). Per pod: seconds from its namespace's
   Secret creation to its eviction (p50, p95, max), and from the first Secret to the last
   eviction. The eviction rate limit is raised (--evictions-per-minute, default 10^6) so
   the figure is the controller's and this server's speed, not the limiter's;
2. the default limit (10 a minute): 20 stuck pods in one namespace; seconds from the
   Secret to the 10th eviction (the burst) and to the 11th (one token later, ~6 s);
3. memory at M Pending pods (all stuck, across N namespaces): the controller's RSS after
   imports and once its pod store is synced (and, for comparison, synced on the same
   cluster without any pod); and, measured in this process with
   tracemalloc over the same M objects as the server sends them: the trimmed PodInfo
   store against keeping the parsed objects (what an untrimmed informer cache holds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.replication_scale import ROOT, _rss_mib  # also puts tests/kube on sys.path

REL = "psi-system"
IMAGE = "registry.example.com/team/app:1"


# ---- the controller (child process) ------------------------------------------------------


def controller(kubeconfig: str, evictions_per_minute: float) -> None:
    """Run watcher + recovery; answer `rss` on stdin with a JSON line, until `quit`."""
    baseline = _rss_mib()[0]
    from webhook.cluster.apiclient import load_api_client  # noqa: PLC0415
    from webhook.cluster.reflector import WatchOptions  # noqa: PLC0415
    from webhook.cluster.store import Store  # noqa: PLC0415
    from webhook.cluster.watchers import ClusterWatcher  # noqa: PLC0415
    from webhook.config import Settings  # noqa: PLC0415
    from webhook.metrics import Metrics  # noqa: PLC0415
    from webhook.replication.recovery import Recovery, RecoveryOptions  # noqa: PLC0415

    imported = _rss_mib()[0]
    api = load_api_client(Path(kubeconfig), None)
    store, metrics = Store(), Metrics()
    watcher = ClusterWatcher(api, store, metrics, WatchOptions(page_size=500))
    options = RecoveryOptions(leader_election=False, evictions_per_minute=evictions_per_minute)
    recovery = Recovery(api, store, metrics, Settings(dev=True, release_namespace=REL), options)
    started = time.monotonic()
    watcher.start()
    recovery.start()

    def say(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    while recovery.passes < 1:
        time.sleep(0.01)
    pods = recovery.pods
    gc.collect()
    rss, peak = _rss_mib()
    say(
        event="ready",
        startup_seconds=round(time.monotonic() - started, 3),
        rss_before_imports_mib=baseline,
        rss_after_imports_mib=imported,
        rss_synced_mib=rss,
        peak_rss_mib=peak,
        pods_in_store=len(pods) if pods is not None else 0,
        stuck=pods.stuck if pods is not None else 0,
    )
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        gc.collect()
        rss, peak = _rss_mib()
        times = os.times()
        say(event="rss", rss_mib=rss, peak_rss_mib=peak, cpu=round(times.user + times.system, 2))
    recovery.stop()
    watcher.stop()


# ---- the orchestrator ----------------------------------------------------------------------


class _Run:
    """The local API server (TLS) and a controller child process on it."""

    def __init__(self, cluster: Any, evictions_per_minute: float) -> None:
        import ssl  # noqa: PLC0415

        from kube_apiserver import kubeconfig_text  # noqa: PLC0415
        from kube_apiserver_pods import PodApiServer  # noqa: PLC0415

        from webhook.serve import certs  # noqa: PLC0415

        tmp = Path(tempfile.mkdtemp(prefix="psi-recovery-bench-"))
        paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), tmp)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        self.cluster = cluster
        self.server = PodApiServer(cluster, ssl_context=context).start()
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(self.server, str(paths["ca.crt"])))
        self.child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.recovery_scale",
                "--controller",
                str(kubeconfig),
                "--evictions-per-minute",
                str(evictions_per_minute),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.child.stdout is not None
        self.ready: dict[str, Any] = json.loads(self.child.stdout.readline())

    def ask(self) -> dict[str, Any]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write("rss\n")
        self.child.stdin.flush()
        return dict(json.loads(self.child.stdout.readline()))

    def close(self) -> None:
        try:
            assert self.child.stdin is not None
            self.child.stdin.write("quit\n")
            self.child.stdin.flush()
            self.child.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.child.kill()
        self.server.stop()


def _cluster(pods: int, namespaces: int, *, stuck: bool = True) -> tuple[Any, list[str]]:
    from kube_apiserver_pods import PodCluster  # noqa: PLC0415

    cluster = PodCluster()
    cluster.create_namespace(REL)
    spaces = [f"ns-{i:03}" for i in range(namespaces)]
    for ns in spaces:
        cluster.create_namespace(ns)
    objects = []
    for i in range(pods):
        ns = spaces[i % namespaces]
        rs = f"app-{i % 7}-5d8f7c"
        obj = cluster.pod_object(ns, f"{rs}-{i:05}", IMAGE, owner=("ReplicaSet", rs))
        objects.append(obj)
    cluster.create_pods(objects)
    if stuck:
        for obj in objects:
            meta = obj["metadata"]
            status = cluster.waiting_status(meta["namespace"], meta["name"], "ImagePullBackOff")
            cluster.set_status(meta["namespace"], meta["name"], status)
    return cluster, spaces


def _wait_evictions(cluster: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for e in cluster.evictions if e[2] == 201) < count:
        if time.monotonic() > deadline:
            done = sum(1 for e in cluster.evictions if e[2] == 201)
            raise TimeoutError(f"{done} of {count} evictions in {timeout} s")
        time.sleep(0.01)


def latency(pods: int, namespaces: int, evictions_per_minute: float) -> dict[str, Any]:
    from kube_support import auths  # noqa: PLC0415

    cluster, spaces = _cluster(pods, namespaces)
    run = _Run(cluster, evictions_per_minute)
    try:
        before = run.ask()
        created: dict[str, float] = {}
        first = time.monotonic()
        for ns in spaces:
            cluster.create_secret(ns, "registry", auths=auths("registry.example.com"))
            created[ns] = time.monotonic()
        _wait_evictions(cluster, pods, 600)
        after = run.ask()
        if len(cluster.evictions) != pods:  # each pod once, none refused
            raise RuntimeError(f"{len(cluster.evictions)} eviction requests for {pods} pods")
        per_pod = sorted(
            at - created[key.split("/", 1)[0]] for key, at in cluster.evicted_at.items()
        )
        last = max(cluster.evicted_at.values())
        return {
            "pods": pods,
            "namespaces": namespaces,
            "evictions_per_minute": evictions_per_minute,
            "controller_startup_seconds": run.ready["startup_seconds"],
            "secret_to_eviction_p50_seconds": round(statistics.median(per_pod), 3),
            "secret_to_eviction_p95_seconds": round(per_pod[int(len(per_pod) * 0.95) - 1], 3),
            "secret_to_eviction_max_seconds": round(per_pod[-1], 3),
            "first_secret_to_last_eviction_seconds": round(last - first, 3),
            "secrets_created_in_seconds": round(max(created.values()) - first, 3),
            "controller_cpu_seconds": round(after["cpu"] - before["cpu"], 2),
        }
    finally:
        run.close()


def default_limit() -> dict[str, Any]:
    from kube_support import auths  # noqa: PLC0415

    cluster, spaces = _cluster(20, 1)
    run = _Run(cluster, 10.0)
    try:
        start = time.monotonic()
        cluster.create_secret(spaces[0], "registry", auths=auths("registry.example.com"))
        _wait_evictions(cluster, 10, 60)
        burst = max(cluster.evicted_at.values()) - start
        _wait_evictions(cluster, 11, 60)
        eleventh = max(cluster.evicted_at.values()) - start
        return {
            "default_limit_10th_eviction_seconds": round(burst, 3),
            "default_limit_11th_eviction_seconds": round(eleventh, 3),
        }
    finally:
        run.close()


def memory(pods: int, namespaces: int) -> dict[str, Any]:
    import orjson  # noqa: PLC0415
    from kube_apiserver import _typed, encode  # noqa: PLC0415

    from webhook.cluster.pods import PodStore, trim  # noqa: PLC0415

    cluster, _ = _cluster(pods, namespaces)
    wire = [encode(_typed("Pod", obj)) for obj in cluster.objects("pods")]
    mean_bytes = round(sum(map(len, wire)) / len(wire))

    def held(build: Any) -> tuple[float, Any]:
        gc.collect()
        tracemalloc.start()
        kept = build()
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return size / 2**20, kept

    def trimmed() -> PodStore:
        store = PodStore()
        store.replace([p for p in (trim(orjson.loads(b)) for b in wire) if p is not None])
        return store

    trimmed_mib, store = held(trimmed)
    full_mib, objects = held(lambda: [orjson.loads(b) for b in wire])
    assert len(store) == len(objects) == pods
    del store, objects

    empty, _ = _cluster(0, namespaces)
    baseline = _Run(empty, 10.0)
    try:
        without_pods = baseline.ask()
    finally:
        baseline.close()
    run = _Run(cluster, 10.0)
    try:
        synced = run.ask()
        return {
            "controller_rss_synced_without_pods_mib": without_pods["rss_mib"],
            "memory_pods": pods,
            "pod_json_bytes_mean": mean_bytes,
            "trimmed_store_mib": round(trimmed_mib, 2),
            "trimmed_bytes_per_pod": round(trimmed_mib * 2**20 / pods),
            "full_objects_mib": round(full_mib, 2),
            "full_bytes_per_pod": round(full_mib * 2**20 / pods),
            "controller_pods_in_store": run.ready["pods_in_store"],
            "controller_rss_after_imports_mib": run.ready["rss_after_imports_mib"],
            "controller_rss_synced_mib": synced["rss_mib"],
            "controller_peak_rss_mib": synced["peak_rss_mib"],
            "controller_startup_seconds": run.ready["startup_seconds"],
        }
    finally:
        run.close()


def _table(r: dict[str, Any]) -> str:
    rows = []
    if "pods" in r:
        rows += [
            ("stuck pods / namespaces", f"{r['pods']} / {r['namespaces']}"),
            ("eviction limit (per minute)", f"{r['evictions_per_minute']:g}"),
            (
                "Secret -> eviction p50 / p95 / max",
                f"{r['secret_to_eviction_p50_seconds']} / {r['secret_to_eviction_p95_seconds']}"
                f" / {r['secret_to_eviction_max_seconds']} s",
            ),
            (
                "first Secret -> last eviction",
                f"{r['first_secret_to_last_eviction_seconds']} s (the {r['namespaces']} Secrets "
                f"took {r['secrets_created_in_seconds']} s to create; controller CPU "
                f"{r['controller_cpu_seconds']} s)",
            ),
        ]
    if "default_limit_10th_eviction_seconds" in r:
        rows += [
            (
                "default limit 10/min: 10th / 11th eviction",
                f"{r['default_limit_10th_eviction_seconds']} s / "
                f"{r['default_limit_11th_eviction_seconds']} s after the Secret",
            )
        ]
    if "memory_pods" in r:
        rows += [
            (
                f"memory at {r['memory_pods']} Pending pods",
                f"{r['pod_json_bytes_mean']} B/pod JSON",
            ),
            (
                "  trimmed store (tracemalloc)",
                f"{r['trimmed_store_mib']} MiB ({r['trimmed_bytes_per_pod']} B/pod)",
            ),
            (
                "  full objects kept (tracemalloc)",
                f"{r['full_objects_mib']} MiB ({r['full_bytes_per_pod']} B/pod)",
            ),
            (
                "  controller RSS synced, same cluster without pods",
                f"{r['controller_rss_synced_without_pods_mib']} MiB",
            ),
            (
                "  controller RSS: imports -> synced (peak)",
                f"{r['controller_rss_after_imports_mib']} -> {r['controller_rss_synced_mib']} MiB"
                f" ({r['controller_peak_rss_mib']} MiB), {r['controller_pods_in_store']} pods "
                f"listed in {r['controller_startup_seconds']} s",
            ),
        ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--memory-pods", type=int, default=10000)
    parser.add_argument("--evictions-per-minute", type=float, default=1e6)
    parser.add_argument("--quick", action="store_true", help="skip the default-limit run")
    parser.add_argument("--memory-only", action="store_true", help="only the memory figures")
    parser.add_argument("--controller", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.controller:
        controller(args.controller, args.evictions_per_minute)
        return 0
    result: dict[str, Any] = {}
    if not args.memory_only:
        result.update(latency(args.pods, args.namespaces, args.evictions_per_minute))
    if not (args.quick or args.memory_only):
        result.update(default_limit())
    if args.memory_pods:
        result.update(memory(args.memory_pods, args.namespaces))
    print(_table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
