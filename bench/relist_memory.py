"""Memory across many re-lists of the live state (issue 11, item 6: "no growth across
re-lists"). Figures, not assertions.

    . /tmp/psi-k8s/env                       # or any cluster named by KUBECONFIG
    python -m bench.cluster_scale load --namespaces 10000 --per-namespace 5   # 50k secrets
    PYTHONMALLOC=malloc python -m bench.relist_memory [--relists 12]

`bench/cluster_scale.py` forces re-lists the way they happen (it kills the API server, and
the watches get 410 Gone), three of them, and measures the `serve` process; each re-list
there also carries the reconnects, the probe traffic and the control server. This isolates
the re-list itself, in this process: a ``ClusterWatcher`` (the real kubernetes client, the
real API server) syncs, then every stream's list runs again, one after the other, as the
watch thread runs it after a 410 (``Reflector._list``: paced, pages frozen on parse, the
old picture handed back; the watches keep running beside it, and nothing in the cluster
changes meanwhile). After each round of re-lists it prints RSS, the objects frozen out of
the collector (``gc.get_freeze_count``) and the objects it tracks; at the end it unfreezes
and collects once: what that finds unreachable is cyclic garbage a freeze kept alive
(bench/README.md, "Live state on a real API server").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import load
from webhook.cluster.apiclient import load_api_client
from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.cluster.watchers import ClusterWatcher
from webhook.metrics import Metrics


def _row(label: str, started: float) -> dict[str, Any]:
    row = {
        "at": label,
        "rss_mib": round(load.rss_mib([os.getpid()])[0], 1),
        "frozen": gc.get_freeze_count(),
        "tracked": len(gc.get_objects()),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(
        f"{label:>12}: RSS {row['rss_mib']:7.1f} MiB, frozen {row['frozen']:>9,}, "
        f"tracked {row['tracked']:>7,}  ({row['seconds']} s)",
        flush=True,
    )
    return row


def run(relists: int, kubeconfig: str | None) -> dict[str, Any]:
    store = Store()
    api_client = load_api_client(Path(kubeconfig) if kubeconfig else None, None)
    watcher = ClusterWatcher(api_client, store, Metrics(store=store))
    started = time.monotonic()
    watcher.start()
    try:
        while not store.is_synced(SECRETS, NAMESPACES):
            time.sleep(0.1)
        rows = [_row("synced", started)]
        for i in range(relists):
            for stream in watcher._streams:  # what the watch thread runs on a 410
                stream._list()
            rows.append(_row(f"re-list {i + 1}", started))
        gc.unfreeze()
        unreachable = gc.collect()
        after = load.rss_mib([os.getpid()])[0]
        print(f"unfrozen and collected: {unreachable} unreachable objects, RSS {after:.1f} MiB")
    finally:
        watcher.stop()
    return {
        "secrets": store.secret_count(),
        "namespaces": len(store.namespaces()),
        "pythonmalloc": os.environ.get("PYTHONMALLOC", ""),
        "rows": rows,
        "unreachable_after_unfreeze": unreachable,
        "growth_after_first_relist_mib": round(
            rows[-1]["rss_mib"] - rows[min(1, len(rows) - 1)]["rss_mib"], 1
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relist_memory", description=__doc__)
    p.add_argument("--relists", type=int, default=12)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    args = p.parse_args(argv)
    result = run(args.relists, args.kubeconfig)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
