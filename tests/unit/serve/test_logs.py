"""serve/logs.py: one JSON object per line, context fields kept, nothing else leaks in."""

from __future__ import annotations

import asyncio
import logging
import sys

import orjson
import pytest

from webhook.serve.logs import JsonFormatter, LineSampler, LoopBatchingHandler, configure


def _record(msg: str = "injected imagePullSecrets", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("webhook.serve.app", logging.INFO, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_is_one_json_object_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(_record())
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "webhook.serve.app"
    assert entry["msg"] == "injected imagePullSecrets"
    assert entry["time"].endswith("Z") and "T" in entry["time"]


def test_extra_fields_are_kept_and_the_record_internals_are_not() -> None:
    entry = orjson.loads(
        JsonFormatter().format(_record(uid="u-1", namespace="team-a", injected=["a", "b"]))
    )
    assert entry["uid"] == "u-1" and entry["namespace"] == "team-a"
    assert entry["injected"] == ["a", "b"]
    for internal in ("args", "msecs", "levelno", "pathname", "thread", "taskName"):
        assert internal not in entry


def test_values_json_cannot_encode_are_written_as_text() -> None:
    entry = orjson.loads(JsonFormatter().format(_record(path=object(), counts={1: "x"})))
    assert entry["path"].startswith("<object object")
    assert entry["counts"] == {"1": "x"}


def _raise_bad_thing() -> None:
    raise ValueError("bad thing")


def test_an_exception_is_its_error_and_stack_trace_on_the_same_one_line() -> None:
    """Where it failed, as zap's production logger gives it at error level: the frames
    (file, line, code), still one JSON object on one line."""
    try:
        _raise_bad_thing()
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["error"] == "ValueError: bad thing"
    assert entry["stacktrace"].startswith("Traceback")
    assert "_raise_bad_thing" in entry["stacktrace"]


def test_configure_sends_everything_through_one_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile)
    try:
        configure("warning")
        assert root.level == logging.WARNING
        assert [type(h.formatter) for h in root.handlers] == [JsonFormatter]
        assert logging.getLogger("uvicorn.error").handlers == []
        logging.getLogger("webhook.test").warning("careful", extra={"namespace": "n"})
        logging.getLogger("webhook.test").info("not shown")
        lines = capsys.readouterr().err.strip().splitlines()
        assert [orjson.loads(x)["msg"] for x in lines] == ["careful"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging._srcfile = saved[2]


def test_the_time_is_each_records_own_though_formatted_once_a_second() -> None:
    formatter = JsonFormatter()
    times = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_699_999_999.0):
        record = _record()
        record.created, record.msecs = created, (created % 1) * 1000
        times.append(orjson.loads(formatter.format(record))["time"])
    assert times == [
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:20.750Z",
        "2023-11-14T22:13:21.500Z",
        "2023-11-14T22:13:19.000Z",
    ]


class _Stream:
    """A text stream that remembers each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        return None


def _handler_logger(stream: _Stream) -> tuple[logging.Logger, LoopBatchingHandler]:
    handler = LoopBatchingHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("webhook.test.batching")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def _msgs(stream: _Stream) -> list[list[str]]:
    return [[orjson.loads(x)["msg"] for x in w.splitlines()] for w in stream.writes]


def test_lines_logged_in_one_loop_iteration_go_out_in_one_write_at_its_end() -> None:
    stream = _Stream()
    logger, _ = _handler_logger(stream)
    seen_inside: list[int] = []

    async def one_iteration() -> None:
        logger.info("a")
        logger.info("b")
        seen_inside.append(len(stream.writes))  # nothing written yet
        await asyncio.sleep(0)  # the loop runs its ready callbacks: the flush
        seen_inside.append(len(stream.writes))
        logger.info("c")
        await asyncio.sleep(0)

    asyncio.run(one_iteration())
    assert seen_inside == [0, 1]
    assert _msgs(stream) == [["a", "b"], ["c"]]
    assert all(w.endswith("\n") for w in stream.writes)


def test_a_warning_and_a_line_off_the_loop_are_written_at_once_after_what_is_held() -> None:
    stream = _Stream()
    logger, _ = _handler_logger(stream)

    async def warn() -> None:
        logger.info("held")
        logger.warning("now")
        assert _msgs(stream) == [["held", "now"]]

    asyncio.run(warn())
    logger.info("from a thread")  # no running loop here
    assert _msgs(stream)[-1] == ["from a thread"]


def _log_and_stop_the_loop(logger: logging.Logger, msg: str) -> None:
    """Log on a loop that stops in the same iteration: its flush callback never runs."""
    loop = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        logger.info(msg)
        loop.stop()

    try:
        task = loop.create_task(log_and_stop())
        loop.run_forever()
        assert task.done()
    finally:
        loop.close()


def test_lines_held_when_the_loop_stops_are_written_by_flush_or_the_next_loop() -> None:
    stream = _Stream()
    logger, handler = _handler_logger(stream)
    _log_and_stop_the_loop(logger, "last words")
    assert stream.writes == []  # held: the loop stopped before its flush
    handler.flush()  # what logging.shutdown() calls at exit
    assert _msgs(stream) == [["last words"]]

    _log_and_stop_the_loop(logger, "first")
    assert len(stream.writes) == 1

    async def next_loop() -> None:
        logger.info("second")  # the line held for the closed loop goes out at once
        assert _msgs(stream)[1:] == [["first"]]
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert _msgs(stream)[1:] == [["first"], ["second"]]


def test_configure_turns_off_caller_lookup() -> None:
    saved = (logging.getLogger().handlers[:], logging.getLogger().level, logging._srcfile)
    try:
        configure("info")
        assert logging._srcfile is None
        assert isinstance(logging.getLogger().handlers[0], LoopBatchingHandler)
    finally:
        logging.getLogger().handlers[:] = saved[0]
        logging.getLogger().setLevel(saved[1])
        logging._srcfile = saved[2]


def test_a_sampler_writes_ten_lines_a_second_and_says_how_many_it_dropped() -> None:
    now = [100.0]
    sampler = LineSampler(10, clock=lambda: now[0])
    first_second = [sampler.allow() for _ in range(1000)]
    assert first_second[:10] == [{}] * 10 and first_second[10:] == [None] * 990
    now[0] = 101.2
    assert sampler.allow() == {"suppressed": 990}  # the next line says what was dropped
    assert sampler.allow() == {}


def test_uvicorns_lines_about_malformed_requests_are_sampled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line per malformed request (uvicorn's, before limits.py answers it) would let
    any client flood the log: 10 a second, then counted."""
    root, uvicorn_errors = logging.getLogger(), logging.getLogger("uvicorn.error")
    saved = (root.handlers[:], root.level, logging._srcfile, uvicorn_errors.filters[:])
    try:
        configure("info")
        for _ in range(500):
            uvicorn_errors.warning("Invalid HTTP request received.")
        uvicorn_errors.warning("something else")  # other lines are not sampled
        lines = [orjson.loads(x) for x in capsys.readouterr().err.strip().splitlines()]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging._srcfile = saved[2]
        uvicorn_errors.filters[:] = saved[3]
    malformed = [x for x in lines if x["msg"] == "Invalid HTTP request received."]
    assert 10 <= len(malformed) <= 30
    assert lines[-1]["msg"] == "something else"
