"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest
from helpers import EXAMPLES

from webhook.cluster.manifests import fill_store, load_objects
from webhook.cluster.store import Store


@pytest.fixture
def example_store() -> Store:
    """The example cluster state of examples/cluster.yaml."""
    store = Store()
    fill_store(store, load_objects([EXAMPLES / "cluster.yaml"]))
    return store
