"""Live state at scale on a real API server (issue 11, item 6). Figures, not assertions.

    . /tmp/psi-k8s/env   # any cluster named by KUBECONFIG; the kit restarts its API server
    python -m bench.cluster_scale [--namespaces 10000] [--per-namespace 5] [--relists 3]

1. load: N namespaces x K registry Secrets (``psi-bench=cluster-scale``, bounded by the
   flags), created by a pool of concurrent requests; the time it takes is printed;
2. ``serve --kubeconfig`` on this host (``PYTHONMALLOC=malloc``, as the image), admission
   probed from a separate process at a constant rate over HTTPS keep-alive (latency is
   counted from each request's scheduled time: no coordinated omission);
3. RSS after the first sync; p50/p99/max in steady state;
4. R times: the API server is stopped and started again (the kit: its pid file, then
   ``up``), which ends every watch with a 410 and forces a re-list of N x K secrets. Per
   round: seconds from the API server being ready to the store being fresh again
   (``last_sync_age_seconds`` reset), how late a Secret written right after the restart
   reaches admission, p50/p99/max while the secrets are re-listed, RSS after it;
5. everything labelled is deleted (namespaces, with their secrets), unless ``--keep``.

A control server (`serve --objects` holding the probe's 20 namespaces, no watch) is probed
at the same rate in the same windows: its latency during a re-list is what the machine
(the API server and etcd re-reading 50,000 secrets on the same 2 cores) costs any server;
the webhook's excess over it is what its own watch costs.

Goals (printed met / NOT MET): p99 during a re-list < 10 ms; RSS <= 150 MiB after sync and
after every re-list, and no growth across re-lists (last <= first + 10 MiB).
Only 127.0.0.1 and the API server named by KUBECONFIG are contacted.
"""

from __future__ import annotations

import argparse
import base64
import gc
import http.client
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3

from bench.load import free_port
from bench.workload import REGISTRY_SECRETS, SHAPES, encode, review

ROOT = Path(__file__).resolve().parent.parent
LABEL_KEY, LABEL_VALUE = "psi-bench", "cluster-scale"
PREFIX = "psi-scale-"
MARKER_NS = f"{PREFIX}marker"
HOST = "127.0.0.1"


def ns_name(i: int) -> str:
    return f"{PREFIX}{i:05d}"


def _dockerconfig(key: str, index: int) -> str:
    password = f"not-a-secret-{index}"
    auth = base64.b64encode(f"bench:{password}".encode()).decode()
    config = {"auths": {key: {"username": "bench", "password": password, "auth": auth}}}
    return base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()


def _secret(ns: str, name: str, key: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": {LABEL_KEY: LABEL_VALUE}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": _dockerconfig(key, index)},
    }


def write_control_cluster(path: Path, namespaces: int, per_ns: int) -> Path:
    """The probe's namespaces and their secrets, as `load` makes them, for `serve --objects`.

    The control server answers the same requests with the same patches from a static state:
    what the machine does to its latency during a re-list (the API server and etcd at full
    tilt, `up` checking the kit) is in its figures, what the watch thread costs is not."""
    keys = list(REGISTRY_SECRETS.items())
    docs: list[dict[str, Any]] = []
    for i in range(namespaces):
        ns = ns_name(i)
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": ns, "labels": {LABEL_KEY: LABEL_VALUE}}})  # fmt: skip
        for k in range(per_ns):
            name, key = keys[k % len(keys)]
            docs.append(_secret(ns, name if k < len(keys) else f"{name}-{k}", key, i * per_ns + k))
    path.write_text("".join(f"---\n{json.dumps(doc)}\n" for doc in docs))
    return path


def _core() -> Any:
    from kubernetes import client, config  # noqa: PLC0415

    configuration = client.Configuration()
    config.load_kube_config(client_configuration=configuration, persist_config=False)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 64
    return client.CoreV1Api(client.ApiClient(configuration))


# ---- load and cleanup ------------------------------------------------------------------------


