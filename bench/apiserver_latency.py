"""Latency the webhook adds to pod creation on a real API server (issue 14, item 4).

    . /tmp/psi-k8s/env                  # or any cluster named by KUBECONFIG
    python -m bench.apiserver_latency [--pairs 1000] [--quick] [--json FILE]
    python -m bench.apiserver_latency cleanup   # what a killed run left (label psi-bench=...)

Four webhooks, each in its own process on this host, served alike (uvicorn with the
webhook's configuration and TLS context, one process) and registered alike (one
MutatingWebhookConfiguration each, the chart's settings, a `url:` clientConfig with a
caBundle; the namespaceSelector of each picks only its own namespace):

- ``real``: ``pullsecret-injector serve --kubeconfig`` (it watches the cluster);
- ``same``: a minimal raw-ASGI webhook answering byte for byte what the real one answers
  for the bench pod (same patch, same audit annotations; only the uid is echoed);
- ``one-op``: the same answer with the patch as one ``replace /spec/imagePullSecrets``
  holding the whole final list instead of one ``add .../-`` per secret;
- ``allow``: allowed, nothing else (the API server's cost of calling a webhook).

Pods (the captured pod: 1 init + 3 containers, one existing imagePullSecrets entry, a
scheduler name no scheduler serves, so nothing runs) are created one at a time over one
keep-alive connection, in pairs: one in the webhook's namespace ("seen"), one in a
namespace no webhook sees ("unseen"), back to back in random order; dry-run and stored
creates alternate, and the webhooks' pairs are interleaved in random order, so a burst of
other work hits them all alike. Every answer is checked (the pod's imagePullSecrets, and
the call counts of the webhooks). Added latency at quantile q = q(seen) - q(unseen)
(bench/README.md explains the estimator). Everything made in the cluster is labelled
psi-bench=apiserver-latency and deleted in a finally block, webhook configurations first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import http.client
import ipaddress
import json
import os
import random
import resource
import signal
import socket
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonpatch
import orjson

from bench import load
from bench.baselines import ASGIApp, Receive, Scope, Send
from bench.load import log
from bench.workload import SHAPES, review, secret_manifests
from webhook.cluster.manifests import fill_store
from webhook.cluster.store import Store
from webhook.core.admission import handle, parse_review
from webhook.core.injection import Policy, decide

ROOT = Path(__file__).resolve().parent.parent
LABEL_KEY, LABEL_VALUE = "psi-bench", "apiserver-latency"
RUN_KEY = "psi-bench/run"
TARGET_KEY = "psi-bench/apilat-target"  # the namespaceSelector's label
UNSEEN = "none"  # TARGET_KEY of the namespace no webhook sees
SCHEDULER = "psi-bench-unscheduled"  # no scheduler serves it: stored pods stay Pending
EXISTING = "sa-regcred"  # the entry the pod already has (as if its ServiceAccount added it)
MODES = ("dry run", "stored")
QUANTILES = (0.5, 0.9, 0.99)
GOAL_RATIO = 1.1
REAL_CALLS = "pullsecret_injector_admission_requests_total"  # its requests counter
REAL_DURATION = "pullsecret_injector_admission_duration_seconds"  # body read to response


@dataclass(frozen=True)
class Variant:
    key: str
    title: str


VARIANTS = (
    Variant("real", "pullsecret-injector"),
    Variant("same", "minimal, same answer"),
    Variant("one-op", "minimal, 1 replace op"),
    Variant("allow", "minimal, allow only"),
)
VARIANT_KEYS = tuple(v.key for v in VARIANTS)
TITLES = {v.key: v.title for v in VARIANTS}


# ---- what is created (pure) ----------------------------------------------------------------


def namespace_name(run: str, target: str) -> str:
    return f"psi-apilat-{run}-{target}"


def namespace_object(run: str, target: str) -> dict[str, Any]:
    labels = {LABEL_KEY: LABEL_VALUE, RUN_KEY: run, TARGET_KEY: target}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace_name(run, target), "labels": labels},
    }


def secret_objects(namespace: str) -> list[dict[str, Any]]:
    """The five registry secrets of the throughput benchmark's namespaces, in `namespace`."""
    out = []
    for manifest in secret_manifests(1):
        if manifest["kind"] != "Secret":
            continue
        obj = copy.deepcopy(manifest)
        obj["metadata"]["namespace"] = namespace
        obj["metadata"]["labels"] = {LABEL_KEY: LABEL_VALUE}
        out.append(obj)
    return out


def bench_pod(name: str, namespace: str) -> dict[str, Any]:
    """The captured pod as `kubectl apply` sends it, with one existing pull secret entry."""
    captured = review(SHAPES[1], namespace, name, "x")["request"]["object"]
    spec = captured["spec"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(captured["metadata"]["labels"]),
            "annotations": dict(captured["metadata"]["annotations"]),
        },
        "spec": {
            "initContainers": [
                {"name": c["name"], "image": c["image"]} for c in spec["initContainers"]
            ],
            "containers": [{"name": c["name"], "image": c["image"]} for c in spec["containers"]],
            "imagePullSecrets": [{"name": EXISTING}],
            "schedulerName": SCHEDULER,
            "terminationGracePeriodSeconds": 0,
        },
    }


