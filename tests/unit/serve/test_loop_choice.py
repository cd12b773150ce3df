"""`serve --loop`: uvloop by default when installed, asyncio's own on request (issue 14)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from webhook.config import Settings
from webhook.serve.run import StartupError, loop_factory


def test_auto_is_the_default_and_picks_uvloop_when_installed() -> None:
    assert Settings(dev=True).loop == "auto"
    factory = loop_factory("auto")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_asks_for_asyncios_own_loop() -> None:
    assert loop_factory("asyncio") is None
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(StartupError, match="uvloop is not installed"):
        loop_factory("uvloop")
