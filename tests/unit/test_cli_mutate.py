"""`pullsecret-injector mutate`: pods as they would be stored, AdmissionReview answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import EXAMPLES, REVIEWS

from webhook.cli import main

CLUSTER = str(EXAMPLES / "cluster.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pull_secrets(pod: dict[str, object]) -> list[str]:
    spec = pod["spec"]
    assert isinstance(spec, dict)
    return [e["name"] for e in spec.get("imagePullSecrets") or []]


def test_mutates_a_pod_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "mutate", "-f", str(EXAMPLES / "pods" / "multi-registry.yaml"), "--objects", CLUSTER
    )
    assert code == 0
    pod = yaml.safe_load(out)
    assert pull_secrets(pod) == [
        "dockerhub", "example-registry", "example-registry-5000", "explicit-regcred",
        "ghcr-org", "wildcard-internal",
    ]  # fmt: skip


def test_a_folder_of_pods_prints_a_stream_in_input_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "mutate", "-f", str(EXAMPLES / "pods"), "--objects", CLUSTER)
    assert code == 0
    pods = list(yaml.safe_load_all(out))
    names = [p["metadata"].get("name") or p["metadata"]["generateName"] for p in pods]
    assert names == ["multi", "opted-out", "web-"]
    assert pull_secrets(pods[1]) == []  # opted out
    assert pull_secrets(pods[2]) == ["example-registry"]  # team-b's own


def test_namespace_flag_applies_to_pods_without_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "a", "image": "registry.example.com/a"}]},
    }
    f = tmp_path / "pod.json"
    f.write_text(json.dumps(pod))
    _, out, _ = run(capsys, "mutate", "-f", str(f), "--objects", CLUSTER, "-n", "legacy")
    assert pull_secrets(yaml.safe_load(out)) == ["regcred"]
    _, out, _ = run(capsys, "mutate", "-f", str(f), "--objects", CLUSTER)
    assert pull_secrets(yaml.safe_load(out)) == []  # `default` has no registry secrets


def test_explain_says_which_secret_for_which_image_and_why_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(
        capsys, "mutate", "--explain", "-f", str(EXAMPLES / "pods" / "multi-registry.yaml"),
        "--objects", CLUSTER,
    )  # fmt: skip
    assert "# pod multi in namespace team-a" in out
    assert "docker.io/library/nginx uses dockerhub (Docker Hub fallback key)" in out
    assert "registry.example.com:5000/tools/init uses example-registry-5000" in out
    assert "not added: broken: the kubelet cannot parse it" in out
    assert "not added: sa-regcred: no image of the pod is pulled with its credentials" in out
    yaml.safe_load(out)  # still one valid YAML document


def test_admission_review_in_gives_the_review_response_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = REVIEWS / "v1beta1-create-pod.json"
    code, out, _ = run(capsys, "mutate", "-f", str(path), "--objects", CLUSTER)
    assert code == 0
    answer = json.loads(out)
    request = json.loads(path.read_text())["request"]
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert answer["response"]["uid"] == request["uid"]
    assert answer["response"]["patchType"] == "JSONPatch"


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "mutate", "-f", "/nonexistent.yaml", "--objects", CLUSTER)
    assert code == 2
    assert "/nonexistent.yaml: no such file or folder" in err


def test_broken_yaml_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("kind: Pod\n  : : [")
    code, _, err = run(capsys, "mutate", "-f", str(f))
    assert code == 2 and "not valid YAML/JSON" in err


def test_list_kinds_are_flattened(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pods = yaml.safe_load_all((EXAMPLES / "pods" / "multi-registry.yaml").read_text())
    f = tmp_path / "list.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(pods)}))
    code, out, _ = run(capsys, "mutate", "-f", str(f), "--objects", CLUSTER)
    assert code == 0 and "ghcr-org" in out