def admission_review(pod: Mapping[str, Any], uid: str, dry_run: bool = False) -> dict[str, Any]:
    """The AdmissionReview (v1) the API server sends for creating `pod`."""
    meta = pod["metadata"]
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def real_review(pod: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What pullsecret-injector answers for `pod` given `secrets` (the pure code, in process)."""
    store = Store()
    fill_store(store, secrets)
    policy = Policy.build(None)
    req = parse_review(admission_review(pod, str(uuid.uuid4())))
    return handle(req, lambda p, ns: decide(p, ns, store.secrets_in(ns), policy)).review


def patched_pull_secrets(pod: Mapping[str, Any], response: Mapping[str, Any]) -> list[str]:
    """The names in spec.imagePullSecrets once the response's patch (if any) is applied."""
    obj = copy.deepcopy(dict(pod))
    if "patch" in response:
        ops = orjson.loads(base64.b64decode(response["patch"]))
        obj = jsonpatch.apply_patch(obj, ops)
    return [e["name"] for e in obj["spec"].get("imagePullSecrets") or []]


def variant_answers(real_response: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed `response` of each minimal webhook (its uid is the request's).

    same: the real webhook's answer; one-op: that answer with its patch as one replace of
    the whole list (the pod ends the same); allow: allowed, nothing else.
    """
    # the uid keeps its place (the minimal webhook overwrites it): the same bytes come out
    same = {k: "" if k == "uid" else v for k, v in real_response.items()}
    final = [{"name": n} for n in patched_pull_secrets(pod, same)]
    one = [{"op": "replace", "path": "/spec/imagePullSecrets", "value": final}]
    one_op = dict(same)
    one_op["patch"] = base64.b64encode(orjson.dumps(one)).decode("ascii")
    return {"same": same, "one-op": one_op, "allow": {"allowed": True, "uid": ""}}


def webhook_configuration(
    run: str, target: str, url: str, ca_pem: bytes, *, timeout_seconds: int = 3
) -> dict[str, Any]:
    """A MutatingWebhookConfiguration as the chart renders it, calling `url`, and seeing only
    the namespace labelled TARGET_KEY=`target`."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": f"psi-apilat-{run}-{target}",
            "labels": {LABEL_KEY: LABEL_VALUE, RUN_KEY: run},
        },
        "webhooks": [
            {
                "name": f"{target}.apilat.psi-bench.io",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "matchPolicy": "Equivalent",
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Ignore",
                "timeoutSeconds": timeout_seconds,
                "reinvocationPolicy": "IfNeeded",
                "namespaceSelector": {
                    "matchLabels": {TARGET_KEY: target},
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system"],
                        },
                        {
                            "key": "pullsecret-injector.io/inject",
                            "operator": "NotIn",
                            "values": ["disabled"],
                        },
                    ],
                },
            }
        ],
    }


# ---- the estimator (pure) ------------------------------------------------------------------


def _quantile_sorted(s: Sequence[float], q: float) -> float:
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, R's type 7)."""
    if not values:
        raise ValueError("no values")
    return _quantile_sorted(sorted(values), q)


def added(seen: Sequence[float], unseen: Sequence[float], q: float) -> float:
    """Latency added at quantile q: q(seen) - q(unseen) (the shift function at q)."""
    return quantile(seen, q) - quantile(unseen, q)


def pair_median(pairs: Sequence[tuple[float, float]]) -> float:
    """The median of the per-pair differences seen - unseen (a cross-check of p50)."""
    return quantile([s - u for s, u in pairs], 0.5)


def ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


Pairs = Sequence[tuple[float, float]]


def baseline(by_variant: Mapping[str, Pairs]) -> list[float]:
    """The unseen creates of every webhook's pairs: one baseline for the mode."""
    return [u for pairs in by_variant.values() for _, u in pairs]


