"""ClusterWatcher keeps the store an exact, live picture, through the real kubernetes client."""

from __future__ import annotations

import base64
import gc
import logging
import threading
import time
from collections.abc import Callable

import pytest
from helpers import wait_for
from kube_apiserver import (
    DOCKERCFG,
    DOCKERCONFIGJSON,
    NAMESPACES,
    SECRETS,
    ApiServer,
    Cluster,
    Filter,
    Request,
    held_events,
)
from kube_support import Harness, auths

from webhook.cluster.heap import HeapKeeper
from webhook.cluster.pacing import PACE_MAX_PAUSE_SECONDS, ListPacer

MakeHarness = Callable[..., Harness]


def synced(h: Harness) -> bool:
    return h.store.is_synced("secrets", "namespaces")


def populate(cluster: Cluster) -> None:
    cluster.create_namespace("wire-a")
    cluster.create_namespace("wire-b", {"field.cattle.io/projectId": "p-abc12"})
    cluster.create_secret("wire-a", "regcred", auths=auths("registry.example.com"))
    cluster.create_secret("wire-a", "quay", auths=auths("quay.io"))
    cluster.create_secret("wire-a", "legacy", secret_type=DOCKERCFG, auths=auths("old.example"))
    cluster.create_secret("wire-b", "regcred", auths=auths("registry.example.com:5000"))
    cluster.create_secret("wire-b", "settings", secret_type="Opaque", data={"k": "dg=="})


