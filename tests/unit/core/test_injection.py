"""The decision: which in-scope secrets a pod gets, and the JSON Patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from helpers import registry_secret, secret_object

from webhook.core.injection import Policy, decide
from webhook.core.model import RegistrySecret, secret_from_object

NS = "team-a"


def pod(
    *images: str,
    pull: list[str] | None = None,
    field: str = "containers",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {field: [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]}
    if field != "containers":
        spec["containers"] = [{"name": "main", "image": "busybox"}]
    if pull is not None:
        spec["imagePullSecrets"] = [{"name": n} for n in pull]
    meta: dict[str, Any] = {"name": "p", "namespace": NS}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def secrets(*items: RegistrySecret) -> dict[str, RegistrySecret]:
    return {s.name: s for s in items}


def applied(p: dict[str, Any], ops: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(p), list(ops))
    return result


def names(p: dict[str, Any]) -> list[str]:
    return [e["name"] for e in p["spec"].get("imagePullSecrets", [])]


POLICY = Policy()


def test_injects_only_the_secret_whose_registry_the_image_uses() -> None:
    scope = secrets(
        registry_secret(NS, "example", "registry.example.com"),
        registry_secret(NS, "quay", "quay.io"),
    )
    p = pod("registry.example.com/team/app:v1")
    d = decide(p, NS, scope, POLICY)
    assert d.add == ("example",)
    assert names(applied(p, d.patch)) == ["example"]
    assert d.patch == (
        {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "example"}]},
    )


def test_appends_after_existing_entries_without_reordering() -> None:
    scope = secrets(
        registry_secret(NS, "b-reg", "registry.example.com"),
        registry_secret(NS, "a-reg", "ghcr.io"),
    )
    p = pod("registry.example.com/x", "ghcr.io/org/y", pull=["zz-user", "mine"])
    d = decide(p, NS, scope, POLICY)
    assert names(applied(p, d.patch)) == ["zz-user", "mine", "a-reg", "b-reg"]
    assert all(op["path"] == "/spec/imagePullSecrets/-" for op in d.patch)


def test_never_duplicates_an_existing_entry_and_is_idempotent() -> None:
    scope = secrets(registry_secret(NS, "example", "registry.example.com"))
    p = pod("registry.example.com/x", pull=["example"])
    assert decide(p, NS, scope, POLICY).patch == ()
    first = pod("registry.example.com/x")
    once = applied(first, decide(first, NS, scope, POLICY).patch)
    again = decide(once, NS, scope, POLICY)
    assert again.patch == () and again.add == ()


def test_nothing_to_add_means_no_patch() -> None:
    scope = secrets(registry_secret(NS, "quay", "quay.io"))
    d = decide(pod("registry.example.com/x"), NS, scope, POLICY)
    assert d.patch == () and not d.changed


@pytest.mark.parametrize("field", ["initContainers", "containers", "ephemeralContainers"])
def test_every_container_field_is_covered(field: str) -> None:
    scope = secrets(registry_secret(NS, "example", "registry.example.com"))
    d = decide(pod("registry.example.com/x", field=field), NS, scope, POLICY)
    assert d.add == ("example",)


def test_port_must_match() -> None:
    scope = secrets(
        registry_secret(NS, "plain", "registry.example.com"),
        registry_secret(NS, "port", "registry.example.com:5000"),
    )
    assert decide(pod("registry.example.com:5000/t/i:1"), NS, scope, POLICY).add == ("port",)
    assert decide(pod("registry.example.com/t/i:1"), NS, scope, POLICY).add == ("plain",)


def test_docker_hub_key_serves_docker_hub_images_through_the_fallback() -> None:
    scope = secrets(registry_secret(NS, "hub", "https://index.docker.io/v1/"))
    for image in ("nginx", "library/nginx:1.27", "docker.io/org/app", "index.docker.io/org/app"):
        d = decide(pod(image), NS, scope, POLICY)
        assert d.add == ("hub",), image
        assert d.images[0].via_default_registry
    assert decide(pod("quay.io/org/app"), NS, scope, POLICY).add == ()


def test_docker_hub_fallback_is_not_used_when_another_key_matches() -> None:
    # The kubelet only falls back to index.docker.io when no key of the keyring matched.
    scope = secrets(
        registry_secret(NS, "hub-v1", "https://index.docker.io/v1/"),
        registry_secret(NS, "hub-direct", "docker.io"),
    )
    assert decide(pod("nginx"), NS, scope, POLICY).add == ("hub-direct",)


def test_existing_entry_matching_blocks_the_fallback_too() -> None:
    scope = secrets(
        registry_secret(NS, "hub-v1", "https://index.docker.io/v1/"),
        registry_secret(NS, "mine", "docker.io"),
    )
    assert decide(pod("nginx", pull=["mine"]), NS, scope, POLICY).add == ()


def test_a_secret_the_kubelet_cannot_parse_is_never_injected() -> None:
    broken = secret_from_object(
        secret_object(NS, "broken", raw='{"auths":{"registry.example.com":{"auth":"%%%"}}}')
    )
    assert broken is not None and broken.error
    d = decide(pod("registry.example.com/x"), NS, secrets(broken), POLICY)
    assert d.add == ()
    assert dict(d.not_added)["broken"].startswith("the kubelet cannot parse it")


def test_warns_about_an_existing_entry_that_names_no_registry_secret() -> None:
    d = decide(pod("registry.example.com/x", pull=["ghost"]), NS, {}, POLICY)
    assert any("'ghost'" in w and "no registry secret" in w for w in d.warnings)


def test_invalid_image_is_skipped_with_a_warning_others_still_served() -> None:
    scope = secrets(registry_secret(NS, "example", "registry.example.com"))
    d = decide(pod("UPPER/Case:tag", "registry.example.com/x"), NS, scope, POLICY)
    assert d.add == ("example",)
    assert any("not a valid reference" in w for w in d.warnings)


def test_non_string_image_does_not_raise() -> None:
    p = pod("registry.example.com/x")
    p["spec"]["containers"][0]["image"] = 42
    d = decide(p, NS, {}, POLICY)
    assert d.add == () and any("not a valid reference" in w for w in d.warnings)


def test_opt_out_annotation() -> None:
    scope = secrets(registry_secret(NS, "example", "registry.example.com"))
    p = pod("registry.example.com/x", annotations={"pullsecret-injector.io/inject": "false"})
    d = decide(p, NS, scope, POLICY)
    assert d.patch == () and "pullsecret-injector.io/inject" in d.reason


def test_secret_selector_narrows_the_scope() -> None:
    scope = secrets(
        registry_secret(NS, "labelled", "registry.example.com", labels={"inject": "yes"}),
        registry_secret(NS, "other", "registry.example.com"),
    )
    policy = Policy.build("inject=yes")
    assert decide(pod("registry.example.com/x"), NS, scope, policy).add == ("labelled",)


def test_private_registry_without_credentials_warns() -> None:
    policy = Policy.build(None, ["registry.example.com", "docker.io"])
    d = decide(pod("registry.example.com/x", "nginx"), NS, {}, policy)
    assert len([w for w in d.warnings if "private registry" in w]) == 2


def test_glob_and_path_keys() -> None:
    scope = secrets(
        registry_secret(NS, "glob", "*.example.org"),
        registry_secret(NS, "org-path", "ghcr.io/org"),
    )
    assert decide(pod("cache.example.org/x"), NS, scope, POLICY).add == ("glob",)
    assert decide(pod("a.cache.example.org/x"), NS, scope, POLICY).add == ()
    assert decide(pod("ghcr.io/org/app"), NS, scope, POLICY).add == ("org-path",)
    assert decide(pod("ghcr.io/other/app"), NS, scope, POLICY).add == ()


def test_dockercfg_legacy_secrets_are_used() -> None:
    legacy = registry_secret(
        NS, "legacy", "registry.example.com", secret_type="kubernetes.io/dockercfg"
    )
    assert decide(pod("registry.example.com/x"), NS, secrets(legacy), POLICY).add == ("legacy",)


def test_null_image_pull_secrets_is_replaced_by_a_list() -> None:
    scope = secrets(registry_secret(NS, "example", "registry.example.com"))
    p = pod("registry.example.com/x")
    p["spec"]["imagePullSecrets"] = None
    d = decide(p, NS, scope, POLICY)
    assert names(applied(p, d.patch)) == ["example"]


def test_stable_order_independent_of_container_order() -> None:
    scope = secrets(
        registry_secret(NS, "b", "registry.example.com"),
        registry_secret(NS, "a", "ghcr.io"),
    )
    one = decide(pod("registry.example.com/x", "ghcr.io/y"), NS, scope, POLICY).add
    two = decide(pod("ghcr.io/y", "registry.example.com/x"), NS, scope, POLICY).add
    assert one == two == ("a", "b")


def test_pod_without_spec_is_left_alone() -> None:
    d = decide({"metadata": {}}, NS, {}, POLICY)
    assert d.patch == () and d.reason == "pod has no spec"


@pytest.mark.parametrize(
    ("entry", "image", "warned"),
    [
        ("registry.example.com", "registry.example.com:7000/x", True),
        ("registry.example.com:5000", "registry.example.com:7000/x", False),
        ("registry.example.com:5000", "registry.example.com:5000/x", True),
        ("docker.io", "index.docker.io/library/x", True),
        ("[::1]", "[::1]:5000/x", True),
        ("other.example.com", "registry.example.com/x", False),
    ],
)
def test_private_registry_entries_and_ports(entry: str, image: str, warned: bool) -> None:
    d = decide(pod(image), NS, {}, Policy.build(None, [entry]))
    assert any("private registry" in w for w in d.warnings) is warned


def test_a_key_only_an_older_go_kubelet_parses_is_injected_for_its_images() -> None:
    """`reg[0-9].example.com`: a filepath.Match class for kubelets built with Go before its
    October 2025 security releases (the kit's v1.28.7), an invalid key for newer ones: the
    secret is injected, as some node may need it, and for nothing else."""
    glob = registry_secret("ns", "regcred", "reg[0-9].example.com")
    decision = decide(
        pod("reg1.example.com/app", "rega.example.com/app"), "ns", secrets(glob), Policy()
    )
    assert decision.add == ("regcred",)
    assert [i.added for i in decision.images] == [("regcred",), ()]