def bootstrap_ratios(
    by_variant: Mapping[str, Pairs], a: str, b: str, rounds: int, seed: int = 14
) -> dict[str, tuple[float, float] | None]:
    """95 % percentile-bootstrap intervals of added_a(q) / added_b(q) for each of QUANTILES:
    every webhook's pairs resampled with replacement, the baseline pooled from them."""
    found: dict[float, list[float]] = {q: [] for q in QUANTILES}
    if by_variant.get(a) and by_variant.get(b) and rounds >= 20:
        rng = random.Random(seed)
        for _ in range(rounds):
            drawn = {k: rng.choices(p, k=len(p)) for k, p in by_variant.items() if p}
            base = sorted(baseline(drawn))
            seen_a = sorted(s for s, _ in drawn[a])
            seen_b = sorted(s for s, _ in drawn[b])
            for q in QUANTILES:
                u = _quantile_sorted(base, q)
                den = _quantile_sorted(seen_b, q) - u
                if den > 0:
                    found[q].append((_quantile_sorted(seen_a, q) - u) / den)
    return {
        str(q): (quantile(v, 0.025), quantile(v, 0.975)) if len(v) >= max(rounds // 2, 1) else None
        for q, v in found.items()
    }


def _ms(values: Sequence[float]) -> dict[str, float]:
    return {str(q): round(quantile(values, q) * 1000, 3) for q in QUANTILES}


def summarize(samples: Mapping[str, Mapping[str, Pairs]], boot: int) -> dict[str, Any]:
    """samples[mode][variant] = [(seen s, unseen s)] -> figures in ms, ratios, patch cost.

    The baseline of a mode is the unseen creates of all its webhooks' pairs (interleaved with
    all of them, 4 x the samples of one, and the same for every webhook compared)."""
    out: dict[str, Any] = {}
    for mode, by_variant in samples.items():
        base = baseline(by_variant)
        if not base:
            continue
        base_ms = _ms(base)
        rows: dict[str, Any] = {}
        for key, pairs in by_variant.items():
            if not pairs:
                continue
            seen_ms = _ms([s for s, _ in pairs])
            rows[key] = {
                "n": len(pairs),
                "added_ms": {q: round(seen_ms[q] - base_ms[q], 3) for q in seen_ms},
                "seen_ms": seen_ms,
                "pair_median_ms": round(pair_median(pairs) * 1000, 3),
            }
        vs: dict[str, Any] = {}
        if "real" in rows and "same" in rows:
            intervals = bootstrap_ratios(by_variant, "real", "same", boot)
            for q in map(str, QUANTILES):
                r = ratio(rows["real"]["added_ms"][q], rows["same"]["added_ms"][q])
                vs[q] = {"ratio": r, "ci95": intervals[q]}
        patch: dict[str, Any] = {}
        for a, b in (("same", "allow"), ("same", "one-op")):
            if a in rows and b in rows:
                patch[f"{a}-{b}"] = {
                    q: round(rows[a]["added_ms"][q] - rows[b]["added_ms"][q], 3)
                    for q in map(str, QUANTILES)
                }
        out[mode] = {
            "baseline_ms": base_ms,
            "baseline_n": len(base),
            "rows": rows,
            "real_vs_same": vs,
            "patch_cost_ms": patch,
        }
    return out


def goals(summary: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """(text, met, detail): the webhook adds <= 1.1 x the minimal same-answer webhook."""
    out = []
    for mode, figures in summary.items():
        rows = figures["rows"]
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            text = (
                f"{mode}: pullsecret-injector adds <= {GOAL_RATIO} x what the minimal "
                f"same-patch webhook adds, at {name}"
            )
            vs = figures["real_vs_same"].get(str(q))
            if vs is None:
                out.append((text, False, "not measured"))
                continue
            real, same = rows["real"]["added_ms"][str(q)], rows["same"]["added_ms"][str(q)]
            ci = vs["ci95"]
            interval = f"; 95% interval {ci[0]:.2f}-{ci[1]:.2f}" if ci else ""
            if vs["ratio"] is None:
                out.append((text, False, f"{real:.2f} vs {same:.2f} ms: no ratio (noise)"))
                continue
            out.append(
                (
                    text,
                    round(vs["ratio"], 2) <= GOAL_RATIO,  # as printed
                    f"{vs['ratio']:.2f} x ({real:.2f} vs {same:.2f} ms{interval})",
                )
            )
    return out


def goal_lines(result: Mapping[str, Any]) -> list[str]:
    if "skipped" in result:
        return [f"  [skipped] added latency on a real API server: {result['skipped']}"]
    return [
        f"  [{'met' if ok else 'NOT MET':>7}] {text}: {detail}"
        for text, ok, detail in goals(result["summary"])
    ]


def render(result: Mapping[str, Any]) -> str:
    """The section printed by `python -m bench.apiserver_latency` and by `bash bench/run`."""
    lines = ["Added latency on a real API server (issue 14, item 4)"]
    add = lines.append
    if "skipped" in result:
        add(f"  skipped: {result['skipped']}")
        return "\n".join(lines)
    m = result["setup"]
    add(
        f"API server {m['server']} ({m['version']}); webhooks on {m['webhook_host']}; pod: "
        f"1 init + 3 containers, 1 existing imagePullSecrets entry, {m['added']} added "
        f"(real patch: {m['patch_ops']} add ops, {m['patch_bytes']} bytes; response "
        f"{m['response_bytes']} bytes)"
    )
    add(
        f"{result['pairs']} pairs per webhook and mode after {result['warmup']} warm-up pairs "
        f"({result['creates']} creates in {result['seconds']:.0f} s); a pair = one create "
        "in the webhook's namespace and one in a namespace no webhook sees, back to back"
    )
    add(
        "added = quantile(seen) - quantile(baseline), ms; baseline = the unseen creates of all "
        "the mode's pairs; 'pairs' = median of the webhook's per-pair differences (cross-check "
        "of p50)"
    )
    add("")
    add(
        f"{'mode':<8} {'webhook':<22} {'p50':>6} {'p90':>6} {'p99':>6} {'pairs':>6} | "
        f"{'creates p50':>11} {'p90':>6} {'p99':>6}"
    )
    for mode, figures in result["summary"].items():
        b = figures["baseline_ms"]
        title = f"(baseline: {figures['baseline_n']} unseen)"
        add(f"{mode:<8} {title:<50} | {b['0.5']:>11.2f} {b['0.9']:>6.2f} {b['0.99']:>6.2f}")
        for key, r in figures["rows"].items():
            a, s = r["added_ms"], r["seen_ms"]
            add(
                f"{mode:<8} {TITLES[key]:<22} {a['0.5']:>6.2f} {a['0.9']:>6.2f} "
                f"{a['0.99']:>6.2f} {r['pair_median_ms']:>6.2f} | {s['0.5']:>11.2f} "
                f"{s['0.9']:>6.2f} {s['0.99']:>6.2f}"
            )
    add("")
    add(
        "pullsecret-injector vs the minimal same-answer webhook (added latency ratio, "
        "95% bootstrap interval)"
    )
    for mode, figures in result["summary"].items():
        parts = []
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            vs = figures["real_vs_same"].get(str(q))
            if not vs or vs["ratio"] is None:
                parts.append(f"{name} -")
                continue
            ci = vs["ci95"]
            parts.append(
                f"{name} {vs['ratio']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
            )
        add(f"  {mode:<8} " + ", ".join(parts))
    add("Patch cost, ms (difference of added latency at p50 / p90 / p99)")
    for mode, figures in result["summary"].items():
        pc = figures["patch_cost_ms"]
        if "same-allow" in pc:
            v = pc["same-allow"]
            add(
                f"  {mode:<8} the patch (+ audit annotations): same answer - allow only: "
                f"{v['0.5']:.2f} / {v['0.9']:.2f} / {v['0.99']:.2f}"
            )
        if "same-one-op" in pc:
            v = pc["same-one-op"]
            add(
                f"  {mode:<8} {m['patch_ops']} add ops - 1 replace op (same final pod): "
                f"{v['0.5']:.2f} / {v['0.9']:.2f} / {v['0.99']:.2f}"
            )
    c = result["checks"]
    calls = "as expected" if c["calls"] == c["expected_calls"] else "MISMATCH"
    add(
        f"Checks: every pod's imagePullSecrets as expected ({c['checked']} creates); webhook "
        f"calls {c['calls']} ({calls}: one per create in its namespace, none for the other); "
        f"real == minimal same answer: {c['same_answer']}"
    )
    if "cleanup" in result:
        cl = result["cleanup"]
        add(
            f"Cleanup: {cl['webhook_configurations_deleted']} webhook configurations deleted "
            f"(none left), namespaces deleted: {cl.get('namespaces_deleted', 'kept')}"
            + (f" in {cl['seconds']} s" if "seconds" in cl else "")
            + (f", still terminating: {cl['namespaces_left']}" if cl.get("namespaces_left") else "")
        )
    cpu = result["cpu"]
    add(
        f"CPU during the pairs (cores): machine {cpu['machine']:.2f}, kit components "
        f"{cpu['kit']}, webhooks {cpu['webhooks']:.2f}, this client {cpu['client']:.2f}, "
        f"everything else {cpu['other']}; load average {cpu['loadavg']}; before the "
        f"pairs the machine was {result.get('busy_before', 0):.0%} busy"
    )
    if "webhook_cpu_us_per_call" in cpu:
        per_call = ", ".join(f"{k} {v}" for k, v in cpu["webhook_cpu_us_per_call"].items())
        handler = cpu.get("real_handler_mean_ms")
        add(
            f"Webhook CPU per call (µs, process total / calls): {per_call}"
            + (
                f"; the real webhook's own handling (its duration metric) {handler} ms mean"
                if handler is not None
                else ""
            )
        )
    add("")
    add("Goals (issue 14, item 4)")
    lines += goal_lines(result)
    return "\n".join(lines)


# ---- the minimal webhooks ------------------------------------------------------------------


def minimal_app(response: Mapping[str, Any]) -> ASGIApp:
    """POST: answer `response` with the request's uid (and apiVersion) echoed, built the
    way the webhook builds its answer, so the bytes match. GET: the number of POSTs."""
    template = dict(response)
    hits = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal hits
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            hits += 1
            doc = orjson.loads(b"".join(chunks))
            answer = dict(template)
            answer["uid"] = doc["request"]["uid"]  # in the template's place, if it has one
            body = orjson.dumps(
                {"apiVersion": doc["apiVersion"], "kind": "AdmissionReview", "response": answer}
            )
        else:
            body = str(hits).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_minimal(argv: Sequence[str]) -> int:
    from webhook.serve.run import uvicorn_config  # noqa: PLC0415
    from webhook.serve.tls import server_context  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m bench.apiserver_latency serve-minimal")
    p.add_argument("--answer", type=Path, required=True, help="JSON: the response but its uid")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert-file", type=Path, required=True)
    p.add_argument("--key-file", type=Path, required=True)
    args = p.parse_args(argv)
    import uvicorn  # noqa: PLC0415

    config = uvicorn_config(
        minimal_app(orjson.loads(args.answer.read_bytes())), args.host, args.port
    )
    config.load()
    config.ssl = server_context(args.cert_file, args.key_file)
    asyncio.run(uvicorn.Server(config).serve())
    return 0


# ---- the cluster ---------------------------------------------------------------------------


class Cluster:
    """The API server named by KUBECONFIG: setup through the client, timed creates raw."""

    def __init__(self, kubeconfig: str) -> None:
        import urllib3  # noqa: PLC0415
        from kubernetes import client, config  # noqa: PLC0415

        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration, persist_config=False
        )
        self.api = client.ApiClient(configuration)
        # Any: plain dicts go in (the client serializes them as they are)
        self.core: Any = client.CoreV1Api(self.api)
        self.admission: Any = client.AdmissionregistrationV1Api(self.api)
        self.host = configuration.host.rstrip("/")
        self.pool = self.api.rest_client.pool_manager
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = configuration.get_api_key_with_prefix("authorization")
        if token:
            self.headers["Authorization"] = token
        self.timeout = urllib3.Timeout(connect=5, read=30)

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        import urllib3  # noqa: PLC0415

        resp = self.pool.request(
            "GET",
            self.host + path,
            headers=self.headers,
            retries=False,
            timeout=urllib3.Timeout(total=timeout),
        )
        return int(resp.status), bytes(resp.data)

    def create_pod(self, body: bytes, namespace: str, dry_run: bool) -> tuple[float, Any]:
        """POST one pod: (seconds from sending to the whole answer read, decoded answer)."""
        url = f"{self.host}/api/v1/namespaces/{namespace}/pods"
        if dry_run:
            url += "?dryRun=All"
        started = time.perf_counter()
        resp = self.pool.request(
            "POST", url, body=body, headers=self.headers, retries=False, timeout=self.timeout
        )
        took = time.perf_counter() - started
        if resp.status != 201:
            raise RuntimeError(f"create in {namespace}: HTTP {resp.status}: {resp.data[:500]!r}")
        return took, orjson.loads(resp.data)

    def apply_namespace(self, obj: Mapping[str, Any]) -> None:
        self.core.create_namespace(obj, _preload_content=False)

    def wait_service_account(self, namespace: str, timeout: float = 60) -> None:
        """Pods need the namespace's `default` ServiceAccount (its controller makes it)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.core.read_namespaced_service_account(
                    "default", namespace, _preload_content=False
                )
                return
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def configurations(self, selector: str) -> list[str]:
        items = self.admission.list_mutating_webhook_configuration(label_selector=selector).items
        return [i.metadata.name for i in items]

    def namespaces(self, selector: str) -> list[str]:
        return [n.metadata.name for n in self.core.list_namespace(label_selector=selector).items]


def _delete(delete: Callable[..., Any], names: Sequence[str]) -> None:
    """Delete each by name; one already gone is fine."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    for name in names:
        try:
            delete(name, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise


def cleanup(
    cluster: Cluster, selector: str, wait: float, *, keep_namespaces: bool = False
) -> dict[str, Any]:
    """Delete the webhook configurations (checked gone), then the namespaces (bounded wait)."""
    started = time.monotonic()
    names = cluster.configurations(selector)
    _delete(cluster.admission.delete_mutating_webhook_configuration, names)
    left = cluster.configurations(selector)
    if left:
        raise RuntimeError(f"webhook configurations still there: {left}")
    out: dict[str, Any] = {"webhook_configurations_deleted": len(names)}
    namespaces = cluster.namespaces(selector)
    if keep_namespaces:
        return {**out, "namespaces_kept": namespaces}
    _delete(cluster.core.delete_namespace, namespaces)
    deadline = time.monotonic() + wait
    while (left := cluster.namespaces(selector)) and time.monotonic() < deadline:
        time.sleep(1)
    out.update(namespaces_deleted=len(namespaces), namespaces_left=left)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def local_address_towards(url: str) -> str:
    """The address of this host on the route to the API server: where it can call us."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    family, _, _, _, addr = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        local: str = s.getsockname()[0]
        return local


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


# ---- servers -------------------------------------------------------------------------------


@dataclass
class Hook:
    key: str
    server: load.Server
    host: str
    hits: Callable[[], int]
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"https://{_url_host(self.host)}:{self.server.port}/mutate"


def _spawn(label: str, cmd: list[str], port: int, log_file: Path, ops: int | None) -> load.Server:
    env = {**os.environ, "PYTHONMALLOC": "malloc"}  # as the image runs it
    return load.start_process(label, cmd, port, log_file, ops, env)


def _https(host: str, port: int, ctx: ssl.SSLContext, method: str, body: bytes | None) -> bytes:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    try:
        conn.request(method, "/mutate?timeout=5s", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
        return data
    finally:
        conn.close()


def _count(host: str, port: int, ctx: ssl.SSLContext) -> int:
    """A minimal webhook's POST count (its GET answer)."""
    return int(_https(host, port, ctx, "GET", None))


def _metric_sum(ops_port: int, name: str) -> int:
    return int(_metric_float(ops_port, name))


def _metric_float(ops_port: int, name: str) -> float:
    """The sum of the samples of metric `name` (all label sets) on the ops port."""
    conn = http.client.HTTPConnection("127.0.0.1", ops_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_hooks(
    work: Path,
    paths: dict[str, Path],
    host: str,
    kubeconfig: str,
    answers: Mapping[str, Any],
    keys: Sequence[str],
) -> dict[str, Hook]:
    ctx = ssl.create_default_context(cafile=str(paths["ca.crt"]))
    ctx.check_hostname = False  # the certificate names `host`; connections go there anyway
    tls = ["--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"])]
    hooks: dict[str, Hook] = {}
    try:
        for key in keys:
            port = load.free_port()
            if key == "real":
                ops = load.free_port()
                cmd = [
                    sys.executable,
                    "-m",
                    "webhook.cli",
                    "serve",
                    "--kubeconfig",
                    kubeconfig,
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(ops),
                    *tls,
                    "--recovery-mode",
                    "off",
                    "--no-replication",
                ]
                server = _spawn(key, cmd, port, work / "real.log", ops)
                hits: Callable[[], int] = partial(_metric_sum, ops, REAL_CALLS)
            else:
                answer_file = work / f"answer-{key}.json"
                answer_file.write_bytes(orjson.dumps(answers[key]))
                cmd = [
                    sys.executable,
                    "-m",
                    "bench.apiserver_latency",
                    "serve-minimal",
                    "--answer",
                    str(answer_file),
                    "--host",
                    host,
                    "--port",
                    str(port),
                    *tls,
                ]
                server = _spawn(key, cmd, port, work / f"{key}.log", None)
                hits = partial(_count, host, port, ctx)
            hooks[key] = Hook(key, server, host, hits)
        for hook in hooks.values():
            _wait_ready(hook, host, ctx)
    except BaseException:
        for hook in hooks.values():
            hook.server.stop()
        raise
    return hooks


def _wait_ready(hook: Hook, host: str, ctx: ssl.SSLContext, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hook.server.proc.poll() is not None:
            raise RuntimeError(f"{hook.key} exited:\n{hook.server.log.read_text()[-3000:]}")
        try:
            if hook.server.ops_port is not None:
                conn = http.client.HTTPConnection("127.0.0.1", hook.server.ops_port, timeout=2)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status != 200:
                    raise ConnectionError("not ready")
            hook.hits()
            return
        except (OSError, http.client.HTTPException, RuntimeError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(
        f"{hook.key} not ready in {timeout} s:\n{hook.server.log.read_text()[-3000:]}"
    )


# ---- the run -------------------------------------------------------------------------------


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that the finally blocks clean the cluster up on either."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kit_pids() -> list[int]:
    run = Path(os.environ.get("PSI_K8S_DIR", "/nonexistent")) / "run"
    pids = []
    for f in run.glob("*.pid"):
        try:
            pids.append(int(f.read_text().strip()))
        except (OSError, ValueError):
            continue
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def reachable(kubeconfig: str | None) -> str | None:
    """None when KUBECONFIG names an API server that answers /readyz; else why not."""
    if not kubeconfig:
        return "no KUBECONFIG"
    if not all(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        return f"KUBECONFIG {kubeconfig} does not exist"
    try:
        status, _ = Cluster(kubeconfig).get("/readyz", timeout=5)
    except Exception as exc:  # any failure means: not usable here
        return f"the API server of KUBECONFIG is not reachable ({type(exc).__name__})"
    if status != 200:
        return f"the API server of KUBECONFIG is not ready (/readyz: HTTP {status})"
    return None


@dataclass
class Options:
    pairs: int = 1000
    warmup: int = 20
    modes: tuple[str, ...] = MODES
    variants: tuple[str, ...] = VARIANT_KEYS
    boot: int = 1000
    seed: int = 14
    max_seconds: float = 900
    webhook_host: str | None = None
    keep_namespaces: bool = False
    cleanup_wait: float = 300  # namespace deletion: ~40 s per 8,000 stored pods on the kit
    quiet_wait: float = 30  # wait (bounded) for the machine to be quiet before the pairs

    @classmethod
    def quick(cls) -> Options:
        return cls(pairs=40, warmup=5, boot=200, max_seconds=300, quiet_wait=3)


def run(kubeconfig: str, opts: Options) -> dict[str, Any]:
    from webhook.serve import certs  # noqa: PLC0415

    cluster = Cluster(kubeconfig)
    run_id = uuid.uuid4().hex[:6]
    selector = f"{LABEL_KEY}={LABEL_VALUE},{RUN_KEY}={run_id}"
    host = opts.webhook_host or local_address_towards(cluster.host)
    keys = [k for k in VARIANT_KEYS if k in opts.variants]
    unseen_ns = namespace_name(run_id, UNSEEN)
    seen_ns = {k: namespace_name(run_id, k) for k in keys}
    result: dict[str, Any] = {"run": run_id}
    hooks: dict[str, Hook] = {}
    with _sigterm_interrupts(), tempfile.TemporaryDirectory(prefix="psi-apilat-") as tmp:
        work = Path(tmp)
        try:
            # the answers: the real webhook's, by the pure code, for the bench pod
            probe_pod = bench_pod("probe", seen_ns.get("real", unseen_ns))
            real = real_review(probe_pod, secret_objects(probe_pod["metadata"]["namespace"]))
            real_response = real["response"]
            answers = variant_answers(real_response, probe_pod)
            expected = patched_pull_secrets(probe_pod, real_response)
            patch_ops = orjson.loads(base64.b64decode(real_response["patch"]))
            status, version = cluster.get("/version")
            result["setup"] = {
                "server": cluster.host,
                "version": orjson.loads(version).get("gitVersion", "?") if status == 200 else "?",
                "webhook_host": host,
                "added": len(expected) - 1,
                "patch_ops": len(patch_ops),
                "patch_bytes": len(base64.b64decode(real_response["patch"])),
                "response_bytes": len(orjson.dumps(real)),
            }
            log(f"run {run_id}: namespaces, secrets; webhooks on {host}")
            for target in [UNSEEN, *keys]:
                ns = namespace_name(run_id, target)
                cluster.apply_namespace(namespace_object(run_id, target))
                for secret in secret_objects(ns):
                    cluster.core.create_namespaced_secret(ns, secret, _preload_content=False)
            for target in [UNSEEN, *keys]:
                cluster.wait_service_account(namespace_name(run_id, target))

            bundle = certs.generate(["localhost"], [host])
            paths = certs.write_bundle(bundle, work / "certs")
            hooks = start_hooks(work, paths, host, kubeconfig, answers, keys)
            result["checks"] = {"same_answer": _same_answer(hooks, probe_pod, paths, host)}
            log(
                f"servers ready ({', '.join(hooks)}); real == minimal answer: "
                f"{result['checks']['same_answer']}"
            )

            for key, hook in hooks.items():
                cfg = webhook_configuration(run_id, key, hook.url, bundle.ca_cert_pem)
                cluster.admission.create_mutating_webhook_configuration(cfg, _preload_content=False)
            want = {k: expected if k != "allow" else [EXISTING] for k in keys}
            calls = _wait_effective(cluster, hooks, seen_ns, want)
            busy = load.wait_quiet(max_wait=opts.quiet_wait)
            result["busy_before"] = round(busy, 2)
            log(f"webhook configurations in effect; machine {busy:.0%} busy; measuring")
            samples, checked, creates, seconds, cpu, calls = _measure(
                cluster, hooks, seen_ns, unseen_ns, want, opts, calls
            )
            result["checks"].update(checked=checked, calls=_calls_now(hooks), expected_calls=calls)
            result.update(
                pairs=min((len(v) for m in samples.values() for v in m.values()), default=0),
                warmup=opts.warmup,
                creates=creates,
                seconds=seconds,
                cpu=cpu,
            )
            result["samples_s"] = samples
            result["summary"] = summarize(samples, opts.boot)
        finally:
            try:  # configurations first: none may outlive the servers they call
                result["cleanup"] = cleanup(
                    cluster, selector, opts.cleanup_wait, keep_namespaces=opts.keep_namespaces
                )
            finally:
                for hook in hooks.values():
                    hook.server.stop()
    return result


def _same_answer(
    hooks: Mapping[str, Hook], pod: Mapping[str, Any], paths: dict[str, Path], host: str
) -> str:
    """Post one review of the bench pod to the real and the same-answer webhook: equal?"""
    if "real" not in hooks or "same" not in hooks:
        return "not checked"
    ctx = ssl.create_default_context(cafile=str(paths["ca.crt"]))
    ctx.check_hostname = False
    body = orjson.dumps(admission_review(pod, str(uuid.uuid4())))
    got = {k: _https(host, hooks[k].server.port, ctx, "POST", body) for k in ("real", "same")}
    if got["real"] == got["same"]:
        return "byte for byte"
    if orjson.loads(got["real"]) == orjson.loads(got["same"]):
        return "equal JSON (bytes differ)"
    raise RuntimeError(f"the answers differ:\nreal {got['real']!r}\nsame {got['same']!r}")


def _calls_now(hooks: Mapping[str, Hook]) -> dict[str, int]:
    return {k: h.hits() for k, h in hooks.items()}


def _pull_secret_names(pod: Any) -> list[str]:
    return [e["name"] for e in pod.get("spec", {}).get("imagePullSecrets") or []]


def _wait_effective(
    cluster: Cluster,
    hooks: Mapping[str, Hook],
    seen_ns: Mapping[str, str],
    want: Mapping[str, list[str]],
    timeout: float = 60,
) -> dict[str, int]:
    """Dry-run creates until each webhook is called (its configuration reached the API
    server's informer); the call counts expected from then on."""
    pending = set(hooks)
    deadline = time.monotonic() + timeout
    i = 0
    while pending:
        for key in sorted(pending):
            before = hooks[key].hits()
            body = orjson.dumps(bench_pod(f"ready-{i}", seen_ns[key]))
            _, pod = cluster.create_pod(body, seen_ns[key], dry_run=True)
            if hooks[key].hits() > before and _pull_secret_names(pod) == want[key]:
                pending.discard(key)
            i += 1
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"webhook configurations not in effect in {timeout} s: {pending}")
        time.sleep(0.1)
    return _calls_now(hooks)


def _measure(
    cluster: Cluster,
    hooks: Mapping[str, Hook],
    seen_ns: Mapping[str, str],
    unseen_ns: str,
    want: Mapping[str, list[str]],
    opts: Options,
    calls: dict[str, int],
) -> tuple[
    dict[str, dict[str, list[tuple[float, float]]]], int, int, float, dict[str, Any], dict[str, int]
]:
    rng = random.Random(opts.seed)
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        m: {k: [] for k in hooks} for m in opts.modes
    }
    unseen_want = [EXISTING]
    checked = creates = 0
    kit, servers = _kit_pids(), [p for h in hooks.values() for p in h.server.pids()]
    per_hook = {k: load.cpu_seconds(h.server.pids()) for k, h in hooks.items()}
    calls_at_start = dict(calls)
    handler0 = _handler_seconds(hooks)
    cpu0 = (
        load.machine_busy_seconds(),
        load.cpu_seconds(kit),
        load.cpu_seconds(servers),
        _self_cpu(),
        time.monotonic(),
    )
    deadline = time.monotonic() + opts.max_seconds
    for it in range(opts.warmup + opts.pairs):
        if time.monotonic() > deadline:
            log(f"--max-seconds reached after {it - opts.warmup} pairs")
            break
        modes = opts.modes if it % 2 == 0 else tuple(reversed(opts.modes))
        for mode in modes:
            dry = mode == "dry run"
            tag = "d" if dry else "s"
            for key in rng.sample(list(hooks), len(hooks)):
                seen_body = orjson.dumps(bench_pod(f"{key}-{tag}-{it}", seen_ns[key]))
                unseen_body = orjson.dumps(bench_pod(f"{key}-{tag}-{it}", unseen_ns))
                order = [(True, seen_body), (False, unseen_body)]
                if rng.random() < 0.5:
                    order.reverse()
                took: dict[bool, float] = {}
                for is_seen, body in order:
                    ns = seen_ns[key] if is_seen else unseen_ns
                    took[is_seen], pod = cluster.create_pod(body, ns, dry)
                    got = _pull_secret_names(pod)
                    if got != (want[key] if is_seen else unseen_want):
                        raise RuntimeError(f"{key} {mode} in {ns}: imagePullSecrets {got}")
                    checked += 1
                creates += 2
                calls[key] += 1
                if it >= opts.warmup:
                    samples[mode][key].append((took[True], took[False]))
        if it and it % 100 == 0:
            log(f"  {it} pairs per webhook and mode")
    wall = time.monotonic() - cpu0[4]
    machine = (load.machine_busy_seconds() - cpu0[0]) / wall
    kit_cores = (load.cpu_seconds(kit) - cpu0[1]) / wall if kit else None
    webhooks = (load.cpu_seconds(servers) - cpu0[2]) / wall
    client = (_self_cpu() - cpu0[3]) / wall
    other = machine - webhooks - client - (kit_cores or 0)
    served = {k: max(calls[k] - calls_at_start[k], 1) for k in hooks}
    per_call_us = {
        k: round((load.cpu_seconds(h.server.pids()) - per_hook[k]) / served[k] * 1e6)
        for k, h in hooks.items()
    }
    handler = _handler_seconds(hooks)
    handler_ms = None
    if handler and handler0 and handler[1] > handler0[1]:
        handler_ms = round((handler[0] - handler0[0]) / (handler[1] - handler0[1]) * 1000, 3)
    cpu = {
        "machine": round(machine, 2),
        "kit": "n/a" if kit_cores is None else f"{kit_cores:.2f}",
        "webhooks": round(webhooks, 2),
        "webhook_cpu_us_per_call": per_call_us,
        "real_handler_mean_ms": handler_ms,
        "client": round(client, 2),
        "other": f"{other:.2f}" if kit_cores is not None else f"{other:.2f} (with the cluster)",
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    return samples, checked, creates, wall, cpu, calls


def _handler_seconds(hooks: Mapping[str, Hook]) -> tuple[float, float] | None:
    """(sum, count) of the real webhook's own admission duration histogram."""
    hook = hooks.get("real")
    if hook is None or hook.server.ops_port is None:
        return None
    port = hook.server.ops_port
    return _metric_float(port, f"{REAL_DURATION}_sum"), _metric_float(
        port, f"{REAL_DURATION}_count"
    )


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---- entry points --------------------------------------------------------------------------


def for_bench(quick: bool) -> dict[str, Any]:
    """The run `bash bench/run` makes: skipped (and said so) without a reachable cluster."""
    kubeconfig = os.environ.get("KUBECONFIG")
    why = reachable(kubeconfig)
    if why is not None or kubeconfig is None:
        return {"skipped": why or "no KUBECONFIG"}
    opts = Options.quick() if quick else Options(pairs=500, max_seconds=420)
    try:
        return run(kubeconfig, opts)
    except Exception as exc:  # the other figures of `bash bench/run` still count
        log(f"apiserver_latency failed: {exc!r}")
        return {"skipped": f"the run failed: {type(exc).__name__}: {str(exc)[:300]}"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-minimal"]:
        return serve_minimal(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m bench.apiserver_latency", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("command", nargs="?", choices=["run", "cleanup"], default="run")
    p.add_argument(
        "--pairs",
        type=int,
        default=Options.pairs,
        help="measured pairs per webhook and mode (default %(default)s)",
    )
    p.add_argument("--warmup", type=int, default=Options.warmup)
    p.add_argument("--quick", action="store_true", help="40 pairs: to try the harness")
    p.add_argument("--modes", default=",".join(MODES), help="'dry run', 'stored' or both")
    p.add_argument("--variants", default=",".join(VARIANT_KEYS))
    p.add_argument("--bootstrap", type=int, default=Options.boot)
    p.add_argument("--seed", type=int, default=Options.seed)
    p.add_argument("--max-seconds", type=float, default=Options.max_seconds)
    p.add_argument(
        "--webhook-host",
        help="address the API server calls the webhooks at "
        "(default: this host's address on the route to the API server)",
    )
    p.add_argument(
        "--keep-namespaces",
        action="store_true",
        help="keep the namespaces and stored pods (webhook configurations never are)",
    )
    p.add_argument("--json", type=Path, help="also write the result (with samples) here")
    args = p.parse_args(argv)
    kubeconfig = os.environ.get("KUBECONFIG")
    if args.command == "cleanup":
        if not kubeconfig:
            p.error("KUBECONFIG is not set")
        print(json.dumps(cleanup(Cluster(kubeconfig), f"{LABEL_KEY}={LABEL_VALUE}", 300)))
        return 0
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if not set(modes) <= set(MODES) or not set(variants) <= set(VARIANT_KEYS):
        p.error(f"modes: {MODES}; variants: {VARIANT_KEYS}")
    if args.quick:
        opts = Options.quick()
    else:
        opts = Options(
            pairs=args.pairs, warmup=args.warmup, boot=args.bootstrap, max_seconds=args.max_seconds
        )
    opts.modes, opts.variants, opts.seed = modes, variants, args.seed
    opts.webhook_host, opts.keep_namespaces = args.webhook_host, args.keep_namespaces
    why = reachable(kubeconfig)
    if why is not None or kubeconfig is None:
        result: dict[str, Any] = {"skipped": why or "no KUBECONFIG"}
    else:
        result = run(kubeconfig, opts)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