def test_initial_sync_reads_every_page_of_both_types(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    for i in range(7):
        cluster.create_secret(f"ns-{i}", "pull", auths=auths(f"r{i}.example"), labels={"i": str(i)})
    h = make_harness(page_size=2)
    assert not synced(h)
    wait_for(lambda: synced(h), "the first full sync")

    assert h.registries("wire-a", "regcred") == ("registry.example.com",)
    assert h.registries("wire-a", "legacy") == ("old.example",)
    assert h.secret("wire-a", "legacy").type == DOCKERCFG
    assert h.secret("wire-b", "settings") is None  # Opaque: left out by the field selector
    assert h.secret("ns-6", "pull").labels == {"i": "6"}
    assert h.store.secret_count() == 4 + 7
    assert h.store.namespace_labels("wire-b") == {
        "field.cattle.io/projectId": "p-abc12",
        "kubernetes.io/metadata.name": "wire-b",
    }
    assert h.metric("pullsecret_injector_cache_secrets") == 11
    assert h.metric("pullsecret_injector_cache_namespaces") == 2

    lists = apiserver.requests_for(SECRETS, watch=False)
    json_pages = [r for r in lists if r.query.get("fieldSelector") == f"type={DOCKERCONFIGJSON}"]
    cfg_pages = [r for r in lists if r.query.get("fieldSelector") == f"type={DOCKERCFG}"]
    # 10 secrets, 2 a page, then an empty last page: the Opaque wire-b/settings is the last
    # key, and the server says "more" as long as keys remain, matching or not.
    assert len(json_pages) == 6
    assert all(r.query["limit"] == "2" for r in lists)
    assert sum("continue" in r.query for r in json_pages) == 5
    assert len(cfg_pages) == 1


def test_watches_start_from_the_list_resource_version_with_bookmarks(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    listed_rv = str(cluster.revision)
    make_harness(watch_timeout_seconds=30)
    watches = wait_for(
        lambda: (
            len(apiserver.requests_for(SECRETS, watch=True)) == 2
            and apiserver.requests_for(SECRETS, watch=True)
        ),
        "both secret watches",
    )
    for req in watches:
        assert req.query["resourceVersion"] == listed_rv
        assert req.query["allowWatchBookmarks"] == "true"
        assert req.query["timeoutSeconds"] == "30"
    assert {r.query["fieldSelector"] for r in watches} == {
        f"type={DOCKERCONFIGJSON}",
        f"type={DOCKERCFG}",
    }


def test_added_updated_and_deleted_secrets_are_reflected(
    cluster: Cluster, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")

    cluster.create_secret("wire-b", "newcred", auths=auths("ghcr.io"))
    wait_for(lambda: h.registries("wire-b", "newcred") == ("ghcr.io",), "the added secret")

    cluster.update_secret("wire-a", "regcred", auths=auths("registry.example.com:443"))
    wait_for(
        lambda: h.registries("wire-a", "regcred") == ("registry.example.com:443",),
        "the new registry",
    )
    cluster.update_secret("wire-b", "regcred", labels={"team": "x"})
    wait_for(lambda: h.secret("wire-b", "regcred").labels == {"team": "x"}, "the new label")

    cluster.delete_secret("wire-a", "quay")
    wait_for(lambda: h.secret("wire-a", "quay") is None, "the deleted secret to go")
    cluster.delete_secret("wire-a", "legacy")  # dockercfg: the other stream
    wait_for(lambda: h.secret("wire-a", "legacy") is None, "the deleted dockercfg secret")
    assert h.metric("pullsecret_injector_cache_secrets") == 3


def test_namespace_changes_are_reflected(cluster: Cluster, make_harness: MakeHarness) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    cluster.create_namespace("wire-c")
    cluster.label_namespace("wire-c", {"field.cattle.io/projectId": "p-abc12"})
    wait_for(
        lambda: (h.store.namespace_labels("wire-c") or {}).get("field.cattle.io/projectId"),
        "the namespace label",
    )
    cluster.delete_namespace("wire-a")  # Terminating, its secrets deleted, then gone
    wait_for(lambda: h.store.namespace_labels("wire-a") is None, "the namespace to go")
    # Its secrets' DELETED events come on the secret streams, in their own time.
    wait_for(lambda: not h.store.secrets_in("wire-a"), "the namespace's secrets to go")
    assert h.metric("pullsecret_injector_cache_namespaces") == 2


def test_410_gone_relists_without_losing_a_change_made_in_between(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "the sync and three watches")
    lists_before = len(apiserver.requests_for(SECRETS, watch=False))

    # Changes the open watches never deliver, then etcd compacts and the watches expire.
    with held_events(cluster):
        cluster.update_secret("wire-a", "regcred", auths=auths("changed.example"))
        cluster.create_secret("wire-b", "between", auths=auths("ghcr.io"))
        cluster.delete_secret("wire-a", "quay")
        apiserver.list_delay = 0.2  # a slow relist: the store must serve the old state meanwhile
        missing: list[str] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                if h.secret("wire-b", "regcred") is None or h.secret("wire-a", "legacy") is None:
                    missing.append("a secret untouched by the changes vanished during the relist")
                time.sleep(0.0005)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        assert apiserver.expire_watches() == 3

    wait_for(lambda: h.registries("wire-a", "regcred") == ("changed.example",), "the update")
    wait_for(lambda: h.secret("wire-a", "quay") is None, "the deletion")
    wait_for(lambda: h.secret("wire-b", "between") is not None, "the creation")
    stop.set()
    prober.join()
    assert missing == []
    wait_for(lambda: apiserver.open_watches() == 3, "every stream to watch again")
    assert h.restarts("secrets", "expired") == 2
    assert h.restarts("namespaces", "expired") == 1
    assert len(apiserver.requests_for(SECRETS, watch=False)) > lists_before
    assert synced(h)


def test_a_reconnect_from_a_compacted_resource_version_relists(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    """The 410 arrives as the first event of a new watch (the captured shape)."""
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    apiserver.stop()
    wait_for(lambda: h.restarts("secrets", "error") >= 2, "reconnect attempts to fail")
    cluster.delete_secret("wire-a", "quay")
    cluster.compact()
    apiserver.start()
    wait_for(lambda: h.secret("wire-a", "quay") is None, "the deletion, through a relist")
    assert h.restarts("secrets", "expired") >= 1


def test_server_unreachable_for_a_while_then_back_resumes_the_watch(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    lists_before = len(apiserver.requests_for(SECRETS, watch=False))
    apiserver.stop()
    wait_for(lambda: h.restarts("secrets", "error") >= 4, "several failed reconnects")
    assert synced(h)  # readiness holds: the last known state is served
    assert h.registries("wire-a", "regcred") == ("registry.example.com",)
    cluster.update_secret("wire-a", "regcred", auths=auths("after.example"))
    apiserver.start()
    wait_for(lambda: h.registries("wire-a", "regcred") == ("after.example",), "the change")
    # Resumed from the last resourceVersion: no relist was needed.
    assert len(apiserver.requests_for(SECRETS, watch=False)) == lists_before


def test_the_server_closing_the_stream_is_followed_by_a_new_watch(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "three open watches")
    watches_before = len(apiserver.requests_for(SECRETS, watch=True))
    assert apiserver.end_watches() == 3
    wait_for(lambda: apiserver.open_watches() == 3, "the watches to be reopened")
    assert len(apiserver.requests_for(SECRETS, watch=True)) == watches_before + 2
    cluster.create_secret("wire-a", "after-close", auths=auths("ghcr.io"))
    wait_for(lambda: h.secret("wire-a", "after-close") is not None, "the new secret")
    assert h.restarts("secrets", "closed") == 2

    apiserver.drop_connections()  # no HTTP ending at all
    cluster.create_secret("wire-a", "after-drop", auths=auths("ghcr.io"))
    wait_for(lambda: h.secret("wire-a", "after-drop") is not None, "the secret after a drop")


def test_the_watch_timeout_renews_the_watch_without_a_relist(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness(watch_timeout_seconds=1)
    wait_for(lambda: synced(h), "the first sync")
    lists = len(apiserver.requests_for(SECRETS, watch=False))
    wait_for(lambda: h.restarts("secrets", "timeout") >= 2, "watches to time out", timeout=5)
    cluster.create_secret("wire-a", "later", auths=auths("ghcr.io"))
    wait_for(lambda: h.secret("wire-a", "later") is not None, "the new secret")
    assert len(apiserver.requests_for(SECRETS, watch=False)) == lists


def test_a_half_open_connection_is_dropped_by_the_read_timeout(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness(watch_timeout_seconds=1)  # read timeout 1.5 s
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "open watches")
    apiserver.freeze_watches()  # the server neither writes nor closes: a dead peer
    cluster.create_secret("wire-a", "behind-frozen", auths=auths("ghcr.io"))
    wait_for(lambda: h.secret("wire-a", "behind-frozen") is not None, "the secret", timeout=8)
    assert h.restarts("secrets", "error") >= 1


def test_bookmarks_move_the_resource_version_so_a_reconnect_needs_no_relist(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "open watches")
    for i in range(3):  # changes none of the watches selects move the revision on
        cluster.create_secret("other", f"opaque-{i}", secret_type="Opaque", data={"k": "dg=="})
    bookmarked = str(cluster.revision)
    apiserver.send_bookmarks()
    wait_for(
        lambda: all(s.bookmarks_sent for s in apiserver.sessions) and len(apiserver.sessions) == 3,
        "bookmarks to be sent",
    )
    lists = len(apiserver.requests_for(SECRETS, watch=False))
    watches = len(apiserver.requests_for(SECRETS, watch=True))
    cluster.compact()  # the list's resourceVersion is now too old; the bookmark's is not
    apiserver.end_watches()
    renewed = wait_for(
        lambda: (
            apiserver.requests_for(SECRETS, watch=True)[watches:]
            if len(apiserver.requests_for(SECRETS, watch=True)) >= watches + 2
            else None
        ),
        "the renewed watches",
    )
    assert {r.query["resourceVersion"] for r in renewed} == {bookmarked}
    assert len(apiserver.requests_for(SECRETS, watch=False)) == lists
    assert h.restarts("secrets", "expired") == 0
    assert h.store.staleness("secrets") is not None


def test_malformed_data_turns_into_an_error_and_back(
    cluster: Cluster, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    assert h.secret("wire-a", "regcred").usable
    bad = base64.b64encode(b'{"auths": {"registry.example.com": ').decode()
    cluster.update_secret("wire-a", "regcred", data={".dockerconfigjson": bad})
    broken = wait_for(
        lambda: (s := h.secret("wire-a", "regcred")) is not None and s.error and s,
        "the parse error",
    )
    assert broken.keys == () and not broken.usable
    cluster.update_secret("wire-a", "regcred", auths=auths("registry.example.com"))
    wait_for(lambda: h.secret("wire-a", "regcred").usable, "the secret to parse again")


def test_a_secret_recreated_with_another_type_survives_either_event_order(
    cluster: Cluster, make_harness: MakeHarness
) -> None:
    """The two type streams deliver DELETED (old type) and ADDED (new type) in any order."""
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")

    def json_stream(flt: Filter) -> bool:
        return ("type", "=", DOCKERCONFIGJSON) in flt.fields

    with held_events(cluster, json_stream):  # ADDED (dockercfg) first, DELETED (json) later
        cluster.replace_secret_type("wire-a", "regcred", DOCKERCFG, auths=auths("cfg.example"))
        wait_for(lambda: h.secret("wire-a", "regcred").type == DOCKERCFG, "the dockercfg one")
    cluster.create_secret("wire-a", "marker", auths=auths("m.example"))
    wait_for(lambda: h.secret("wire-a", "marker") is not None, "the json stream to catch up")
    assert h.secret("wire-a", "regcred").type == DOCKERCFG
    assert h.registries("wire-a", "regcred") == ("cfg.example",)

    # Back to dockerconfigjson, this time DELETED (dockercfg) arrives first.
    cluster.replace_secret_type("wire-a", "regcred", DOCKERCONFIGJSON, auths=auths("j.example"))
    wait_for(lambda: h.registries("wire-a", "regcred") == ("j.example",), "the json one")
    # And out of the registry types altogether: it drops out of the store.
    cluster.replace_secret_type("wire-a", "regcred", "Opaque", data={"k": "dg=="})
    wait_for(lambda: h.secret("wire-a", "regcred") is None, "the secret to drop out")
    assert h.metric("pullsecret_injector_cache_secrets") == h.store.secret_count()


def test_an_expired_continue_token_restarts_the_list(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    compacted: list[Request] = []

    def compact_after_first_page(req: Request) -> None:
        if "continue" in req.query and not compacted:
            compacted.append(req)
            cluster.create_secret("wire-a", "during-list", auths=auths("ghcr.io"))
            cluster.compact()

    apiserver.before_list = compact_after_first_page
    h = make_harness(page_size=1)
    wait_for(lambda: synced(h), "the sync")
    assert h.secret("wire-a", "during-list") is not None
    # Every list that was between pages when etcd compacted started over.
    assert h.restarts("secrets", "expired") + h.restarts("namespaces", "expired") >= 1
    first_pages = [
        r for r in apiserver.requests_for(SECRETS, watch=False) if "continue" not in r.query
    ]
    assert len(first_pages) >= 3


def test_live_read_of_a_namespace_never_seen(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    with held_events(cluster):  # the watches lag: the namespace's events are not here yet
        cluster.create_namespace("fresh")
        cluster.create_secret("fresh", "regcred", auths=auths("registry.example.com"))
        cluster.create_secret("fresh", "old", secret_type=DOCKERCFG, auths=auths("o.example"))
        cluster.create_secret("fresh", "opaque", secret_type="Opaque", data={"k": "dg=="})
        cluster.create_namespace("empty")
        assert not h.store.has_namespace("fresh")

        assert h.watcher.live_read("fresh", 2.0) is True
        assert h.registries("fresh", "regcred") == ("registry.example.com",)
        assert h.registries("fresh", "old") == ("o.example",)
        assert h.secret("fresh", "opaque") is None
        assert h.watcher.live_read("empty", 2.0) is True
        assert h.store.has_namespace("empty")  # cached: known, and empty
        assert h.metric("pullsecret_injector_live_reads_total", result="ok") == 2
        reads = [r for r in apiserver.requests if r.path == "/api/v1/namespaces/fresh/secrets"]
        assert sorted(r.query["fieldSelector"] for r in reads) == [
            f"type={DOCKERCFG}",
            f"type={DOCKERCONFIGJSON}",
        ]
    assert h.metric("pullsecret_injector_cache_secrets") == h.store.secret_count()


def test_live_read_fails_fast_when_the_server_is_slow_or_gone(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness(start=False)
    apiserver.list_delay = 3.0
    assert h.watcher.live_read("wire-a", 0.2) is False
    assert h.metric("pullsecret_injector_live_reads_total", result="timeout") == 1
    apiserver.list_delay = 0.0
    apiserver.stop()
    assert h.watcher.live_read("wire-b", 1.0) is False
    assert h.metric("pullsecret_injector_live_reads_total", result="error") == 1


def test_a_watch_event_during_a_live_read_wins_over_its_older_answer(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    cluster.create_secret("wire-a", "doomed", auths=auths("d.example"))
    wait_for(lambda: h.secret("wire-a", "doomed") is not None, "the secret")
    apiserver.list_delay = 0.5  # the live read's answer is half a second old when it lands
    result: list[bool] = []
    reader = threading.Thread(target=lambda: result.append(h.watcher.live_read("wire-a", 3.0)))
    reader.start()
    wait_for(
        lambda: any(r.path == "/api/v1/namespaces/wire-a/secrets" for r in apiserver.requests),
        "the live read to be answered",
    )
    cluster.delete_secret("wire-a", "doomed")
    wait_for(lambda: h.secret("wire-a", "doomed") is None, "the deletion")
    reader.join()
    assert result == [True]
    assert h.secret("wire-a", "doomed") is None
    assert h.registries("wire-a", "regcred") == ("registry.example.com",)


def test_no_credential_reaches_the_logs_or_the_store(
    cluster: Cluster,
    apiserver: ApiServer,
    make_harness: MakeHarness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Sup3r-S3cret-pw"
    token = base64.b64encode(f"user:{password}".encode()).decode()
    cluster.create_namespace("wire-a")
    cluster.create_secret(
        "wire-a", "regcred", auths=auths("registry.example.com", password=password)
    )
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    cluster.update_secret("wire-a", "regcred", auths=auths("r2.example", password=password))
    wait_for(lambda: h.registries("wire-a", "regcred") == ("r2.example",), "the update")
    leaky = base64.b64encode(
        f'{{"auths": {{"x": {{"auth": "{token}", "password": "{password}"'.encode()
    )
    cluster.update_secret("wire-a", "regcred", data={".dockerconfigjson": leaky.decode()})
    wait_for(lambda: h.secret("wire-a", "regcred").error, "the parse error")
    with held_events(cluster):
        cluster.create_secret("fresh", "regcred", auths=auths("f.example", password=password))
        assert h.watcher.live_read("fresh", 2.0)
    apiserver.expire_watches()
    wait_for(lambda: h.restarts("secrets", "expired") == 2, "the relist")
    wait_for(lambda: h.secret("fresh", "regcred") is not None, "the watch to catch up")

    forbidden = (password, token, "last-applied-configuration", leaky.decode()[:24])
    assert caplog.records, "the watcher logs what it does"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for bad in forbidden:
            assert bad not in text, f"{bad!r} leaked into a log record: {record.getMessage()}"
    for secret in h.store.all_secrets():
        for bad in forbidden:
            assert bad not in repr(secret)
        assert "kubectl.kubernetes.io/last-applied-configuration" not in secret.annotations


def test_our_annotations_are_kept_and_others_dropped(
    cluster: Cluster, make_harness: MakeHarness
) -> None:
    cluster.create_secret(
        "wire-a",
        "copy",
        auths=auths("registry.example.com"),
        annotations={"pullsecret-injector.io/source": "src/regcred", "other.io/x": "y"},
    )
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    assert dict(h.secret("wire-a", "copy").annotations) == {
        "pullsecret-injector.io/source": "src/regcred"
    }


def test_readiness_needs_both_resources_and_survives_a_reconnect(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    populate(cluster)
    apiserver.stop()
    h = make_harness()
    wait_for(lambda: h.restarts("namespaces", "error") >= 1, "the first failed list")
    assert not h.store.is_synced("secrets") and not h.store.is_synced("namespaces")
    assert h.store.staleness("secrets") is None
    apiserver.start()
    wait_for(lambda: synced(h), "the first sync")
    errors = h.restarts("secrets", "error")
    apiserver.stop()
    wait_for(lambda: h.restarts("secrets", "error") >= errors + 2, "failed reconnects")
    assert synced(h)
    age = h.store.staleness("secrets")
    assert age is not None
    wait_for(lambda: (h.store.staleness("secrets") or 0) > age, "the picture to age")
    assert h.metric("pullsecret_injector_last_sync_age_seconds", resource="secrets") > 0


def test_stop_ends_every_thread_promptly(cluster: Cluster, make_harness: MakeHarness) -> None:
    populate(cluster)
    h = make_harness(watch_timeout_seconds=300)
    wait_for(lambda: synced(h), "the first sync")
    threads = [t for t in threading.enumerate() if t.name.startswith("watch-")]
    assert len(threads) >= 3
    h.watcher.stop()  # joins for at most 5 s
    assert [t.name for t in threads if t.is_alive()] == []
    assert h.watcher.live_read("wire-a", 1.0) is False


def test_the_store_resource_names(cluster: Cluster, make_harness: MakeHarness) -> None:
    populate(cluster)
    h = make_harness()
    wait_for(lambda: synced(h), "the first sync")
    assert h.store.is_synced(SECRETS) and h.store.is_synced(NAMESPACES)


def test_the_relist_after_a_410_is_immediate_whatever_failed_before(
    cluster: Cluster,
    apiserver: ApiServer,
    make_harness: MakeHarness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11, item 6: watches fail for a while (the API server restarting), then the
    reconnect gets a 410; the re-list must not wait out the backoff of those failures,
    and the age of the picture must not reset on that reconnect."""
    populate(cluster)
    h = make_harness(backoff_cap_seconds=60)
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "the sync and three watches")
    caplog.set_level(logging.INFO, logger="webhook.cluster.reflector")
    relist_gate = threading.Event()
    apiserver.refuse_watches = True
    apiserver.end_watches()
    wait_for(lambda: h.restarts("secrets", "error") >= 2, "watches to fail")
    age_before = h.store.staleness("secrets")
    assert age_before is not None
    cluster.delete_secret("wire-a", "quay")
    cluster.compact()
    apiserver.before_list = lambda _request: relist_gate.wait(30)  # re-lists pending
    apiserver.refuse_watches = False
    try:
        # both secret streams (one a type) reconnect, get their 410, and wait on the re-list
        wait_for(lambda: h.restarts("secrets", "expired") >= 2, "reconnects to get the 410", 60)
        age_pending = h.store.staleness("secrets")
        assert age_pending is not None
        assert age_pending >= age_before  # not reset by the reconnect that got the 410
    finally:
        relist_gate.set()
        apiserver.before_list = None
    wait_for(lambda: h.secret("wire-a", "quay") is None, "the deletion, through the re-list")
    retries = [
        getattr(r, "retry_in_seconds", None)
        for r in caplog.records
        if r.getMessage().startswith("resourceVersion expired") and r.stream.startswith("secrets")  # type: ignore[attr-defined]
    ]
    assert retries and all(delay == 0 for delay in retries), retries


class _CountingHeap(HeapKeeper):
    """The real HeapKeeper, counting its calls; release() is counted, not run."""

    def __init__(self) -> None:
        super().__init__(releaser=self)  # type: ignore[arg-type]
        self.pages = 0
        self.releases = 0

    def release(self) -> None:
        self.releases += 1

    def page_done(self) -> None:
        self.pages += 1
        super().page_done()


def _in_collector(obj: object) -> bool:
    """Whether `obj` is in one of the collector's generations (not frozen)."""
    return any(o is obj for generation in range(3) for o in gc.get_objects(generation))


def test_a_relist_freezes_the_new_picture_page_by_page_and_gives_memory_back(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    """Issue 11, item 6: while a re-list of 50,000 secrets was built, the collector walked
    the new picture again and again (pauses up to 160 ms for every thread), and the memory
    of the old one stayed mapped. Each page must leave the collector's reach as it lands,
    and each re-list end with the heap trimmed."""
    populate(cluster)
    for i in range(5):
        cluster.create_secret(f"ns-{i}", "pull", auths=auths(f"r{i}.example"))
    heap = _CountingHeap()
    h = make_harness(heap=heap)  # pages of 2
    try:
        wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "the sync and watches")
        synced_releases, synced_pages = heap.releases, heap.pages
        assert synced_releases == 1  # the first picture: collected, frozen, trimmed once
        with held_events(cluster):
            cluster.update_secret("ns-4", "pull", auths=auths("relisted.example"))
            assert apiserver.expire_watches() == 3
        wait_for(lambda: h.registries("ns-4", "pull") == ("relisted.example",), "the re-list")
        wait_for(lambda: heap.releases >= synced_releases + 3, "every stream's re-list")
        # 10 dockerconfigjson secrets in pages of 2, and more for the other streams
        assert heap.pages - synced_pages >= 5
        relisted = h.secret("ns-4", "pull")
        untouched = h.secret("wire-a", "quay")
        assert relisted is not None and untouched is not None
        assert not _in_collector(relisted)
        assert not _in_collector(untouched)
    finally:
        gc.unfreeze()


class _CountingPacer(ListPacer):
    """The real pacer, every 2 items, with its pauses counted instead of slept."""

    def __init__(self) -> None:
        super().__init__(every=2, sleep=self._pause)
        self.pauses = 0

    def _pause(self, seconds: float) -> None:
        assert 0 <= seconds <= PACE_MAX_PAUSE_SECONDS
        self.pauses += 1


def test_a_relist_is_paced_and_the_first_list_is_not(
    cluster: Cluster, apiserver: ApiServer, make_harness: MakeHarness
) -> None:
    """Issue 11, item 6: a re-list parsed without pause kept the GIL from the event loop
    (admission p99 in seconds in a replay). Every re-list goes through the pacer; the first
    list does not (no admission is served before it, and startup should be quick)."""
    populate(cluster)
    for i in range(6):
        cluster.create_secret(f"ns-{i}", "pull", auths=auths(f"r{i}.example"))
    pacer = _CountingPacer()
    h = make_harness(pacer=pacer)
    wait_for(lambda: synced(h) and apiserver.open_watches() == 3, "the sync and watches")
    assert pacer.pauses == 0
    with held_events(cluster):
        cluster.update_secret("ns-5", "pull", auths=auths("relisted.example"))
        assert apiserver.expire_watches() == 3
    wait_for(lambda: h.registries("ns-5", "pull") == ("relisted.example",), "the re-list")
    wait_for(lambda: h.restarts("secrets", "expired") >= 2, "both secret streams' re-lists")
    # the six secrets above (and populate's) re-listed, a pause after every 2
    assert pacer.pauses >= 3
    assert h.registries("ns-0", "pull") == ("r0.example",)  # nothing lost on the way
