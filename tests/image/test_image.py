"""The built image, run with podman as Kubernetes runs it with the chart's security context:
read-only root filesystem, uid 65532, only /tmp writable.

    PSI_IMAGE=localhost/pullsecret-injector:0.1.0 pytest -m image tests/image

(scripts/e2e builds the image from the Dockerfile and runs this.) Without `-m image` these
tests are not collected (tests/conftest.py); with it and no PSI_IMAGE they fail.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, wait_for
from serve_process import free_port

pytestmark = pytest.mark.image

FIXTURE = ROOT / "tests/fixtures/admissionreview/v1-create-pod-multi-registry-sa-secret.json"
# As the chart runs it: readOnlyRootFilesystem with an emptyDir on /tmp, the image's USER.
# What `podman diff` lists in any container: its bind mounts, /tmp (the tmpfs) and their parents.
PODMAN_MOUNTS = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run",
                 "/run/.containerenv", "/tmp"}  # fmt: skip
LIKE_THE_CHART = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m")


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("PSI_IMAGE")
    if not name:
        pytest.fail("PSI_IMAGE is not set: build the image (scripts/e2e) and name it", False)
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman)", pytrace=False)
    return name


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    opts = ["--entrypoint", entrypoint] if entrypoint else []
    return podman("run", "--rm", *LIKE_THE_CHART, *opts, image, *args)


def test_it_runs_as_65532_not_root(image: str) -> None:
    out = run(image, "-c", "id -u; id -g", entrypoint="sh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["65532", "65532"]


def test_serve_help(image: str) -> None:
    out = run(image, "--help")  # the entrypoint is `pullsecret-injector serve`
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: pullsecret-injector serve")


def test_the_root_filesystem_is_read_only(image: str) -> None:
    out = run(image, "-c", "touch /opt/venv/x 2>&1; touch /tmp/x && echo tmp-ok", entrypoint="sh")
    assert "Read-only file system" in out.stdout
    assert "tmp-ok" in out.stdout


def test_the_installed_version_is_the_charts_app_version(image: str) -> None:
    chart = (ROOT / "charts/pullsecret-injector/Chart.yaml").read_text()
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.MULTILINE)
    assert match is not None
    code = "import importlib.metadata as m; print(m.version('pullsecret-injector'))"
    out = run(image, "-c", code, entrypoint="python")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == match[1]
    label = podman("image", "inspect", "--format", "{{json .Labels}}", image)
    assert json.loads(label.stdout)["org.opencontainers.image.version"] == match[1]


def test_the_image_says_which_commit_it_was_built_from_and_when(image: str) -> None:
    """OCI provenance annotations, as scripts/e2e builds it: the commit checked out and the
    build's time."""
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head
    created = datetime.datetime.strptime(
        labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    assert now - datetime.timedelta(days=1) < created <= now


NOTHING_TO_BUILD_WITH = r"""
found=""
for tool in pip pip3 pip3.11 easy_install wheel gcc cc c++ g++ clang tcc make; do
  command -v "$tool" >/dev/null 2>&1 && found="$found $tool"
done
for py in /usr/bin/python3 /usr/local/bin/python3 /opt/venv/bin/python; do
  [ -x "$py" ] || continue
  for mod in pip setuptools wheel; do
    "$py" -c "import $mod" >/dev/null 2>&1 && found="$found $py:$mod"
  done
done
found="$found $(find / -xdev \( -name 'pip-*.whl' -o -name 'setuptools-*.whl' \
  -o -name 'wheel-*.whl' \) 2>/dev/null | tr '\n' ' ')"
echo "found:$found" | tr -s ' '
"""


def test_no_pip_setuptools_or_compiler_inside(image: str) -> None:
    out = run(image, "-c", NOTHING_TO_BUILD_WITH, entrypoint="sh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "found:", out.stdout


@pytest.fixture
def dev_server(image: str, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """`serve --dev` in the image, on this host's loopback (host network)."""
    port, ops = free_port(), free_port()
    started = podman(
        "run", "-d", "--rm", "--network", "host", *LIKE_THE_CHART, image,
        "--dev", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(ops),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        yield container, port, ops
    finally:
        podman("rm", "--force", "--time", "5", container)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def test_serve_dev_answers_healthz_and_admits_over_tls(
    dev_server: tuple[str, int, int], tmp_path: Path
) -> None:
    container, port, ops = dev_server
    wait_for(lambda: _get(f"http://127.0.0.1:{ops}/healthz") == 200, "/healthz", timeout=60)
    # The CA that --dev generated, read from the container's /tmp, verifies the server.
    logs = podman("logs", container).stderr + podman("logs", container).stdout
    match = re.search(r"--cacert (\S+)", logs)
    assert match is not None, logs
    ca = podman("exec", container, "cat", match[1])
    assert ca.returncode == 0, ca.stderr
    context = ssl.create_default_context(cadata=ca.stdout)
    request = urllib.request.Request(
        f"https://localhost:{port}/mutate",
        data=FIXTURE.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        review = json.loads(response.read())
    sent = json.loads(FIXTURE.read_bytes())
    assert review["response"]["uid"] == sent["request"]["uid"]
    assert review["response"]["allowed"] is True
    # Nothing was written outside /tmp: the root filesystem is what the image shipped, but
    # for the files podman itself mounts into every container.
    diff = podman("diff", "--format", "json", container)
    assert diff.returncode == 0, diff.stderr
    changed = {path for paths in json.loads(diff.stdout or "{}").values() for path in paths}
    assert changed - PODMAN_MOUNTS == set(), changed
