"""Servers under test and the load generators that drive them, with CPU accounting.

Every load loop is bounded: wrk and k6 run for a fixed duration and are killed if they
overrun it; servers listen on 127.0.0.1 only and are stopped by process group.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workload import ROOT, SMALL_NAMESPACES, bodies, write_cluster
from webhook.serve import certs as certs_mod

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = ROOT / "bench/wrk_post.lua"
K6_SCRIPT = ROOT / "bench/k6_rate.js"


def log(msg: str) -> None:
    """A progress line on stderr, timestamped (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


# ---- CPU accounting --------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """user + system CPU time of these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time spent by every process of the machine (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def rss_mib(pids: Sequence[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB, summed over the processes."""
    rss = hwm = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, hwm / 1024


def wait_quiet(max_wait: float = 5.0, threshold: float = 0.15) -> float:
    """Wait (bounded) until other processes leave the CPUs mostly idle; the busy share seen.

    The benchmark shares the machine with whatever else runs on it: a measurement taken
    while a test suite runs next to it says little. Returns the busy share of the last
    second (0..1 of all cores), whether or not it got below `threshold`.
    """
    deadline = time.monotonic() + max_wait
    cores = os.cpu_count() or 1
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = (machine_busy_seconds() - before) / cores
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# ---- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A serving process (and its forked workers) started in its own process group."""

    label: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    ops_port: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}/mutate"

    @property
    def base(self) -> str:
        return f"https://{HOST}:{self.port}"

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def serving_pids(self) -> list[int]:
        """The processes that serve requests: the forked workers, else the process itself."""
        kids = _children(self.proc.pid)
        return kids or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass(frozen=True)
class Setup:
    """What a local load run needs in its work folder: a certificate for 127.0.0.1, the
    request bodies (and the file wrk reads them from), and the cluster manifest to serve."""

    certs: dict[str, Path]
    bodies: list[bytes]
    bodies_file: Path
    cluster: Path


def setup(work: Path, namespaces: int = SMALL_NAMESPACES) -> Setup:
    cert_paths = certs_mod.write_bundle(
        certs_mod.generate(["localhost"], ["127.0.0.1"]), work / "certs"
    )
    request_bodies = bodies()
    bodies_file = work / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(request_bodies) + b"\n")
    cluster = write_cluster(work / "cluster.yaml", namespaces)
    return Setup(cert_paths, request_bodies, bodies_file, cluster)


