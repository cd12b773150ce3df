"""Time to load the cluster state into the store, and the memory it takes.

    python -m bench.storeload manifests FILE      load_objects + fill_store, as `serve --objects`
    python -m bench.storeload apiserver --namespaces N --dir DIR
        serve N namespaces of 5 registry secrets from the local wire-protocol API server
        of tests/kube/ (over TLS), write DIR/kubeconfig, serve until killed (bounded)
    python -m bench.storeload watch --kubeconfig K --expect N
        a webhook.cluster.watchers.ClusterWatcher on that server: seconds until the store is synced
        and holds N secrets

Each prints one JSON object. They run as separate processes so that the API server and
the watcher do not share an interpreter (and its GIL), and so that RSS is the loader's own.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.load import rss_mib
from bench.workload import REGISTRY_SECRETS, ROOT, namespace_name
from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store


def _rss() -> dict[str, float]:
    import os  # noqa: PLC0415

    rss, hwm = rss_mib([os.getpid()])
    return {"rss_mib": rss, "peak_rss_mib": hwm}


def manifests(path: Path) -> dict[str, Any]:
    before = _rss()["rss_mib"]
    t0 = time.perf_counter()
    objects = load_objects([path])
    t1 = time.perf_counter()
    store = Store()
    fill_store(store, objects)
    t2 = time.perf_counter()
    del objects
    gc.collect()
    return {
        "secrets": store.secret_count(),
        "namespaces": len(store.namespaces()),
        "parse_s": t1 - t0,
        "fill_s": t2 - t1,
        "total_s": t2 - t0,
        "rss_before_mib": before,
        **_rss(),
    }


def apiserver(namespaces: int, workdir: Path, max_seconds: float) -> None:
    sys.path.insert(0, str(ROOT / "tests/kube"))
    import ssl  # noqa: PLC0415

    from kube_apiserver import (  # type: ignore[import-not-found]  # noqa: PLC0415
        ApiServer,
        Cluster,
        kubeconfig_text,
    )

    from bench.workload import _docker_config  # noqa: PLC0415
    from webhook.serve import certs  # noqa: PLC0415

    paths = certs.write_bundle(certs.generate(["localhost"], ["127.0.0.1"]), workdir / "certs")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["tls.crt"], paths["tls.key"])
    cluster = Cluster()
    t0 = time.perf_counter()
    index = 0
    objects = []
    for n in range(namespaces):
        ns = namespace_name(n)
        cluster.create_namespace(ns, {"field.cattle.io/projectId": f"p-{n % 97}"})
        for name, key in REGISTRY_SECRETS.items():
            data = {".dockerconfigjson": _docker_config(key, index)}
            objects.append(
                cluster.secret_object(ns, name, data=data, labels={"team": f"t{n % 13}"})
            )
            index += 1
    cluster.create_secrets(objects)
    server = ApiServer(cluster, ssl_context=ctx).start()
    (workdir / "kubeconfig").write_text(kubeconfig_text(server, str(paths["ca.crt"])))
    print(json.dumps({"secrets": index, "build_s": time.perf_counter() - t0}), flush=True)
    time.sleep(max_seconds)  # the runner kills it long before; bounded all the same
    server.stop()


def watch(kubeconfig: Path, expect: int, timeout: float) -> dict[str, Any]:
    from webhook.cluster.apiclient import load_api_client  # noqa: PLC0415
    from webhook.cluster.watchers import ClusterWatcher  # noqa: PLC0415
    from webhook.metrics import Metrics  # noqa: PLC0415

    store = Store()
    watcher = ClusterWatcher(load_api_client(kubeconfig, None), store, Metrics(store=store))
    t0 = time.perf_counter()
    watcher.start()
    deadline = t0 + timeout
    try:
        while time.perf_counter() < deadline:
            if store.is_synced("secrets", "namespaces") and store.secret_count() >= expect:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        synced = store.is_synced("secrets", "namespaces")
        gc.collect()
        return {
            "synced": synced,
            "secrets": store.secret_count(),
            "namespaces": len(store.namespaces()),
            "total_s": elapsed,
            **_rss(),
        }
    finally:
        watcher.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.storeload")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("path", type=Path)
    a = sub.add_parser("apiserver")
    a.add_argument("--namespaces", type=int, required=True)
    a.add_argument("--dir", type=Path, required=True)
    a.add_argument("--max-seconds", type=float, default=600)
    w = sub.add_parser("watch")
    w.add_argument("--kubeconfig", type=Path, required=True)
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    if args.cmd == "manifests":
        print(json.dumps(manifests(args.path)))
    elif args.cmd == "apiserver":
        apiserver(args.namespaces, args.dir, args.max_seconds)
    else:
        print(json.dumps(watch(args.kubeconfig, args.expect, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
