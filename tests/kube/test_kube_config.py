"""load_api_client: which configuration it picks, proven by a request to the local server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kube_apiserver import ApiServer, kubeconfig_text
from kube_support import Tls
from kubernetes import client
from kubernetes.config import incluster_config
from kubernetes.config.config_exception import ConfigException

from webhook.cluster.apiclient import load_api_client


def reaches(api_client: client.ApiClient, server: ApiServer) -> bool:
    """One authenticated list against `server` works with this client."""
    before = len(server.requests)
    client.CoreV1Api(api_client).list_namespace(limit=1, _request_timeout=5)
    return len(server.requests) == before + 1


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KUBECONFIG, an empty home, not in a pod."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    return home


def test_an_explicit_kubeconfig(
    kubeconfig: Path, apiserver: ApiServer, no_ambient_config: Path
) -> None:
    api_client = load_api_client(kubeconfig, None)
    assert reaches(api_client, apiserver)
    assert api_client.configuration.keep_alive is True  # TCP keepalive, as client-go


def test_kubeconfig_from_the_environment(
    kubeconfig: Path, apiserver: ApiServer, no_ambient_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert reaches(load_api_client(None, None), apiserver)


def test_kubeconfig_from_home(
    kubeconfig: Path, apiserver: ApiServer, no_ambient_config: Path
) -> None:
    (no_ambient_config / ".kube").mkdir()
    (no_ambient_config / ".kube" / "config").write_text(kubeconfig.read_text())
    assert reaches(load_api_client(None, None), apiserver)


def test_a_context_picks_its_cluster(
    kubeconfig: Path, apiserver: ApiServer, no_ambient_config: Path, tmp_path: Path
) -> None:
    doc = json.loads(kubeconfig.read_text())
    wrong = {"name": "wrong", "cluster": {"server": "https://127.0.0.1:1"}}
    doc["clusters"].append(wrong)
    doc["contexts"].append({"name": "elsewhere", "context": {"cluster": "wrong", "user": "tester"}})
    doc["contexts"][0]["name"] = "right"
    doc["current-context"] = "elsewhere"
    path = tmp_path / "two-contexts"
    path.write_text(json.dumps(doc))
    assert reaches(load_api_client(path, "right"), apiserver)
    assert load_api_client(path, None).configuration.host == "https://127.0.0.1:1"


def test_in_cluster_service_account(
    apiserver: ApiServer,
    tls: Tls,
    no_ambient_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text(apiserver.token)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tls.ca_file))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(apiserver.port))
    assert reaches(load_api_client(None, None), apiserver)


def test_nothing_to_load_is_a_config_error(no_ambient_config: Path) -> None:
    with pytest.raises(ConfigException):
        load_api_client(None, None)
    with pytest.raises(ConfigException, match="needs a kubeconfig"):
        load_api_client(None, "some-context")


def test_a_missing_kubeconfig_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigException):
        load_api_client(tmp_path / "absent", None)


def test_kubeconfig_text_is_yaml(apiserver: ApiServer, tls: Tls) -> None:
    import yaml  # noqa: PLC0415

    assert yaml.safe_load(kubeconfig_text(apiserver, str(tls.ca_file)))["current-context"]
