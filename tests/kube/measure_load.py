"""How long the first sync of N registry secrets takes through the local API server.

Not a test (timings belong in bench/): run it by hand,

    .venv/bin/python tests/kube/measure_load.py [N] [--replicated]

The local API server runs in a child process (its own GIL) holding N kubectl-applied
registry secrets, 10 a namespace: all with distinct credentials, or with --replicated 97
distinct configs copied around (as project/cluster registries are). Printed side by side,
in one run, over the same pages (limit=500):

- the ClusterWatcher's first sync (raw pages, orjson, memoised parse, store);
- the same pages read raw and parsed with orjson only (transfer + JSON: the floor);
- the same pages through the client's model deserialisation (V1SecretList), which is
  what `list_secret_for_all_namespaces()` does without `_preload_content=False`.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

import orjson  # noqa: E402
from kube_apiserver import DOCKERCONFIGJSON, ApiServer, Cluster, kubeconfig_text  # noqa: E402
from kube_support import (  # noqa: E402
    Harness,
    Tls,
    auths,
)
from kubernetes import client  # noqa: E402

from webhook.cluster.apiclient import load_api_client  # noqa: E402

SELECTOR = f"type={DOCKERCONFIGJSON}"


def serve(count: int, distinct: bool, tmp: Path, conn: Connection) -> None:
    tls = Tls(tmp)
    cluster = Cluster()
    cluster.create_secrets(
        cluster.secret_object(
            f"ns-{i // 10:05d}",
            f"pull-{i % 10}",
            auths=auths(f"r{i % 97}.example.com", password=f"pw-{i if distinct else 0}"),
        )
        for i in range(count)
    )
    for n in range(count // 10):
        cluster.create_namespace(f"ns-{n:05d}")
    server = ApiServer(cluster, ssl_context=tls.server).start()
    (tmp / "kubeconfig").write_text(kubeconfig_text(server, str(tls.ca_file)))
    conn.send("ready")
    conn.recv()  # until the parent is done
    server.stop()


def pages(api: client.CoreV1Api, raw: bool) -> int:
    token, items = None, 0
    while True:
        if raw:
            resp = api.list_secret_for_all_namespaces(
                field_selector=SELECTOR, limit=500, _continue=token, _preload_content=False
            )
            body = orjson.loads(resp.data)
            items += len(body["items"])
            token = body["metadata"].get("continue")
        else:
            page = api.list_secret_for_all_namespaces(
                field_selector=SELECTOR, limit=500, _continue=token
            )
            items += len(page.items)
            token = page.metadata._continue
        if not token:
            return items


def main(count: int, distinct: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="measure-load-"))
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(
        target=serve, args=(count, distinct, tmp, child), daemon=True
    )
    proc.start()
    assert parent.recv() == "ready"
    kubeconfig = tmp / "kubeconfig"
    what = "all distinct" if distinct else "97 distinct configs, replicated"
    print(f"{count} registry secrets ({what}), pages of 500, server in another process")
    api = client.CoreV1Api(load_api_client(kubeconfig, None))
    pages(api, raw=True)  # warm up: imports, TLS, the server's sort

    for _ in range(2):
        harness = Harness(kubeconfig, page_size=500, watch_timeout_seconds=300)
        started = time.perf_counter()
        harness.watcher.start()
        while not harness.store.is_synced("secrets", "namespaces"):
            time.sleep(0.005)
        took = time.perf_counter() - started
        harness.watcher.stop()
        assert harness.store.secret_count() == count
        print(f"  ClusterWatcher first sync:              {took:6.2f} s")
        started = time.perf_counter()
        assert pages(api, raw=True) == count
        print(f"  raw pages + orjson only (the floor):    {time.perf_counter() - started:6.2f} s")
    started = time.perf_counter()
    assert pages(api, raw=False) == count
    print(f"  V1SecretList models, no parse at all:   {time.perf_counter() - started:6.2f} s")
    parent.send("done")
    proc.join(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, "--replicated" not in sys.argv)
