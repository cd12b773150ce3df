"""Where the server's CPU goes per admission: a py-spy profile of `serve` under wrk load.

    .venv/bin/python -m bench.profile --name after          # bench/profiles/after.{txt,svg}
    .venv/bin/python -m bench.profile --name x --loop asyncio --seconds 10

Starts `serve --objects` (20 namespaces x 5 registry secrets, bench/workload.py) on
127.0.0.1 exactly as `bash bench/run` does, warms it up with wrk (1 thread, 16 keep-alive
HTTPS connections, the 60 bodies in rotation), then, under the same load:

1. measures the server's CPU per admission without a profiler attached (/proc/<pid>/stat
   over a wrk window: the `srv CPU µs/req` of bench/run);
2. samples it with py-spy (`record --format raw`, 1000 Hz, idle frames left out, so the
   samples are where the process spends CPU) and writes a flame graph (SVG) as well.

The table attributes samples to the items issue 14 asks about (a sample counts for an item
when one of its frames matches) and turns each share into µs per admission with the
unprofiled figure of step 1, then lists the top functions by own and by inclusive samples.
py-spy needs ptrace (root, or CAP_SYS_PTRACE); `pip install py-spy` (PyPI wheel).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import load
from bench.workload import ROOT

PROFILES = ROOT / "bench/profiles"

# Item -> patterns matched against a frame "function (path:line)". First match in this
# order wins for a sample's item (a sample is one stack; it counts once per item).
ITEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JSON log line per injection (logging, formatter)",
     (r"logging/__init__", r"webhook/serve/logs\.py")),
    ("Prometheus counter/histogram updates", (r"prometheus_client/",)),
    ("Decider memo lookups + decision", (r"webhook/core/injection\.py", r"webhook/kubelet/")),
    ("AdmissionReview parse/validate + response build (base64 of the patch)",
     (r"webhook/core/admission\.py",)),
    ("decode of the body (orjson; msgspec since decode.py)",
     (r"decode_review ", r"webhook/serve/decode\.py")),
    ("orjson encode + Response object",
     (r"_json_response ", r"json_response ", r"starlette/responses\.py")),
    ("Starlette Request (headers, body stream)",
     (r"starlette/requests\.py", r"starlette/datastructures\.py")),
    ("FastAPI/Starlette app stack (middleware, routing, exceptions)",
     (r"starlette/", r"fastapi/")),
    ("webhook /mutate handler (rest)", (r"webhook/serve/app\.py", r"webhook/serve/mutate\.py")),
    ("uvicorn HTTP protocol (httptools, limits.py, ASGI cycle)",
     (r"uvicorn/", r"webhook/serve/limits\.py")),
    ("TLS and socket I/O (asyncio sslproto, transports)",
     (r"asyncio/sslproto\.py", r"asyncio/selector_events\.py", r"ssl\.py")),
    ("event loop (asyncio scheduling, tasks)", (r"asyncio/", r"uvloop/")),
)  # fmt: skip

_TARGETS = {
    "serve": "`serve` (20 namespaces x 5 secrets)",
    "raw": "(a) raw ASGI (bench/baselines.py)",
    "floor": "(b) FastAPI floor (bench/baselines.py)",
    "pure": "(c) the webhook's pure path in (a)'s shell (bench/baselines.py)",
}

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """`func (…/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path}{':' + m['line'] if m['line'] else ''})"


def _function(frame: str) -> str:
    """The frame without its line number: functions are aggregated over their lines."""
    return re.sub(r":\d+\)$", ")", frame)


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: `thread;frame;frame... count` lines, root first."""
    stacks = []
    for line in text.splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        stacks.append((frames, int(count)))
    return stacks


def table(stacks: list[tuple[list[str], int]], us_per_req: float, requests: int) -> str:
    total = sum(c for _, c in stacks) or 1
    items: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        item = "other (imports of nothing above: GC, C code called from the loop)"
        # the innermost matching frame names the item (a log call inside the handler is
        # the log's, not the handler's)
        for frame in reversed(frames):
            hit = next(
                (name for name, pats in ITEMS if any(re.search(p, frame) for p in pats)), None
            )
            if hit is not None:
                item = hit
                break
        items[item] += count
        if frames:
            own[_function(frames[-1])] += count
        for f in {_function(f) for f in frames}:
            incl[f] += count
    out = [
        f"{total} samples; server CPU {us_per_req:.0f} µs per admission (unprofiled, "
        f"{requests} requests); µs below = share of samples x that figure",
        "",
        f"{'µs/adm':>7} {'share':>6}  item (innermost matching frame of each sample)",
    ]
    for name, count in items.most_common():
        out.append(f"{count / total * us_per_req:>7.1f} {count / total:>6.1%}  {name}")
    out += ["", "Top 30 functions by own samples", f"{'µs/adm':>7} {'share':>6}  function"]
    for name, count in own.most_common(30):
        out.append(f"{count / total * us_per_req:>7.1f} {count / total:>6.1%}  {name}")
    out += ["", "Top 40 functions by inclusive samples", f"{'µs/adm':>7} {'share':>6}  function"]
    for name, count in incl.most_common(40):
        out.append(f"{count / total * us_per_req:>7.1f} {count / total:>6.1%}  {name}")
    return "\n".join(out)


def _py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("bench.profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    return found


def profile(name: str, seconds: float, loop: str | None, rate: int, target: str = "serve") -> str:
    py_spy = _py_spy()
    PROFILES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="psi-profile-") as tmp:
        work = Path(tmp)
        ready = load.setup(work)
        cert_paths, request_bodies, bodies_file = ready.certs, ready.bodies, ready.bodies_file
        cluster = ready.cluster
        if target == "serve":
            server = load.start_webhook(work, cert_paths, cluster, "webhook-profile", loop=loop)
        else:  # a baseline, to see where the server's own share of an admission goes
            server = load.start_baseline(work, cert_paths, target, loop=loop)
        try:
            load.wait_ready(server, cert_paths["ca.crt"], request_bodies[1])
            load.wrk(server, bodies_file, 2.0)  # warm-up
            load.wait_quiet()
            plain = load.wrk(server, bodies_file, seconds)
            raw = work / "profile.raw"
            svg = PROFILES / f"{name}.svg"
            spy_cmd = [py_spy, "record", "-p", str(server.proc.pid), "-r", str(rate),
                       "-d", f"{seconds:g}", "--nonblocking"]  # fmt: skip
            spies = [
                subprocess.Popen([*spy_cmd, "-f", "raw", "-o", str(raw)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            ]  # fmt: skip
            time.sleep(0.5)
            load.wrk(server, bodies_file, seconds + 1.0)
            for spy in spies:
                _, err = spy.communicate(timeout=seconds + 60)
                if spy.returncode != 0:
                    raise RuntimeError(f"py-spy failed: {err.decode()[-1000:]}")
            # the flame graph of the same samples
            _flamegraph(raw, svg, name)
            stacks = parse_raw(raw.read_text())
            shutil.copy(raw, Path(tempfile.gettempdir()) / f"psi-profile-{name}.raw")
        finally:
            server.stop()
    header = (
        f"bench/profile.py --name {name}: {_TARGETS[target]}, loop "
        f"{loop or 'default'}, under wrk -t1 -c16 over TLS, bodies in rotation; "
        f"py-spy {rate} Hz, {seconds:g} s, idle frames excluded.\n"
        f"unprofiled: {plain.rps:,.0f} req/s, server {plain.server_cpu:.2f} cores, "
        f"other load {plain.other_cpu:.2f} cores, load average "
        f"{Path('/proc/loadavg').read_text().split()[0]}\n"
    )
    text = header + "\n" + table(stacks, plain.server_cpu_us_per_req, plain.requests) + "\n"
    (PROFILES / f"{name}.txt").write_text(text)
    return text


def _flamegraph(raw: Path, svg: Path, title: str) -> None:
    """An SVG flame graph of py-spy's raw samples (py-spy draws it from its own samples
    only, so this re-records nothing: it renders the collapsed stacks with a small SVG
    writer)."""
    stacks = parse_raw(raw.read_text())
    write_flamegraph(stacks, svg, title)


def write_flamegraph(stacks: Sequence[tuple[list[str], int]], svg: Path, title: str) -> None:
    """A plain icicle-style SVG flame graph (root at the top), frames under 0.2 % left out."""
    counts: collections.Counter[tuple[str, ...]] = collections.Counter()
    for frames, count in stacks:
        for i in range(len(frames)):
            counts[tuple(frames[: i + 1])] += count
    total = sum(c for _, c in stacks) or 1
    width, row = 1600.0, 16
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = collections.defaultdict(list)
    for path in counts:
        children[path[:-1]].append(path)
    rects: list[str] = []
    depth_max = 0

    def draw(path: tuple[str, ...], x: float, depth: int) -> None:
        nonlocal depth_max
        offset = x
        for child in sorted(children.get(path, [])):
            w = counts[child] / total * width
            if w < width * 0.002:
                offset += w
                continue
            depth_max = max(depth_max, depth)
            label = child[-1].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            hue = 20 + (hash(child[-1].split(" (")[0]) % 40)
            text = label if w > 60 else ""
            rects.append(
                f"<g><title>{label} ({counts[child]} samples, {counts[child] / total:.1%})"
                f'</title><rect x="{offset:.1f}" y="{depth * row + 24}" width="{w:.1f}" '
                f'height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
                f'<text x="{offset + 2:.1f}" y="{depth * row + 36}" font-size="10" '
                f'clip-path="inset(0 0 0 0)">{text[: int(w / 6)]}</text></g>'
            )
            draw(child, offset, depth + 1)
            offset += w

    draw((), 0.0, 0)
    height = (depth_max + 2) * row + 30
    svg.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'font-family="monospace"><text x="4" y="16" font-size="13">{title}: {total} '
        f"samples (hover a frame for its share)</text>" + "".join(rects) + "</svg>\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--name", required=True, help="bench/profiles/NAME.txt and NAME.svg")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default=None,
                   help="serve's --loop (default: serve's own default)")  # fmt: skip
    p.add_argument("--target", choices=sorted(_TARGETS), default="serve",
                   help="the webhook, or (a), (b) or (c) of bench/baselines.py")  # fmt: skip
    args = p.parse_args(argv)
    os.chdir(ROOT)
    print(profile(args.name, args.seconds, args.loop, args.rate, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
