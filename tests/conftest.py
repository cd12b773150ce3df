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


# Suites that need more than this machine's Python: a built image (`-m image`, PSI_IMAGE)
# or a real cluster (`-m e2e`, KUBECONFIG). A plain `pytest` leaves them out (deselected,
# not skipped: nothing that did not run is counted); scripts/e2e runs them.
OPT_IN_MARKERS = ("image", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if str(config.getoption("markexpr") or "").strip():
        return  # an explicit -m selects as the user said
    keep, drop = [], []
    for item in items:
        opted_in = any(item.get_closest_marker(m) for m in OPT_IN_MARKERS)
        (drop if opted_in else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
