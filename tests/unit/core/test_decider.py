"""The server's Decider: the same decisions as decide(), and never a stale one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from helpers import registry_secret

from bench import workload
from webhook.cluster.store import Store
from webhook.core.injection import Decider, Policy, decide

NS = "team-a"


def pod(*images: Any, pull: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]
    }
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": n} for n in pull]
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.fixture
def store() -> Store:
    s = Store()
    s.upsert_secret(registry_secret(NS, "example", "registry.example.com"))
    s.upsert_secret(registry_secret(NS, "hub", "https://index.docker.io/v1/"))
    return s


def test_decides_every_bench_pod_as_decide_does_twice_over(tmp_path: Any) -> None:
    from webhook.cluster.manifests import fill_store, load_objects  # noqa: PLC0415

    store = Store()
    fill_store(store, load_objects([workload.write_cluster(tmp_path / "c.yaml", 20)]))
    policy = Policy.build(None, ["registry.example.com", "ghcr.io"])
    decider = Decider(policy)
    for body in workload.bodies():
        req = orjson.loads(body)["request"]
        ns, obj = req["namespace"], req["object"]
        want = decide(obj, ns, store.secrets_in(ns), policy)
        assert decider.decide(obj, ns, store.secrets_in(ns)) == want  # computed
        assert decider.decide(obj, ns, store.secrets_in(ns)) == want  # remembered


def test_a_secret_added_to_the_namespace_is_used_at_once(store: Store) -> None:
    decider = Decider(Policy())
    p = pod("ghcr.io/org/app:1", "registry.example.com/x")
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ("example",)
    store.upsert_secret(registry_secret(NS, "ghcr", "ghcr.io/org"))
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ("example", "ghcr")


def test_a_deleted_or_rotated_secret_is_not_remembered(store: Store) -> None:
    decider = Decider(Policy())
    p = pod("registry.example.com/x")
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ("example",)
    store.upsert_secret(registry_secret(NS, "example", "quay.io"))  # rotated to another host
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ()
    store.delete_secret(NS, "example")
    d = decider.decide(pod("nginx", pull=["example"]), NS, store.secrets_in(NS))
    assert d.add == ("hub",) and any("names no registry secret" in w for w in d.warnings)


def test_existing_entries_give_their_own_keyring(store: Store) -> None:
    decider = Decider(Policy())
    secrets = store.secrets_in(NS)
    assert decider.decide(pod("registry.example.com/x"), NS, secrets).add == ("example",)
    assert decider.decide(pod("registry.example.com/x", pull=["example"]), NS, secrets).add == ()


def test_namespaces_are_kept_apart_and_evicted_safely(store: Store) -> None:
    decider = Decider(Policy(), max_namespaces=1)
    store.upsert_secret(registry_secret("team-b", "other", "registry.example.com"))
    p = pod("registry.example.com/x")
    for _ in range(2):
        assert decider.decide(p, NS, store.secrets_in(NS)).add == ("example",)
        assert decider.decide(p, "team-b", store.secrets_in("team-b")).add == ("other",)
        assert decider.decide(p, "nowhere", store.secrets_in("nowhere")).add == ()


def test_images_that_are_not_strings_are_reported_not_remembered(store: Store) -> None:
    decider = Decider(Policy())
    for _ in range(2):
        d = decider.decide(pod(["not", "a", "string"], None), NS, store.secrets_in(NS))
        assert d.add == () and len(d.warnings) == 2


def test_an_opted_out_pod_is_left_alone_whatever_is_remembered(store: Store) -> None:
    decider = Decider(Policy())
    p = pod("registry.example.com/x")
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ("example",)
    p["metadata"]["annotations"] = {"pullsecret-injector.io/inject": "false"}
    d = decider.decide(p, NS, store.secrets_in(NS))
    assert d.add == () and d.patch == () and "pullsecret-injector.io/inject" in d.reason


def test_the_secret_selector_narrows_what_is_remembered_too(store: Store) -> None:
    store.upsert_secret(
        registry_secret(NS, "labelled", "registry.example.com", labels={"inject": "yes"})
    )
    decider = Decider(Policy.build("inject=yes"))
    p = pod("registry.example.com/x")
    for _ in range(2):  # computed, then remembered
        d = decider.decide(p, NS, store.secrets_in(NS))
        assert d.add == ("labelled",)
        assert dict(d.not_added)["example"] == "its labels do not match 'inject=yes'"


def test_the_patch_appends_after_existing_entries_in_name_order(store: Store) -> None:
    store.upsert_secret(registry_secret(NS, "another", "registry.example.com"))
    decider = Decider(Policy())
    d = decider.decide(pod("registry.example.com/x", pull=["mine"]), NS, store.secrets_in(NS))
    assert d.add == ("another", "example")
    assert [op["path"] for op in d.patch] == ["/spec/imagePullSecrets/-"] * 2
    assert [op["value"] for op in d.patch] == [{"name": "another"}, {"name": "example"}]


# ---- bounded memory (issue 11, item 1) ---------------------------------------------------


def test_made_up_pull_secret_names_are_never_remembered(store: Store) -> None:
    decider = Decider(Policy.build(None, []))
    secrets = store.secrets_in(NS)
    decider.decide(pod("registry.example.com/app"), NS, secrets)
    remembered = decider.memo_size()
    for round_ in range(100):
        names = [f"r{round_}-{i}" for i in range(1000)]
        decision = decider.decide(pod("registry.example.com/app", pull=names), NS, secrets)
        assert decision.add == ("example",)
    assert decider.memo_size() == remembered


def test_entry_warnings_are_ten_then_a_count(store: Store) -> None:
    names = [f"typo-{i}" for i in range(25)] + ["typo-0", "example"]
    decision = Decider(Policy.build(None, [])).decide(
        pod("registry.example.com/app", pull=names), NS, store.secrets_in(NS)
    )
    assert len(decision.warnings) == 11
    assert "'typo-9'" in decision.warnings[9]
    assert decision.warnings[10].startswith("and 15 more imagePullSecrets entries")
    assert decision.add == ()  # the existing entry "example" already serves the image


def test_the_memo_stays_under_its_byte_budget_whatever_the_images(store: Store) -> None:
    budget = 256 * 1024
    decider = Decider(Policy.build(None, []), max_bytes=budget)
    for ns in range(50):
        namespace = f"ns-{ns}"
        store.upsert_secret(registry_secret(namespace, "example", "registry.example.com"))
        images = [f"registry.example.com/{ns}-{i}-{'x' * 200}" for i in range(200)]
        decision = decider.decide(pod(*images), namespace, store.secrets_in(namespace))
        assert decision.add == ("example",)
        entries, size = decider.memo_size()
        assert size <= budget
    assert entries > 0  # it still remembers what fits


def test_the_memo_stays_under_its_entry_budget(store: Store) -> None:
    decider = Decider(Policy.build(None, []), max_entries=100)
    secrets = store.secrets_in(NS)
    for i in range(1000):
        decider.decide(pod(f"registry.example.com/app-{i}"), NS, secrets)
        assert decider.memo_size()[0] <= 100


def test_an_image_longer_than_any_reference_is_decided_not_remembered(store: Store) -> None:
    decider = Decider(Policy.build(None, []))
    secrets = store.secrets_in(NS)
    decider.decide(pod("registry.example.com/app"), NS, secrets)
    before = decider.memo_size()
    decision = decider.decide(pod("registry.example.com/" + "a" * 100_000), NS, secrets)
    assert "not a valid reference" in decision.warnings[0]
    assert decider.memo_size() == before


def test_a_pod_beyond_the_container_bound_is_admitted_unchanged_with_a_warning(
    store: Store,
) -> None:
    decider = Decider(Policy.build(None, [], max_containers=10))
    secrets = store.secrets_in(NS)
    assert decider.decide(pod(*["registry.example.com/app"] * 10), NS, secrets).add == ("example",)
    decision = decider.decide(pod(*["registry.example.com/app"] * 11), NS, secrets)
    assert decision.add == () and decision.patch == ()
    assert decision.warnings == (decision.reason,)
    assert "11 containers, more than the 10" in decision.reason


def test_the_container_bound_of_the_settings_is_the_core_default() -> None:
    from webhook.config import Settings  # noqa: PLC0415
    from webhook.core.injection import DEFAULT_MAX_CONTAINERS  # noqa: PLC0415

    assert Settings(dev=True).max_containers == DEFAULT_MAX_CONTAINERS == Policy().max_containers


# ---- whole decisions of a workload's pods (issue 14) ---------------------------------------


def test_a_workloads_next_pod_gets_the_remembered_decision(store: Store) -> None:
    decider = Decider(Policy())
    p = pod("registry.example.com/x", "nginx")
    first = decider.decide(p, NS, store.secrets_in(NS))
    again = decider.decide(pod("registry.example.com/x", "nginx"), NS, store.secrets_in(NS))
    assert again is first
    assert again == decide(p, NS, store.secrets_in(NS), Policy())


@pytest.mark.parametrize(
    ("second", "want_add", "want_paths"),
    [
        # another image: decided again, not the remembered decision
        (pod("nginx"), ("hub",), ["/spec/imagePullSecrets"]),
        # the same images with an imagePullSecrets list: the patch appends to it
        (pod("registry.example.com/x", pull=[]), ("example",), ["/spec/imagePullSecrets/-"]),
        # an existing entry naming a secret: another keyring
        (pod("registry.example.com/x", pull=["example"]), (), []),
    ],
    ids=["other-image", "list-present", "existing-entry"],
)
def test_what_the_decision_reads_of_a_pod_is_in_its_key(
    store: Store, second: dict[str, Any], want_add: tuple[str, ...], want_paths: list[str]
) -> None:
    decider = Decider(Policy())
    decider.decide(pod("registry.example.com/x"), NS, store.secrets_in(NS))
    got = decider.decide(second, NS, store.secrets_in(NS))
    assert got == decide(second, NS, store.secrets_in(NS), Policy())
    assert (got.add, [op["path"] for op in got.patch]) == (want_add, want_paths)


def test_a_remembered_decision_is_dropped_with_the_namespaces_secrets(store: Store) -> None:
    decider = Decider(Policy())
    p = pod("ghcr.io/org/app:1")
    first = decider.decide(p, NS, store.secrets_in(NS))
    assert first.add == ()
    store.upsert_secret(registry_secret(NS, "ghcr", "ghcr.io/org"))
    assert decider.decide(p, NS, store.secrets_in(NS)).add == ("ghcr",)


def test_whole_pods_stay_within_the_memos_budgets(store: Store) -> None:
    decider = Decider(Policy(), max_entries=300, max_bytes=200_000)
    for i in range(2_000):
        decider.decide(pod(f"registry.example.com/app-{i}", "nginx"), NS, store.secrets_in(NS))
        entries, size = decider.memo_size()
        assert entries <= 300 and size <= 200_000
