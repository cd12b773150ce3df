"""Structured JSON logs. Callers pass context with `extra=`; nothing here reads secrets."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and every `extra` field.

    One line per injection is on the hot path (bench/profiles/): the time is formatted
    once a second (strftime and gmtime were a fifth of the formatter's cost), the
    milliseconds per line.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            # where it failed (file, line, code): the frames, never their variables
            entry["stacktrace"] = self.formatException(record.exc_info)
        # orjson: one injection log line a pod is the hot path's largest fixed cost
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class LoopBatchingHandler(logging.Handler):
    """Lines to a stream, written once per event-loop iteration when logged on a loop.

    A line per injection is on the hot path, and at server level the stream's write (one
    write() system call per line: stderr is line-buffered) cost as much again as building
    the line (bench/README.md). A record logged on a running event loop at info or below
    is held, and the first one held schedules a flush at the end of the loop's current
    iteration (``call_soon``): the lines of every request answered in one iteration go out
    in one write, before the loop waits for anything. A warning or worse, and any record
    logged off a loop (the watch, list and replication threads), first writes what is held
    and then itself, at once. ``flush`` (called by ``logging.shutdown`` at exit) writes what
    is held: no line is lost when the loop stops with one pending.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._held: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush waits on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        loop = asyncio._get_running_loop()  # the C fast path: None off a loop
        if loop is None or record.levelno >= logging.WARNING:
            self._held.append(line)
            self._write()
            return
        if self._flush_on is not loop:  # lines held for a loop gone since are written first
            self._write()
            loop.call_soon(self.flush)
            self._flush_on = loop
        self._held.append(line)

    def flush(self) -> None:
        self.acquire()  # emit runs under the handler's lock; the loop's flush takes it too
        try:
            self._write()
        finally:
            self.release()

    def _write(self) -> None:
        self._flush_on = None
        held = self._held
        if not held:
            return
        self._held = []
        held.append("")
        try:
            self.stream.write("\n".join(held))
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the lines are dropped
            pass


class LineSampler:
    """At most `per_second` lines a second for one kind of line; the ones dropped are
    counted and the next line written says how many (`suppressed`).

    For lines any client can cause at will (a malformed request): a flood of them must not
    become a flood of log lines. zap's production logger samples the same way (the first
    lines of each message per second, then few).
    """

    def __init__(self, per_second: int = 10, clock: Any = time.monotonic) -> None:
        self._per_second = per_second
        self._clock = clock
        self._second = -1
        self._written = 0
        self._dropped = 0

    def allow(self) -> dict[str, int] | None:
        """None: drop this line. Otherwise the fields to add to it (what was dropped)."""
        second = int(self._clock())
        if second != self._second:
            self._second, self._written = second, 0
        if self._written >= self._per_second:
            self._dropped += 1
            return None
        self._written += 1
        dropped, self._dropped = self._dropped, 0
        return {"suppressed": dropped} if dropped else {}


class SampledMessages(logging.Filter):
    """A LineSampler per message, for the given messages of a logger (uvicorn's lines about
    malformed requests, which any client can send at will)."""

    def __init__(self, *messages: str) -> None:
        super().__init__()
        self._samplers = {m: LineSampler() for m in messages}

    def filter(self, record: logging.LogRecord) -> bool:
        sampler = self._samplers.get(record.getMessage())
        if sampler is None:
            return True
        sampled = sampler.allow()
        if sampled is None:
            return False
        for key, value in sampled.items():
            setattr(record, key, value)
        return True


# uvicorn's lines for a request its parser refuses (answered as a JSON 400 by limits.py)
UVICORN_MALFORMED = ("Invalid HTTP request received.", "Unsupported upgrade request.")


def configure(level: str) -> None:
    handler = LoopBatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # What the formatter never writes, records need not gather: the thread, the process
    # and its name (three lookups per record).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor where a call was made from: the formatter writes no file, line or function, and
    # finding them walks the stack for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.filters[:] = [
        f for f in uvicorn_errors.filters if not isinstance(f, SampledMessages)
    ]
    uvicorn_errors.addFilter(SampledMessages(*UVICORN_MALFORMED))
    logging.getLogger("uvicorn.access").setLevel("WARNING")