def start_process(
    label: str,
    cmd: list[str],
    port: int,
    log: Path,
    ops_port: int | None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """A server process in a session of its own, its output to `log` (`env`: None inherits)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=None if env is None else dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(label, proc, port, log, ops_port)


def start_webhook(
    workdir: Path,
    certs: dict[str, Path],
    cluster: Path,
    label: str,
    loop: str | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """`serve` on manifests: one process (a pod serves with one; replicas scale it), on
    `loop` (serve's --loop; None: its default); `extra`: more of serve's arguments."""
    port, ops = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--host", HOST, "--port", str(port),
        "--metrics-host", HOST, "--metrics-port", str(ops),
        "--cert-file", str(certs["tls.crt"]), "--key-file", str(certs["tls.key"]),
        "--objects", str(cluster),
    ]  # fmt: skip
    if loop is not None:
        cmd += ["--loop", loop]
    cmd += extra
    return start_process(label, cmd, port, workdir / f"{label}.log", ops)


def start_baseline(
    workdir: Path, certs: dict[str, Path], kind: str, loop: str | None = None, limits: bool = False
) -> Server:
    """A baseline of bench/baselines.py; `limits`: behind the webhook's limits protocol."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "bench.baselines", kind, "--host", HOST, "--port", str(port),
        "--cert-file", str(certs["tls.crt"]), "--key-file", str(certs["tls.key"]),
    ]  # fmt: skip
    label = kind if loop is None else f"{kind}-{loop}"
    if loop is not None:
        cmd += ["--loop", loop]
    if limits:
        cmd.append("--limits")
        label += "-limits"
    return start_process(label, cmd, port, workdir / f"{label}.log", None)


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def post(server: Server, ca: Path, body: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """One POST /mutate over HTTPS (certificate verified), for checks, not for load."""
    conn = http.client.HTTPSConnection(
        HOST, server.port, context=client_context(ca), timeout=timeout
    )
    try:
        conn.request("POST", "/mutate?timeout=10s", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(server: Server, ca: Path, probe: bytes, timeout: float = 120) -> float:
    """Seconds from its start until the server answers `probe` (and /readyz says ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.label} exited:\n{server.log.read_text()[-3000:]}")
        try:
            if server.ops_port is not None:
                conn = http.client.HTTPConnection(HOST, server.ops_port, timeout=2)
                conn.request("GET", "/readyz")
                ready = conn.getresponse().status == 200
                conn.close()
                if not ready:
                    raise ConnectionError("not ready")
            status, _ = post(server, ca, probe, timeout=5)
            if status == 200:
                return time.monotonic() - server.started
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.label} not ready in {timeout}s:\n{server.log.read_text()[-3000:]}")


# ---- load generators -------------------------------------------------------------------------


@dataclass
class Measurement:
    """One load run: what the generator saw and what it and the server cost in CPU."""

    rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    wall: float
    generator_cpu: float  # cores (CPU seconds / wall seconds)
    server_cpu: float  # cores
    other_cpu: float  # cores used by every other process of the machine
    server_cpu_us_per_req: float
    extra: dict[str, Any] = field(default_factory=dict)


def _run_bounded(cmd: list[str], limit: float, env: dict[str, str] | None = None) -> str:
    """Run a load generator to completion (killed past `limit`); its output."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"{cmd[0]} overran {limit}s:\n{out.decode()[-2000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{out.decode()[-2000:]}")
    return out.decode()


def _children_cpu() -> float:
    """CPU seconds of our finished (waited-for) children: the load generators."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class _Window:
    """CPU accounting over one run: server, generator (a child of ours), everything else."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pids = server.pids()
        self.workers = server.serving_pids()
        self.workers0 = [cpu_seconds([p]) for p in self.workers]
        self.server0 = cpu_seconds(self.pids)
        self.gen0 = _children_cpu()
        self.busy0 = machine_busy_seconds()
        self.t0 = time.monotonic()

    def close(self) -> tuple[float, float, float, float, float]:
        wall = time.monotonic() - self.t0
        server = cpu_seconds(self.pids) - self.server0
        gen = _children_cpu() - self.gen0
        busy = machine_busy_seconds() - self.busy0
        other = max(0.0, busy - server - gen)
        return wall, server, gen, other, busy

    def worker_cores(self, wall: float) -> list[float]:
        """Cores used by each serving process (the forked workers) over the window."""
        return [
            round((cpu_seconds([p]) - c0) / wall, 2)
            for p, c0 in zip(self.workers, self.workers0, strict=True)
        ]


def wrk(
    server: Server, bodies: Path, duration: float, connections: int = 16, threads: int = 1
) -> Measurement:
    """Maximum throughput: wrk, closed loop, keep-alive, `connections` connections."""
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "--timeout", "10s",
        "-s", str(WRK_SCRIPT), server.base, "--", str(bodies),
    ]  # fmt: skip
    window = _Window(server)
    out = _run_bounded(cmd, duration + 30)
    wall, server_cpu, gen_cpu, other, _ = window.close()
    workers = window.worker_cores(wall)
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out[-2000:]}")
    r = json.loads(line.removeprefix("WRK_JSON "))
    seconds = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    ok = max(1, r["requests"])
    return Measurement(
        rps=r["requests"] / seconds,
        requests=r["requests"],
        errors=errors,
        p50_ms=r["p50"] / 1000,
        p99_ms=r["p99"] / 1000,
        p999_ms=r["p999"] / 1000,
        wall=wall,
        generator_cpu=gen_cpu / wall,
        server_cpu=server_cpu / wall,
        other_cpu=other / wall,
        server_cpu_us_per_req=server_cpu / ok * 1e6,
        extra={"worker_cores": workers},
    )


def k6_binary() -> str:
    local = Path(sys.executable).parent / "k6"
    return str(local) if local.exists() else "k6"


def k6(
    server: Server,
    bodies: Path,
    rate: int,
    duration: float,
    workdir: Path,
    warmup: float = 3.0,
    vus: int = 64,
) -> Measurement:
    """Latency at a constant offered rate: k6's constant-arrival-rate executor (open model)."""
    out_file = workdir / f"k6-{server.label}-{rate}.json"
    out_file.unlink(missing_ok=True)
    env = {
        "URL": server.url + "?timeout=10s",
        "BODIES": str(bodies),
        "RATE": str(rate),
        "DURATION": f"{duration:g}s",
        "WARMUP": f"{warmup:g}s",
        "VUS": str(vus),
        "OUT": str(out_file),
        "K6_NO_USAGE_REPORT": "true",
    }
    cmd = [k6_binary(), "run", "--quiet", "--no-color", str(K6_SCRIPT)]
    window = _Window(server)
    _run_bounded(cmd, warmup + duration + 60, env)
    wall, server_cpu, gen_cpu, other, _ = window.close()
    metrics = json.loads(out_file.read_text())
    trend = metrics["http_req_duration{scenario:measure}"]["values"]
    reqs = metrics["http_reqs{scenario:measure}"]["values"]
    failed = metrics.get("http_req_failed{scenario:measure}", {}).get("values", {})
    dropped = metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0)
    count = int(reqs["count"])
    return Measurement(
        rps=count / duration,
        requests=count,
        errors=int(failed.get("passes", 0)),
        p50_ms=trend["p(50)"],
        p99_ms=trend["p(99)"],
        p999_ms=trend["p(99.9)"],
        wall=wall,
        generator_cpu=gen_cpu / wall,
        server_cpu=server_cpu / wall,
        other_cpu=other / wall,
        server_cpu_us_per_req=server_cpu / max(1, count) * 1e6,
        extra={"dropped": int(dropped), "max_ms": trend["max"]},
    )