def load(core: Any, namespaces: int, per_ns: int, workers: int) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    keys = list(REGISTRY_SECRETS.items())

    def make_ns(name: str) -> None:
        body = {"metadata": {"name": name, "labels": {LABEL_KEY: LABEL_VALUE}}}
        try:
            core.create_namespace(body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def make_secrets(i: int) -> int:
        ns = ns_name(i)
        made = 0
        for k in range(per_ns):
            name, key = keys[k % len(keys)]
            if k >= len(keys):
                name = f"{name}-{k}"
            try:
                core.create_namespaced_secret(
                    ns, _secret(ns, name, key, i * per_ns + k), _preload_content=False
                )
                made += 1
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return made

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(make_ns, [ns_name(i) for i in range(namespaces)] + [MARKER_NS]))
        ns_done = time.monotonic()
        made = sum(pool.map(make_secrets, range(namespaces)))
    done = time.monotonic()
    return {
        "namespaces_seconds": round(ns_done - started, 1),
        "secrets_seconds": round(done - ns_done, 1),
        "secrets_created": made,
        "objects_per_second": round((namespaces + namespaces * per_ns) / (done - started), 1),
    }


def cleanup(core: Any, wait: float) -> dict[str, Any]:
    """Delete every labelled namespace (their secrets go with them); wait, bounded."""
    started = time.monotonic()
    selector = f"{LABEL_KEY}={LABEL_VALUE}"
    names = [
        n.metadata.name
        for n in core.list_namespace(label_selector=selector).items
        if n.metadata.deletion_timestamp is None
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: core.delete_namespace(n, _preload_content=False), names))
    left = len(names)
    while time.monotonic() - started < wait:
        left = len(core.list_namespace(label_selector=selector, limit=500).items)
        if left == 0:
            break
        time.sleep(2)
    return {"deleted": len(names), "left": left, "seconds": round(time.monotonic() - started, 1)}


# ---- the probe (a child process) ------------------------------------------------------------


def probe(port: int, ca: str, rate: float, duration: float, out: str, conns: int) -> None:
    """POST reviews at `rate`/s over `conns` keep-alive connections; write (t, latency).

    Ends after `duration` seconds, or sooner when the file `out` + ".stop" exists."""
    bodies = [encode(review(SHAPES[1], ns_name(n % 20), f"p{n}", f"u-{n}")) for n in range(20)]
    ctx = ssl.create_default_context(cafile=ca)
    samples: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    t0 = time.monotonic() + 0.5
    stop = t0 + duration

    def worker(w: int) -> None:
        conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=10)
        i = 0
        while True:
            due = t0 + (i * conns + w) / rate
            if due >= stop or (i % 50 == 0 and Path(out + ".stop").exists()):
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            status = 0
            try:
                conn.request("POST", "/mutate?timeout=10s", bodies[i % len(bodies)],
                             {"Content-Type": "application/json"})  # fmt: skip
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=10)
            end = time.monotonic()
            with lock:
                samples.append((due, end - due, status))
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # CLOCK_MONOTONIC is system-wide: the parent compares these times with its own
    Path(out).write_text(json.dumps(samples))


# ---- serve with the collector's pauses recorded ---------------------------------------------


def serve_traced(pauses: str, argv: list[str]) -> int:
    """`serve` with every garbage collection longer than 2 ms appended to `pauses`."""
    out = open(pauses, "a", buffering=1)  # noqa: SIM115 - for the process's lifetime
    state: dict[str, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            state["t"] = time.monotonic()
        elif "t" in state:
            took = time.monotonic() - state.pop("t")
            if took > 0.002:
                out.write(f"{time.monotonic():.4f} {took:.4f} "
                          f"{info['generation']} {info['collected']}\n")  # fmt: skip

    gc.callbacks.append(callback)
    from webhook.cli import main as cli_main  # noqa: PLC0415

    return int(cli_main(["serve", *argv]) or 0)


# ---- the run ---------------------------------------------------------------------------------


def _rss(pid: int) -> tuple[float, float]:
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return round(values["VmRSS"], 1), round(values["VmHWM"], 1)


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("pullsecret_injector_last_sync_age_seconds",
                            "pullsecret_injector_watch_restarts_total",
                            "pullsecret_injector_cache_secrets")):  # fmt: skip
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _expired(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if "watch_restarts" in k and 'reason="expired"' in k)


