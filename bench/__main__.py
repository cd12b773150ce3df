"""The whole benchmark: `bash bench/run` (or `.venv/bin/python -m bench`). See bench/README.md.

Prints a table of webhook vs the two baselines, with ratios, on both event loops (asyncio
and uvloop) and for each pod size, and the goals of issues 5 and 14 as met / not met, each
with its ratio, all from the one run. `--markdown FILE` also writes it (with the machine)
as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench import apiserver_latency, load
from bench.load import Measurement, Server, log
from bench.micro import HEADER as MICRO_HEADER
from bench.micro import format_row as micro_row
from bench.workload import (
    LARGE_NAMESPACES,
    REQUEST_NAMESPACES,
    ROOT,
    SECRETS_PER_NAMESPACE,
    SHAPES,
    SMALL_NAMESPACES,
    bodies,
    medium_body,
    write_cluster,
)
from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store
from webhook.core.admission import handle, parse_review
from webhook.core.injection import Policy, decide
from webhook.serve import certs as certs_mod

SMALL = SMALL_NAMESPACES * SECRETS_PER_NAMESPACE
LARGE = LARGE_NAMESPACES * SECRETS_PER_NAMESPACE
# 50 req/s was measured too until both loops doubled the targets: cut to keep a full run
# under 10 minutes (p99 at 50 req/s said no more than at 200 on this machine).
RATES = (200, 1000)
LOOPS = ("asyncio", "uvloop")
KEYS = ("raw", "floor", f"webhook-{SMALL}", f"webhook-{LARGE}")


@dataclass
class Plan:
    """Durations (seconds): the defaults keep a full run under 10 minutes on 2 cores.

    Both loops double the targets and each pod size is its own wrk run, so rounds are
    shorter than issue 5's (3 x 4 s of the mixed stream then; 3 x 2 s per pod size now).
    wrk takes whole seconds.
    """

    rounds: int = 3  # max-throughput rounds per target and pod size, interleaved
    round_s: float = 2.0
    warmup_s: float = 1.0
    rate_s: dict[int, float] = field(default_factory=lambda: {200: 10.0, 1000: 5.0})
    rate_warmup_s: float = 2.0
    apiserver: bool = True

    @classmethod
    def quick(cls) -> Plan:
        return cls(1, 1.0, 1.0, {200: 3.0, 1000: 2.0}, 1.0, False)


# ---- machine -----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "missing"

    import fastapi  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415
    import uvloop  # noqa: PLC0415

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(mem) / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "uvloop": uvloop.__version__,
        "orjson": orjson.__version__,
        "wrk": version(["wrk", "-v"]),
        "k6": version([load.k6_binary(), "version"]),
        "load_before": Path("/proc/loadavg").read_text().split()[0],
    }


# ---- checks ----------------------------------------------------------------------------------


def expected_reviews(cluster: Path, request_bodies: Sequence[bytes]) -> list[dict[str, Any]]:
    """What the webhook must answer for each body (the pure code, in process)."""
    store = Store()
    fill_store(store, load_objects([cluster]))
    policy = Policy.build(None)
    out = []
    for body in request_bodies:
        answer = handle(
            parse_review(orjson.loads(body)),
            lambda pod, ns: decide(pod, ns, store.secrets_in(ns), policy),
        )
        out.append(answer.review)
    return out


def check_answers(
    server: Server, ca: Path, request_bodies: Sequence[bytes], expected: Sequence[dict[str, Any]]
) -> None:
    """Each body over real HTTPS: a valid AdmissionReview answer (the webhook's: exact)."""
    for body, want in zip(request_bodies, expected, strict=True):
        status, raw = load.post(server, ca, body)
        if status != 200:
            raise RuntimeError(f"{server.label}: HTTP {status}: {raw[:300]!r}")
        got = orjson.loads(raw)
        response = got.get("response", {})
        if got.get("kind") != "AdmissionReview" or response.get("allowed") is not True:
            raise RuntimeError(f"{server.label}: not an allowed AdmissionReview: {raw[:300]!r}")
        uid = orjson.loads(body)["request"]["uid"]
        if server.label.startswith("webhook") and got != want:
            raise RuntimeError(f"{server.label}: answer differs from the pure decision")
        if server.label.startswith("floor") and response.get("uid") != uid:
            raise RuntimeError(f"{server.label}: uid not echoed")


# ---- the runs --------------------------------------------------------------------------------


@dataclass
class Target:
    key: str  # raw | floor | webhook-100 | webhook-50000, then @asyncio | @uvloop
    start: Callable[[], Server]


def split_key(server_key: str) -> tuple[str, str]:
    """`webhook-100@uvloop` -> (`webhook-100`, `uvloop`)."""
    key, _, loop = server_key.partition("@")
    return key, loop


@contextmanager
def serving(targets: Sequence[Target]) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for t in targets:
            servers[t.key] = t.start()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def _merge(runs: Sequence[Measurement]) -> dict[str, Any]:
    best = statistics.median(r.rps for r in runs)
    total_wall = sum(r.wall for r in runs)
    return {
        "rps": best,
        "rps_runs": [round(r.rps) for r in runs],
        "errors": sum(r.errors for r in runs),
        "generator_cpu": sum(r.generator_cpu * r.wall for r in runs) / total_wall,
        "server_cpu": sum(r.server_cpu * r.wall for r in runs) / total_wall,
        "other_cpu": sum(r.other_cpu * r.wall for r in runs) / total_wall,
        "cpu_us_per_req": statistics.median(r.server_cpu_us_per_req for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "worker_cores": [
            round(statistics.mean(c), 2)
            for c in zip(*(r.extra["worker_cores"] for r in runs), strict=True)
        ],
        "p99_ms": statistics.median(r.p99_ms for r in runs),
    }


def throughput(
    servers: dict[str, Server], shape_files: Sequence[Path], plan: Plan
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """wrk (1 thread, 16 connections) against each target, for each pod size on its own,
    rounds interleaved across targets and sizes: [loop][key][shape index]."""
    for key, server in servers.items():
        log(f"  warm-up {key}")
        load.wrk(server, shape_files[1], plan.warmup_s)
    runs: dict[tuple[str, int], list[Measurement]] = {
        (k, i): [] for k in servers for i in range(len(shape_files))
    }
    for r in range(plan.rounds):
        for i, shape_file in enumerate(shape_files):
            load.wait_quiet(max_wait=3.0)
            for key, server in servers.items():
                m = load.wrk(server, shape_file, plan.round_s)
                log(
                    f"  round {r + 1}/{plan.rounds} {SHAPES[i].name} {key}: {m.rps:,.0f} req/s "
                    f"({m.server_cpu_us_per_req:.0f} µs/req; server {m.server_cpu:.2f} cores, "
                    f"wrk {m.generator_cpu:.2f}, other {m.other_cpu:.2f})"
                )
                runs[key, i].append(m)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (server_key, i), measured in runs.items():
        key, loop = split_key(server_key)
        out.setdefault(loop, {}).setdefault(key, []).append(_merge(measured))
        assert len(out[loop][key]) == i + 1
    return out


def latency(
    servers: dict[str, Server], bodies_file: Path, plan: Plan, workdir: Path
) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """k6 at each constant rate against each target: [loop][key][rate]."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for rate in RATES:
        load.wait_quiet(max_wait=3.0)
        for server_key, server in servers.items():
            vus = 16 if rate <= 200 else 100
            m = load.k6(
                server, bodies_file, rate, plan.rate_s[rate], workdir, plan.rate_warmup_s, vus
            )
            log(
                f"  {rate} req/s {server_key}: p50 {m.p50_ms:.2f} p99 {m.p99_ms:.2f} "
                f"p99.9 {m.p999_ms:.2f} ms, {m.rps:.0f} req/s done, "
                f"dropped {m.extra['dropped']}, failed {m.errors}"
            )
            key, loop = split_key(server_key)
            out.setdefault(loop, {}).setdefault(key, {})[rate] = {**asdict(m)}
    return out


def run_json(cmd: list[str], limit: float) -> dict[str, Any]:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def apiserver_load(workdir: Path) -> dict[str, Any]:
    """50,000 secrets through the wire-protocol API server of tests/kube/ into a watcher."""
    if not (ROOT / "tests/kube/kube_apiserver.py").exists():
        return {"skipped": "tests/kube/kube_apiserver.py is not there"}
    api_dir = workdir / "apiserver"
    api_dir.mkdir()
    out_file = api_dir / "out.json"
    with out_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.storeload", "apiserver",
             "--namespaces", str(LARGE_NAMESPACES), "--dir", str(api_dir), "--max-seconds", "300"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (api_dir / "kubeconfig").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"skipped": f"API server did not start: {out_file.read_text()[-500:]}"}
            time.sleep(0.2)
        built = json.loads(out_file.read_text().strip().splitlines()[-1])
        load.wait_quiet()
        result = run_json(
            [sys.executable, "-m", "bench.storeload", "watch",
             "--kubeconfig", str(api_dir / "kubeconfig"), "--expect", str(LARGE),
             "--timeout", "240"],
            limit=300,
        )  # fmt: skip
        return {**result, "server_build_s": built["build_s"]}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the table -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines: list[str] = []
    add = lines.append
    add("pullsecret-injector benchmark")
    add(
        f"machine: {m['nproc']} cores, {m['cpu']}, {m['memory']}; Linux {m['kernel']}; "
        f"Python {m['python']}, FastAPI {m['fastapi']}, uvicorn {m['uvicorn']}, "
        f"uvloop {m.get('uvloop', '?')}, orjson {m['orjson']}; {m['wrk']}; {m['k6']}; "
        f"bench processes at nice {m['nice']}; load average before {m['load_before']}"
    )
    add(
        f"requests: AdmissionReviews of pods with {', '.join(s.name for s in SHAPES)} "
        f"(init containers, an existing imagePullSecrets entry, 6 registry hosts) in "
        f"{REQUEST_NAMESPACES} namespaces of {SECRETS_PER_NAMESPACE} registry secrets; "
        f"bodies {res['body_sizes']} bytes; responses: webhook {res['response_sizes']} "
        f"bytes, (a) {res['raw_size']} bytes"
    )
    add("(a) raw ASGI app, fixed answer, no parsing = the server's limit; "
        "(b) FastAPI route + orjson, uid + fixed patch = the framework's floor; "
        "every target on both event loops")  # fmt: skip
    add("")
    tp = res["throughput"]
    add(
        "Max throughput, 1 worker (wrk: 1 thread, 16 keep-alive HTTPS connections, one pod "
        "size at a time, median of rounds); ratios against (a) and (b) on the same loop and "
        "pod size"
    )
    add(
        f"{'loop':<7} {'target':<17} {'pod':<13} {'req/s':>7} {'vs (a)':>6} {'vs (b)':>6} "
        f"{'µs/req':>6} {'CPU/(a)':>7} {'srv cores':>9} {'wrk':>5} {'other':>5} {'err':>4}"
    )
    for loop in LOOPS:
        for key in KEYS:
            for i, shape in enumerate(SHAPES):
                r = tp[loop][key][i]
                raw, floor = tp[loop]["raw"][i], tp[loop]["floor"][i]
                add(
                    f"{loop:<7} {res['titles'][key]:<17} {shape.name:<13} {r['rps']:>7,.0f} "
                    f"{_ratio(r['rps'], raw['rps']):>6} {_ratio(r['rps'], floor['rps']):>6} "
                    f"{r['cpu_us_per_req']:>6,.0f} "
                    f"{_ratio(r['cpu_us_per_req'], raw['cpu_us_per_req']):>7} "
                    f"{r['server_cpu']:>9.2f} {r['generator_cpu']:>5.2f} {r['other_cpu']:>5.2f} "
                    f"{r['errors']:>4}"
                )
    add("")
    add("uvloop against asyncio, same target and pod size (req/s ratio)")
    for key in KEYS:
        ratios = [tp["uvloop"][key][i]["rps"] / tp["asyncio"][key][i]["rps"] for i in
                  range(len(SHAPES))]  # fmt: skip
        add(f"  {res['titles'][key]:<17} " + " / ".join(f"{x:.2f}" for x in ratios)
            + f"  ({' / '.join(s.name for s in SHAPES)})")  # fmt: skip
    add("")
    lat = res["latency"]
    add("Latency at a constant offered rate (k6 constant-arrival-rate, 1 worker, the three "
        "pod sizes in rotation), ms")  # fmt: skip
    add(
        f"{'rate':>5} {'loop':<7} {'target':<17} {'done/s':>6} {'p50':>6} {'p99':>6} "
        f"{'p99.9':>6} {'p99/(a)':>7} {'p99/(b)':>7} {'dropped':>7} {'failed':>6}"
    )
    for rate in RATES:
        for loop in LOOPS:
            raw = lat[loop]["raw"][rate]["p99_ms"]
            floor = lat[loop]["floor"][rate]["p99_ms"]
            for key in KEYS:
                r = lat[loop][key][rate]
                add(
                    f"{rate:>5} {loop:<7} {res['titles'][key]:<17} {r['rps']:>6.0f} "
                    f"{r['p50_ms']:>6.2f} {r['p99_ms']:>6.2f} {r['p999_ms']:>6.2f} "
                    f"{_ratio(r['p99_ms'], raw):>7} {_ratio(r['p99_ms'], floor):>7} "
                    f"{r['extra']['dropped']:>7} {r['errors']:>6}"
                )
    add("")
    add("Memory and load time")
    for loop in LOOPS:
        for key, rss in res["rss"][loop].items():
            add(
                f"  RSS of the serving process, {res['titles'][key]}, {loop}: "
                f"{rss['rss_mib']:.0f} MiB (peak {rss['peak_rss_mib']:.0f} MiB), ready "
                f"{rss['ready_s']:.1f} s after start"
            )
    sl = res["store_load"]
    add(
        f"  load {sl['secrets']:,} secrets / {sl['namespaces']:,} namespaces from a YAML "
        f"manifest: {sl['total_s']:.1f} s (parse {sl['parse_s']:.1f} s, store "
        f"{sl['fill_s']:.1f} s), RSS after {sl['rss_mib']:.0f} MiB"
    )
    api = res["apiserver_load"]
    if "skipped" in api:
        add(f"  through the wire-protocol API server: not measured ({api['skipped']})")
    else:
        add(
            f"  load {api['secrets']:,} secrets / {api['namespaces']:,} namespaces through the "
            f"wire-protocol API server of tests/kube/ (cluster.watchers.ClusterWatcher, TLS, "
            f"pages of 500): {api['total_s']:.1f} s to synced, watcher RSS "
            f"{api['rss_mib']:.0f} MiB"
        )
    add("")
    add("Pure decision per pod (timeit, best of 5; no HTTP), µs")
    add("  " + MICRO_HEADER)
    for row in res["micro"]:
        add("  " + micro_row(row))
    add("")
    add("Goals (issue 14 items 1, 3, 5; ratios from this run, same loop and pod size)")
    for text, ok, detail in res["goals"]:
        add(f"  [{'met' if ok else 'NOT MET':>7}] {text}: {detail}")
    add("")
    add("Generator check")
    for line in res["generator"]:
        add(f"  {line}")
    return "\n".join(lines)


def _per_shape(values: Sequence[float], unit: str) -> str:
    return " / ".join(f"{v:.2f}" for v in values) + f" {unit} ({len(values)} pod sizes)"


def goals(res: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Every goal as (text, met, the ratios that decide it)."""
    tp, lat = res["throughput"], res["latency"]
    shapes = range(len(SHAPES))
    out: list[tuple[str, bool, str]] = []
    webhooks = (f"webhook-{SMALL}", f"webhook-{LARGE}")
    for loop in LOOPS:
        t = tp[loop]
        for key in webhooks:
            title = f"{res['titles'][key]}, {loop}"
            vs_a = [t[key][i]["rps"] / t["raw"][i]["rps"] for i in shapes]
            vs_b = [t[key][i]["rps"] / t["floor"][i]["rps"] for i in shapes]
            cpu = [t[key][i]["cpu_us_per_req"] / t["raw"][i]["cpu_us_per_req"] for i in shapes]
            out.append((f"1. server CPU per admission <= 2 x (a)'s, {title}",
                        max(cpu) <= 2.0, _per_shape(cpu, "x (a)'s µs/req")))  # fmt: skip
            out.append((f"1. throughput >= 0.5 x (a), {title}", min(vs_a) >= 0.5,
                        _per_shape(vs_a, "x (a)")))  # fmt: skip
            out.append((f"1. throughput >= 1.0 x (b), {title}", min(vs_b) >= 1.0,
                        _per_shape(vs_b, "x (b)")))  # fmt: skip
    for key in webhooks:
        gain = [tp["uvloop"][key][i]["rps"] / tp["asyncio"][key][i]["rps"] for i in shapes]
        out.append((f"3. uvloop makes {res['titles'][key]} faster than asyncio (serve's "
                    "default loop is uvloop)", min(gain) > 1.0,
                    _per_shape(gain, "x asyncio's req/s")))  # fmt: skip
    for loop in LOOPS:
        t = tp[loop]
        small, large = t[f"webhook-{SMALL}"], t[f"webhook-{LARGE}"]
        kept = [large[i]["rps"] / small[i]["rps"] for i in shapes]
        out.append((f"5. throughput at 50,000 secrets at least 95% of 100's, {loop}",
                    min(kept) >= 0.95, _per_shape(kept, "x 100's")))  # fmt: skip
        p99 = {k: v[200]["p99_ms"] for k, v in lat[loop].items()}
        for key in webhooks:
            out.append((f"5. p99 at 200 req/s <= 1.5 x (b), {res['titles'][key]}, {loop}",
                        p99[key] <= 1.5 * p99["floor"],
                        f"{p99[key]:.2f} ms vs {p99['floor']:.2f} ms = "
                        f"{p99[key] / p99['floor']:.2f} x (b)"))  # fmt: skip
        pl, ps = p99[f"webhook-{LARGE}"], p99[f"webhook-{SMALL}"]
        out.append((f"5. p99 at 200 req/s at 50,000 secrets at most 105% of 100's, {loop}",
                    pl <= 1.05 * ps,
                    f"{pl:.2f} vs {ps:.2f} ms ({(pl / ps - 1) * 100:+.1f}%)"))  # fmt: skip
        rss = res["rss"][loop][f"webhook-{LARGE}"]["rss_mib"]
        out.append((f"5. RSS at 50,000 secrets / 10,000 namespaces <= 150 MiB, {loop}",
                    rss <= 150, f"{rss:.0f} MiB = {rss / 150:.2f} x 150 MiB"))  # fmt: skip
    return out


def generator_notes(res: dict[str, Any]) -> list[str]:
    notes = []
    for loop in LOOPS:
        t = res["throughput"][loop]
        raw, wh = t["raw"][1], t[f"webhook-{SMALL}"][1]
        notes.append(
            f"{loop}, {SHAPES[1].name}: wrk drove (a) at {raw['rps']:,.0f} req/s, "
            f"{raw['rps'] / wh['rps']:.1f}x the webhook's {wh['rps']:,.0f}; against the "
            f"webhook the server used {wh['server_cpu']:.2f} cores and wrk "
            f"{wh['generator_cpu']:.2f}, everything else on the machine {wh['other_cpu']:.2f}"
        )
        for key in KEYS:
            for i, r in enumerate(t[key]):
                if r["server_cpu"] < 0.5 and r["generator_cpu"] < 0.2:
                    notes.append(
                        f"{loop}, {res['titles'][key]}, {SHAPES[i].name}: neither the server "
                        f"({r['server_cpu']:.2f} cores) nor wrk ({r['generator_cpu']:.2f}) is "
                        f"busy and p50 is {r['p50_ms']:.1f} ms: bound by latency or by other "
                        "load, not by the server's CPU"
                    )
    k6_cpu = [
        by_rate[1000]["generator_cpu"] for by_key in res["latency"].values()
        for by_rate in by_key.values()
    ]  # fmt: skip
    notes.append(
        f"k6 at 1000 req/s used {min(k6_cpu):.2f}-{max(k6_cpu):.2f} cores; "
        "'dropped' counts arrivals it could not send on time (none means the rate was held)"
    )
    return notes


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs, to try the harness")
    p.add_argument("--markdown", type=Path, help="also write the table to this file")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="scheduling priority of the benchmark and every process it starts (default: -10 "
        "as root, so that other work on a shared machine disturbs the figures less)",
    )
    p.add_argument(
        "--apiserver-only",
        action="store_true",
        help="only the latency added on the API server of KUBECONFIG (apiserver_latency.py)",
    )
    args = p.parse_args(argv)
    if args.apiserver_only:
        print(apiserver_latency.render(apiserver_latency.for_bench(args.quick)))
        return 0
    plan = Plan.quick() if args.quick else Plan()
    started = time.monotonic()
    os.chdir(ROOT)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by servers, wrk and k6
    res: dict[str, Any] = {"machine": machine()}
    res["machine"]["nice"] = str(os.getpriority(os.PRIO_PROCESS, 0))
    log(f"machine: {res['machine']}")
    with tempfile.TemporaryDirectory(prefix="psi-bench-") as tmp:
        work = Path(tmp)
        cert_paths = certs_mod.write_bundle(
            certs_mod.generate(["localhost"], ["127.0.0.1"]), work / "certs"
        )
        ca = cert_paths["ca.crt"]
        request_bodies = bodies()
        bodies_file = work / "bodies.jsonl"
        bodies_file.write_bytes(b"\n".join(request_bodies) + b"\n")
        log("writing cluster manifests")
        small = write_cluster(work / f"cluster-{SMALL}.yaml", SMALL_NAMESPACES)
        large = write_cluster(work / f"cluster-{LARGE}.yaml", LARGE_NAMESPACES)
        expected = expected_reviews(small, request_bodies)
        res["body_sizes"] = "/".join(str(len(b)) for b in request_bodies[: len(SHAPES)])
        res["response_sizes"] = "/".join(str(len(orjson.dumps(r))) for r in expected[: len(SHAPES)])
        from bench.baselines import webhook_answer  # noqa: PLC0415

        res["raw_size"] = len(orjson.dumps(webhook_answer()))
        assert medium_body()  # the baselines' answers are derived from the captured shape

        log("store load from manifests (50,000 secrets)")
        res["store_load"] = run_json(
            [sys.executable, "-m", "bench.storeload", "manifests", str(large)], limit=300
        )
        log(f"  {res['store_load']}")
        if plan.apiserver:
            log("store load through the wire-protocol API server (50,000 secrets)")
            try:
                res["apiserver_load"] = apiserver_load(work)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                res["apiserver_load"] = {"skipped": f"failed: {exc}"[:300]}
            log(f"  {res['apiserver_load']}")
        else:
            res["apiserver_load"] = {"skipped": "--quick"}
        log("micro-benchmark of the pure decision")
        res["micro"] = run_json(
            [sys.executable, "-m", "bench.micro", "--json", "--namespaces",
             str(SMALL_NAMESPACES)],
            limit=300,
        )  # fmt: skip

        res["titles"] = {
            "raw": "(a) raw ASGI",
            "floor": "(b) FastAPI floor",
            f"webhook-{SMALL}": "webhook 100",
            f"webhook-{LARGE}": f"webhook {LARGE:,}",
        }
        shape_files = []
        for i, shape in enumerate(SHAPES):
            shape_files.append(work / f"bodies-{i}.jsonl")
            shape_files[-1].write_bytes(b"\n".join(request_bodies[i :: len(SHAPES)]) + b"\n")
            log(f"  bodies of {shape.name}: {shape_files[-1]}")
        # One serving process per pod (`serve` has no --workers: replicas scale it), so
        # every round runs at 1 worker; each target on both event loops (issue 14 item 3).
        targets = []
        for loop in LOOPS:
            targets += [
                Target(f"raw@{loop}",
                       partial(load.start_baseline, work, cert_paths, "raw", loop)),
                Target(f"floor@{loop}",
                       partial(load.start_baseline, work, cert_paths, "floor", loop)),
                Target(f"webhook-{SMALL}@{loop}",
                       partial(load.start_webhook, work, cert_paths, small,
                               f"webhook-{SMALL}-{loop}", loop)),
                Target(f"webhook-{LARGE}@{loop}",
                       partial(load.start_webhook, work, cert_paths, large,
                               f"webhook-{LARGE}-{loop}", loop)),
            ]  # fmt: skip
        log("starting servers")
        with serving(targets) as servers:
            ready = {}
            for key, server in servers.items():
                ready[key] = load.wait_ready(server, ca, request_bodies[1])
                check_answers(server, ca, request_bodies[: len(SHAPES) * 2],
                              expected[: len(SHAPES) * 2])  # fmt: skip
                log(f"  {key} ready after {ready[key]:.1f} s, answers checked")
            log("max throughput")
            res["throughput"] = throughput(servers, shape_files, plan)
            log("latency at constant rates")
            res["latency"] = latency(servers, bodies_file, plan, work)
            res["rss"] = {loop: {} for loop in LOOPS}
            for loop in LOOPS:
                for key in (f"webhook-{SMALL}", f"webhook-{LARGE}"):
                    server_key = f"{key}@{loop}"
                    rss, hwm = load.rss_mib(servers[server_key].serving_pids())
                    res["rss"][loop][key] = {"rss_mib": rss, "peak_rss_mib": hwm,
                                             "ready_s": ready[server_key]}  # fmt: skip
    log("added latency on a real API server (KUBECONFIG), the machine's servers stopped")
    res["apiserver_latency"] = apiserver_latency.for_bench(args.quick)
    res["goals"] = goals(res)
    res["generator"] = generator_notes(res)
    res["elapsed_s"] = time.monotonic() - started
    table = render(res) + "\n\n" + apiserver_latency.render(res["apiserver_latency"])
    table += f"\n\n(run took {res['elapsed_s'] / 60:.1f} minutes)"
    print(table)
    if args.markdown:
        m = res["machine"]
        args.markdown.write_text(
            "# Benchmark results\n\n"
            f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}, "
            f"Python {m['python']}. Load average before the run: {m['load_before']}.\n\n"
            "```\n" + table + "\n```\n"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
