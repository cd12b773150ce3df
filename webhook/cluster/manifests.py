"""Read Kubernetes objects from manifest files and folders, as `kubectl apply -f` does.

YAML or JSON, multi-document streams, and `List` kinds (v1 List, SecretList, ...) are
flattened into one list of objects, in file order; a folder is read non-recursively, its
.yaml/.yml/.json files sorted by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from webhook.cluster.store import NAMESPACES, SECRETS, Store
from webhook.core.model import secret_from_object

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ValueError):
    """A manifest that cannot be read, with the file it came from."""


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise ManifestError(f"{path}: no such file or folder")


def _flatten(doc: Any, source: Path) -> Iterator[dict[str, Any]]:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise ManifestError(f"{source}: a document is not an object")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _flatten(item, source)
    else:
        yield doc


def _documents(text: str, source: Path) -> Iterator[Any]:
    try:
        if source.suffix == ".json":
            yield json.loads(text)
        else:
            yield from yaml.load_all(text, Loader=_Loader)
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"{source}: not valid YAML/JSON: {exc}") from exc


def parse_documents(text: str, source: Path) -> list[dict[str, Any]]:
    """Every object in one file's text."""
    return [obj for doc in _documents(text, source) for obj in _flatten(doc, source)]


def iter_objects(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """All objects of the given files and folders, in order, one at a time.

    Streaming keeps a large cluster state from being held twice (parsed objects and the
    store) while it loads.
    """
    for file in _files(paths):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{file}: cannot read: {exc}") from exc
        for doc in _documents(text, file):
            yield from _flatten(doc, file)


def load_objects(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """All objects of the given files and folders, in order."""
    return list(iter_objects(paths))


def fill_store(store: Store, objects: Iterable[Mapping[str, Any]]) -> None:
    """Load Namespaces and registry Secrets into the store and mark it synced.

    A Secret without metadata.namespace lands in `default`, as kubectl would create it.
    """
    namespaces: dict[str, Mapping[str, str]] = {}
    secrets = []
    for obj in objects:
        kind = obj.get("kind")
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        if kind == "Namespace" and isinstance(meta.get("name"), str):
            labels = meta.get("labels")
            namespaces[meta["name"]] = dict(labels) if isinstance(labels, Mapping) else {}
        elif kind == "Secret":
            secret = secret_from_object(
                {**obj, "metadata": {**meta, "namespace": meta.get("namespace") or "default"}}
            )
            if secret is not None:
                secrets.append(secret)
    for secret in secrets:
        namespaces.setdefault(secret.namespace, {})
    store.replace_namespaces(namespaces)
    store.replace_secrets(secrets)
    store.mark_synced(SECRETS)
    store.mark_synced(NAMESPACES)
