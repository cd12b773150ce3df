"""bench/apiserver_latency.py: the pure parts (estimator, answers, configuration; no timings)."""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import orjson
import pytest

from bench import apiserver_latency as al
from webhook.cluster.manifests import fill_store
from webhook.cluster.store import Store
from webhook.config import Settings
from webhook.kubelet.labels import parse_selector
from webhook.metrics import Metrics
from webhook.serve.app import create_app

NS = "psi-apilat-t-real"
K8S = "1.28.0"


def post(app: Any, body: bytes) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://bench") as client:
            return await client.post(
                "/mutate", content=body, headers={"Content-Type": "application/json"}
            )

    return asyncio.run(run())


def real_app() -> Any:
    store = Store()
    fill_store(store, al.secret_objects(NS))
    settings = Settings(cert_file=Path("unused.crt"), key_file=Path("unused.key"))
    return create_app(settings, store, Metrics())


def review_body(uid: str) -> bytes:
    return orjson.dumps(al.admission_review(al.bench_pod("p-1", NS), uid))


def patch_ops(response: dict[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = orjson.loads(base64.b64decode(response["patch"]))
    return ops


# ---- the estimator ---------------------------------------------------------------------------


def test_quantile_interpolates_as_the_inclusive_method() -> None:
    values = [random.Random(3).expovariate(1.0) for _ in range(101)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert al.quantile(values, 0.5) == pytest.approx(statistics.median(values))
    assert al.quantile(values, 0.9) == pytest.approx(cuts[89])
    assert al.quantile(values, 0.99) == pytest.approx(cuts[98])
    assert al.quantile([4.0], 0.99) == 4.0
    assert al.quantile([1.0, 3.0], 0.25) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        al.quantile([], 0.5)


def test_added_latency_is_the_shift_between_quantiles() -> None:
    rng = random.Random(1)
    unseen = [0.002 + rng.expovariate(1000) for _ in range(500)]
    seen = [u + 0.0015 for u in unseen]
    rng.shuffle(seen)  # pairing does not matter to the quantile difference
    for q in al.QUANTILES:
        assert al.added(seen, unseen, q) == pytest.approx(0.0015)
    pairs = list(zip(seen, unseen, strict=True))
    # the per-pair differences spread with the noise of both sides: not a shift at p99
    diffs = sorted(s - u for s, u in pairs)
    assert al.quantile(diffs, 0.99) > 0.0015 + 0.001
    assert al.pair_median([(0.005, 0.002), (0.004, 0.003), (0.010, 0.001)]) == pytest.approx(0.003)


def test_ratio_is_undefined_when_the_baseline_adds_nothing() -> None:
    assert al.ratio(2.0, 1.0) == 2.0
    assert al.ratio(1.0, 0.0) is None
    assert al.ratio(1.0, -0.1) is None


def test_bootstrap_interval_holds_the_true_ratio() -> None:
    rng = random.Random(7)

    def pairs(shift: float) -> list[tuple[float, float]]:
        out = []
        for _ in range(400):
            u = 0.003 + rng.gauss(0, 0.0002)
            out.append((u + shift + rng.gauss(0, 0.0002), u))
        return out

    by_variant = {"real": pairs(0.0024), "same": pairs(0.002), "allow": pairs(0.001)}
    intervals = al.bootstrap_ratios(by_variant, "real", "same", 300)
    assert set(intervals) == {str(q) for q in al.QUANTILES}
    lo, hi = intervals["0.5"] or (0, 0)
    summary = al.summarize({"dry run": by_variant}, boot=0)["dry run"]
    estimate = summary["real_vs_same"]["0.5"]["ratio"]
    assert lo < estimate < hi
    assert lo > 1.1 and hi < 1.3  # around the true 1.2, and narrow at 400 pairs
    assert al.bootstrap_ratios({"same": pairs(0.002)}, "real", "same", 300)["0.5"] is None


def test_baseline_pools_the_unseen_creates_of_every_webhook() -> None:
    by_variant = {"real": [(5.0, 1.0), (6.0, 2.0)], "same": [(4.0, 3.0)]}
    assert sorted(al.baseline(by_variant)) == [1.0, 2.0, 3.0]
    summary = al.summarize({"dry run": by_variant}, boot=0)["dry run"]
    assert summary["baseline_n"] == 3
    assert summary["baseline_ms"]["0.5"] == pytest.approx(2000.0)
    assert summary["rows"]["real"]["added_ms"]["0.5"] == pytest.approx(5500.0 - 2000.0)
    assert summary["rows"]["same"]["added_ms"]["0.5"] == pytest.approx(4000.0 - 2000.0)
    assert summary["rows"]["real"]["pair_median_ms"] == pytest.approx(4000.0)


def summary_for(real_ms: float, same_ms: float) -> dict[str, Any]:
    def pairs(added_ms: float) -> list[tuple[float, float]]:
        return [(0.003 + i * 1e-6 + added_ms / 1000, 0.003 + i * 1e-6) for i in range(200)]

    samples = {"dry run": {"real": pairs(real_ms), "same": pairs(same_ms), "allow": pairs(1.0)}}
    return al.summarize(samples, boot=50)


def test_summary_reports_added_latency_ratio_and_patch_cost() -> None:
    s = summary_for(2.1, 2.0)["dry run"]
    assert s["rows"]["real"]["added_ms"]["0.5"] == pytest.approx(2.1, abs=1e-3)
    assert s["rows"]["real"]["n"] == 200
    assert s["real_vs_same"]["0.99"]["ratio"] == pytest.approx(1.05, abs=1e-3)
    assert s["patch_cost_ms"]["same-allow"]["0.5"] == pytest.approx(1.0, abs=1e-3)
    assert "same-one-op" not in s["patch_cost_ms"]


@pytest.mark.parametrize(
    ("real_ms", "same_ms", "met"), [(2.1, 2.0, True), (2.2, 2.0, True), (2.3, 2.0, False)]
)
def test_goal_is_at_most_1_1_times_the_minimal_same_patch_webhook(
    real_ms: float, same_ms: float, met: bool
) -> None:
    goals = al.goals(summary_for(real_ms, same_ms))
    assert [text.split(":")[0] for text, _, _ in goals] == ["dry run", "dry run"]
    assert any("p50" in text for text, _, _ in goals) and any("p99" in t for t, _, _ in goals)
    assert all(ok is met for _, ok, _ in goals)


def test_goal_is_not_met_when_the_baseline_adds_nothing() -> None:
    goals = al.goals(summary_for(1.0, 0.0))
    assert goals and not any(ok for _, ok, _ in goals)


def test_a_run_without_a_cluster_says_skipped_and_is_not_met(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = al.for_bench(quick=True)
    assert result == {"skipped": "no KUBECONFIG"}
    text = al.render(result)
    assert "skipped: no KUBECONFIG" in text
    assert "met" not in text.replace("skipped", "")
    assert al.goal_lines(result) == [
        "  [skipped] added latency on a real API server: no KUBECONFIG"
    ]
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert "does not exist" in al.for_bench(quick=True)["skipped"]


# ---- what the minimal webhooks answer --------------------------------------------------------


def test_minimal_same_answer_is_byte_for_byte_the_real_webhooks_answer() -> None:
    pod = al.bench_pod("p-1", NS)
    answers = al.variant_answers(al.real_review(pod, al.secret_objects(NS))["response"], pod)
    body = review_body("2f0e7b1c-0000-4000-8000-000000000001")
    real = post(real_app(), body)
    same = post(al.minimal_app(answers["same"]), body)
    assert real.status_code == same.status_code == 200
    assert same.json()["response"]["patch"] == real.json()["response"]["patch"]
    assert same.json() == real.json()
    assert same.content == real.content
    assert same.json()["response"]["uid"] == "2f0e7b1c-0000-4000-8000-000000000001"


def test_real_patch_appends_one_op_per_secret_and_one_op_variant_ends_the_same() -> None:
    pod = al.bench_pod("p-1", NS)
    real = al.real_review(pod, al.secret_objects(NS))["response"]
    answers = al.variant_answers(real, pod)
    ops = patch_ops(real)
    assert len(ops) == 4
    assert {op["op"] for op in ops} == {"add"}
    assert {op["path"] for op in ops} == {"/spec/imagePullSecrets/-"}
    one = patch_ops(answers["one-op"])
    assert [op["op"] for op in one] == ["replace"]
    final = al.patched_pull_secrets(pod, real)
    assert final[0] == al.EXISTING and len(final) == 5
    assert al.patched_pull_secrets(pod, answers["one-op"]) == final
    assert al.patched_pull_secrets(pod, answers["allow"]) == [al.EXISTING]
    assert answers["one-op"]["auditAnnotations"] == real["auditAnnotations"]
    assert list(answers["one-op"]) == list(real)  # same fields, same order


def test_minimal_allow_only_echoes_uid_and_counts_posts() -> None:
    app = al.minimal_app({"allowed": True, "uid": ""})
    (first, second) = (post(app, review_body(f"uid-{i}")) for i in range(2))
    assert first.json() == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"allowed": True, "uid": "uid-0"},
    }
    assert second.json()["response"]["uid"] == "uid-1"

    async def count() -> bytes:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://bench") as client:
            return (await client.get("/count")).content

    assert asyncio.run(count()) == b"2"


# ---- what is created in the cluster ----------------------------------------------------------


def selector_text(label_selector: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in label_selector.get("matchLabels", {}).items()]
    for e in label_selector.get("matchExpressions", []):
        parts.append(f"{e['key']} {e['operator'].lower()} ({','.join(e['values'])})")
    return ",".join(parts)


def test_configuration_calls_the_url_and_sees_only_its_namespace() -> None:
    cfg = al.webhook_configuration("r1", "same", "https://127.0.0.1:9443/mutate", b"PEM")
    kubernetes_validate.validate(cfg, K8S, strict=True)
    (hook,) = cfg["webhooks"]
    assert hook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert cfg["metadata"]["labels"][al.LABEL_KEY] == al.LABEL_VALUE  # found by cleanup
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    assert (hook["sideEffects"], hook["failurePolicy"]) == ("NoneOnDryRun", "Ignore")
    selector = parse_selector(selector_text(hook["namespaceSelector"]))

    def labels(target: str) -> dict[str, str]:
        ns = al.namespace_object("r1", target)
        return {**ns["metadata"]["labels"], "kubernetes.io/metadata.name": ns["metadata"]["name"]}

    assert selector.matches(labels("same"))
    assert not selector.matches(labels(al.UNSEEN))
    assert not selector.matches(labels("real"))
    assert not selector.matches({**labels("same"), "pullsecret-injector.io/inject": "disabled"})


def test_bench_objects_are_valid_and_labelled_for_cleanup() -> None:
    pod = al.bench_pod("real-d-1", NS)
    kubernetes_validate.validate(pod, K8S, strict=True)
    assert pod["spec"]["imagePullSecrets"] == [{"name": al.EXISTING}]
    assert pod["spec"]["schedulerName"] == al.SCHEDULER  # stored pods never run
    assert len(pod["spec"]["containers"]) == 3 and len(pod["spec"]["initContainers"]) == 1
    ns = al.namespace_object("r1", al.UNSEEN)
    kubernetes_validate.validate(ns, K8S, strict=True)
    secrets = al.secret_objects(NS)
    assert len(secrets) == 5
    for obj in [ns, *secrets]:
        assert obj["metadata"]["labels"][al.LABEL_KEY] == al.LABEL_VALUE
    for secret in secrets:
        kubernetes_validate.validate(secret, K8S, strict=True)
        assert secret["metadata"]["namespace"] == NS
