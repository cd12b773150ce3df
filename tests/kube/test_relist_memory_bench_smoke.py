"""bench/relist_memory.py re-lists what it says, at a tiny size (no figures asserted)."""

from __future__ import annotations

from pathlib import Path

from kube_apiserver import SECRETS, ApiServer, Cluster

from bench import relist_memory
from webhook.kubelet.dockerconfig import REGISTRY_SECRET_TYPES


def test_every_round_lists_every_stream_again_and_a_row_is_printed_for_each(
    cluster: Cluster, apiserver: ApiServer, kubeconfig: Path
) -> None:
    for i in range(3):
        cluster.create_namespace(f"team-{i}")
        cluster.create_secret(f"team-{i}", "registry")
    before = len(apiserver.requests_for(SECRETS, watch=False))
    result = relist_memory.run(relists=2, kubeconfig=str(kubeconfig))
    assert result["secrets"] == 3 and result["namespaces"] == 3
    rows = result["rows"]
    assert isinstance(rows, list)
    assert [r["at"] for r in rows] == ["synced", "re-list 1", "re-list 2"]
    assert all(float(r["rss_mib"]) > 0 for r in rows)
    # the first list and two re-lists of each secret-type stream
    lists = len(apiserver.requests_for(SECRETS, watch=False)) - before
    assert lists == 3 * len(REGISTRY_SECRET_TYPES)
    assert result["unreachable_after_unfreeze"] >= 0
