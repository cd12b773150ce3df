"""A source read that keeps failing keeps its backoff across partial passes.

A full pass that fails to read a source requeues EVERYTHING rate limited (0.5, 1, 2 ... 60 s).
A partial pass (one namespace changed) does not read a source whose hash is known, so its
success must not forget EVERYTHING's failures (client-go's workqueue forgets an item only
when that item was processed); only a full pass that reads every source does.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.cluster.workqueue import ItemExponentialBackoff, WorkQueue
from webhook.core.model import secret_from_object
from webhook.core.planner import SELECTOR_ANNOTATION, Config
from webhook.metrics import Metrics
from webhook.replication.copies import CopyWriter, Parts, SourceReader
from webhook.replication.events import ProblemReporter
from webhook.replication.expectations import Clashes, Expectations
from webhook.replication.reconcile import (
    EVERYTHING,
    Reconciler,
    ReplicationOptions,
    Work,
)

REL = "psi-system"


def source_obj() -> dict[str, Any]:
    raw = json.dumps({"auths": {"r.example": {"auth": "dTpw"}}}).encode()
    return {
        "metadata": {
            "namespace": REL,
            "name": "reg",
            "uid": "u1",
            "annotations": {SELECTOR_ANNOTATION: "team=a"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(raw).decode()},
    }


class Api:
    def __init__(self) -> None:
        self.fail_reads = False
        self.source_gets = 0

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if method == "GET" and path.endswith(f"/namespaces/{REL}/secrets/reg"):
            self.source_gets += 1
            if self.fail_reads:
                raise ApiException(status=503, reason="Service Unavailable")
            return source_obj()
        if method == "POST" and path.endswith("/events"):
            return {}
        return {}


def test_partial_passes_keep_the_backoff_of_a_failing_source_read() -> None:
    store = Store()
    store.replace_namespaces({REL: {}, "a1": {"team": "a"}, "a2": {"team": "a"}})
    secret = secret_from_object(source_obj())
    assert secret is not None
    store.upsert_secret(secret)
    store.mark_synced(SECRETS)
    store.mark_synced(NAMESPACES)
    api = Api()
    config = Config.build(REL)
    metrics = Metrics()
    expectations, clashes = Expectations(), Clashes()
    reader = SourceReader(api)  # type: ignore[arg-type]
    parts = Parts(
        api,
        store,
        metrics,
        config,
        reader,  # type: ignore[arg-type]
        CopyWriter(config, expectations, clashes),
        expectations,
        clashes,
    )
    options = ReplicationOptions(
        leader_election=False, retry_base_seconds=0.5, retry_cap_seconds=60
    )
    queue: WorkQueue[Any] = WorkQueue(ItemExponentialBackoff(0.5, 60))
    reconciler = Reconciler(
        parts, options, queue=queue, reporter=ProblemReporter(metrics, "me", reader.uid)
    )
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        reconciler.run(Work(full=True), stop, pool)  # reads the source, records its hash
        api.fail_reads = True
        for _ in range(4):
            reconciler.run(Work(full=True), stop, pool)
        assert queue.num_requeues(EVERYTHING) == 4  # backing off: 0.5, 1, 2, 4 s
        reconciler.run(Work(namespaces={"a1"}), stop, pool)  # a namespace changed
        assert queue.num_requeues(EVERYTHING) == 4  # the failing read keeps its backoff
        reconciler.run(Work(full=True), stop, pool)
        assert queue.num_requeues(EVERYTHING) == 5  # next retry after 8 s, not 0.5
        api.fail_reads = False
        reconciler.run(Work(full=True), stop, pool)
        assert queue.num_requeues(EVERYTHING) == 0  # read again: forgotten
