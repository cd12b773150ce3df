"""The HTTPS server's uvicorn wiring of the limits and the shutdown (issue 11)."""

from __future__ import annotations

import math

import uvicorn

from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.serve.limits import HttpLimits, protocol_class
from webhook.serve.shutdown import Drain, DrainingServer

__all__ = ["Drain", "DrainingServer", "apply_limits"]


def apply_limits(
    config: uvicorn.Config, settings: Settings, metrics: Metrics, drain: Drain
) -> None:
    """Set the limited protocol and the idle keep-alive timeout on a config not loaded yet."""
    config.http = protocol_class(HttpLimits.from_settings(settings), metrics, drain)
    config.timeout_keep_alive = max(1, math.ceil(settings.idle_timeout))  # uvicorn: int