def _age(m: dict[str, float]) -> float:
    return m.get('pullsecret_injector_last_sync_age_seconds{resource="secrets"}', 1e9)


def _percentiles(lat: list[float]) -> dict[str, Any]:
    if not lat:
        return {"n": 0}
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "n": len(lat),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 1),
    }


def _post(port: int, ctx: ssl.SSLContext, body: bytes) -> bytes:
    conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/mutate?timeout=5s", body, {"Content-Type": "application/json"})
        return conn.getresponse().read()
    finally:
        conn.close()


def _start_probe(port: int, ca: Path, rate: float, duration: float, out: Path) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cluster_scale", "probe", "--port", str(port),
         "--ca", str(ca), "--rate", str(rate), "--duration", str(duration), "--out", str(out)],
        cwd=ROOT,
    )  # fmt: skip


def _restart_apiserver(core: Any, kit: Path, state_dir: Path) -> tuple[float, Any]:
    """Kill the kit's API server and `up` again: (monotonic time /readyz says ok, `up`)."""
    pid = int((state_dir / "run/kube-apiserver.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)  # a crash; SIGTERM's graceful shutdown took over a minute
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    up = subprocess.Popen(
        [str(kit / "up"), "--node", "--registry", "--dir", str(state_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            api = core.api_client
            resp = api.rest_client.pool_manager.request(
                "GET", api.configuration.host + "/readyz",
                timeout=urllib3.Timeout(connect=1, read=2), retries=False,
            )  # fmt: skip
            if resp.status == 200 and resp.data.strip() == b"ok":
                return time.monotonic(), up
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError("the API server did not come back in 180 s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from webhook.serve import certs  # noqa: PLC0415

    core = _core()
    result: dict[str, Any] = {"namespaces": args.namespaces, "per_namespace": args.per_namespace}
    if not args.skip_load:
        result["load"] = load(core, args.namespaces, args.per_namespace, args.workers)
        print("load:", result["load"], flush=True)
    work = Path(tempfile.mkdtemp(prefix="psi-cluster-scale-"))
    bundle = certs.generate(["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(bundle, work)
    ctx = ssl.create_default_context(cafile=str(paths["ca.crt"]))
    port, ops = free_port(), free_port()
    pauses = work / "gc-pauses.txt"
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    serve_args = [
        "--kubeconfig", os.environ["KUBECONFIG"], "--host", HOST, "--port", str(port),
        "--metrics-host", HOST, "--metrics-port", str(ops),
        "--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"]),
        "--recovery-mode", "off", "--no-replication", *args.serve_arg,
    ]  # fmt: skip
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cluster_scale", "serve-traced", str(pauses), "--",
         *serve_args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    control_cluster = write_control_cluster(work / "control.yaml", 20, args.per_namespace)
    cport, cops = free_port(), free_port()
    control_args = [
        "--objects", str(control_cluster), "--host", HOST, "--port", str(cport),
        "--metrics-host", HOST, "--metrics-port", str(cops),
        "--cert-file", str(paths["tls.crt"]), "--key-file", str(paths["tls.key"]),
        *args.serve_arg,
    ]  # fmt: skip
    control = subprocess.Popen(
        [sys.executable, "-m", "webhook.cli", "serve", *control_args], cwd=ROOT, env=env,
        stdout=(work / "control.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    result["workdir"] = str(work)
    expect = args.namespaces * args.per_namespace
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                raise RuntimeError((work / "serve.log").read_text()[-3000:])
            try:
                m = _metrics(ops)
                if m.get("pullsecret_injector_cache_secrets", 0) >= expect and _age(m) < 1e8:
                    break
            except OSError:
                pass
            if time.monotonic() - started > 600:
                raise RuntimeError("not synced in 600 s")
            time.sleep(0.2)
        result["sync_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(3)
        result["rss_after_sync"] = _rss(server.pid)
        print("synced:", result["sync_seconds"], "s, rss", result["rss_after_sync"], flush=True)

        total = args.steady + args.relists * (args.round_seconds + 120) + 5  # a bound
        samples_file = work / "probe.json"
        control_file = work / "control-probe.json"
        probers = [_start_probe(p, paths["ca.crt"], args.rate, total, out)
                   for p, out in ((port, samples_file), (cport, control_file))]  # fmt: skip
        probe_start = time.monotonic() + 0.5
        time.sleep(args.steady + 0.5)
        steady_window = (probe_start + 1, time.monotonic())
        kit = Path(args.kit)
        state_dir = Path(os.environ.get("PSI_K8S_DIR", "/tmp/psi-k8s"))
        rounds = []
        for r in range(args.relists):
            round_start = time.monotonic()
            before = _expired(_metrics(ops))
            ready, up = _restart_apiserver(core, kit, state_dir)
            marker = f"marker-{r}-{int(time.time())}"
            registry = f"{marker}.example.com"
            written = time.monotonic()
            try:
                core.create_namespaced_secret(
                    MARKER_NS, _secret(MARKER_NS, marker, registry, r), _preload_content=False
                )
            except Exception as exc:  # the API server may still be settling: retry once
                print("marker write retried:", type(exc).__name__, flush=True)
                time.sleep(0.5)
                written = time.monotonic()
                core.create_namespaced_secret(
                    MARKER_NS, _secret(MARKER_NS, marker, registry, r), _preload_content=False
                )
            shape = SHAPES[0].__class__("marker", (), (f"{registry}/app:1",))
            body = encode(review(shape, MARKER_NS, f"m{r}", f"m-{r}"))
            seen = fresh = relist_start = relist_end = None
            while time.monotonic() - ready < args.round_seconds - 5:
                now = time.monotonic()
                m = _metrics(ops)
                if relist_start is None and _expired(m) > before:
                    relist_start = now
                if fresh is None and _age(m) < now - ready:
                    fresh = now - _age(m)
                    relist_end = now
                if seen is None and marker.encode() in _post(port, ctx, body):
                    seen = time.monotonic()
                if seen is not None and fresh is not None:
                    break
                time.sleep(0.05)
            up.wait(timeout=300)  # the kit is healthy again (up checks every component)
            time.sleep(3)
            rss = _rss(server.pid)
            rounds.append({
                "restart_seconds": round(ready - round_start, 1),
                "ready_to_fresh_s": None if fresh is None else round(fresh - ready, 2),
                "write_to_webhook_s": None if seen is None else round(seen - written, 2),
                "relist_window": (relist_start or ready, relist_end or time.monotonic()),
                "expired_seen": relist_start is not None,
                "rss": rss,
            })  # fmt: skip
            print("re-list", r + 1, {k: v for k, v in rounds[-1].items()
                                     if k != "relist_window"}, flush=True)  # fmt: skip
            left = args.round_seconds - (time.monotonic() - round_start)
            if left > 0 and r + 1 < args.relists:
                time.sleep(left)
        for out in (samples_file, control_file):
            Path(str(out) + ".stop").touch()
        for prober in probers:
            prober.wait(timeout=60)
        samples = json.loads(samples_file.read_text())
        control_samples = json.loads(control_file.read_text())
        errors = sum(1 for _, _, status in samples if status != 200)

        def window(rows: list[list[float]], lo: float, hi: float) -> list[float]:
            return [lat for due, lat, _ in rows if lo <= due <= hi]

        result["steady"] = _percentiles(window(samples, *steady_window))
        result["control_steady"] = _percentiles(window(control_samples, *steady_window))
        relist_lat: list[float] = []
        control_lat: list[float] = []
        for rnd in rounds:
            lo, hi = rnd.pop("relist_window")
            rnd["during_relist"] = _percentiles(window(samples, lo, hi))
            rnd["control_during_relist"] = _percentiles(window(control_samples, lo, hi))
            relist_lat += window(samples, lo, hi)
            control_lat += window(control_samples, lo, hi)
        result["during_relist"] = _percentiles(relist_lat)
        result["control_during_relist"] = _percentiles(control_lat)
        result["rounds"] = rounds
        result["probe_errors"] = errors
        result["control_probe_errors"] = sum(1 for _, _, st in control_samples if st != 200)
        result["gc_pauses_over_2ms"] = _gc_summary(pauses)
    finally:
        for proc in (server, control):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if not args.keep:
            result["cleanup"] = cleanup(core, args.cleanup_wait)
    return result


def _gc_summary(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    took = sorted(float(r[1]) for r in rows)
    return {
        "count": len(took),
        "max_ms": round(took[-1] * 1000, 1) if took else 0,
        "gen2": sum(1 for r in rows if r[2] == "2"),
    }


def _goals(result: dict[str, Any]) -> list[tuple[str, bool]]:
    rss = [result["rss_after_sync"][0]] + [r["rss"][0] for r in result.get("rounds", [])]
    goals = [
        ("p99 during a re-list < 10 ms", result["during_relist"].get("p99_ms", 1e9) < 10),
        ("RSS <= 150 MiB after sync and every re-list", max(rss) <= 150),
        ("no RSS growth across re-lists (last <= first + 10 MiB)", rss[-1] <= rss[0] + 10),
    ]
    return goals


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve-traced":
        return serve_traced(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_scale")
    sub = parser.add_subparsers(dest="cmd")
    p = sub.add_parser("probe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--conns", type=int, default=4)
    ld = sub.add_parser("load", help="only load (then run with --skip-load)")
    ld.add_argument("--namespaces", type=int, default=10_000)
    ld.add_argument("--per-namespace", type=int, default=5)
    ld.add_argument("--workers", type=int, default=32)
    c = sub.add_parser("cleanup")
    c.add_argument("--wait", type=float, default=600)
    for target in (parser,):  # the run's options
        target.add_argument("--namespaces", type=int, default=10_000)
        target.add_argument("--per-namespace", type=int, default=5)
        target.add_argument("--workers", type=int, default=32, help="concurrent creates")
        target.add_argument("--relists", type=int, default=3)
        target.add_argument("--rate", type=float, default=100, help="admission probes per second")
        target.add_argument("--steady", type=float, default=20, help="steady-state seconds")
        target.add_argument("--round-seconds", type=float, default=60)
        target.add_argument("--kit", default=str(ROOT.parent / "shared/k8s"))
        target.add_argument("--skip-load", action="store_true")
        target.add_argument("--keep", action="store_true", help="no cleanup")
        target.add_argument("--cleanup-wait", type=float, default=600)
        target.add_argument("--serve-arg", action="append", default=[])
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        probe(args.port, args.ca, args.rate, args.duration, args.out, args.conns)
        return 0
    if args.cmd == "load":
        print(json.dumps(load(_core(), args.namespaces, args.per_namespace, args.workers)))
        return 0
    if args.cmd == "cleanup":
        print(json.dumps(cleanup(_core(), args.wait)))
        return 0
    if args.namespaces * args.per_namespace > 60_000:
        parser.error("bounded: at most 60,000 secrets")
    result = run(args)
    print(json.dumps(result, indent=1))
    for goal, met in _goals(result):
        print(f"{'met    ' if met else 'NOT MET'}  {goal}")
    print(_control_line(result))
    return 0


def _control_line(result: dict[str, Any]) -> str:
    """The webhook's p99 during re-lists beside the control server's in the same windows."""
    ours = result["during_relist"].get("p99_ms")
    ctl = result.get("control_during_relist", {}).get("p99_ms")
    if ours is None or ctl is None:
        return "control: no samples during a re-list"
    return (f"control  p99 during the same re-lists: webhook {ours} ms, control (no watch) "
            f"{ctl} ms, the webhook's own share {ours - ctl:+.2f} ms")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
