"""serve/logs.py: one JSON object per line, context fields kept, nothing else leaks in."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from webhook.serve.logs import JsonFormatter, configure


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


def test_an_exception_is_one_field_not_a_traceback() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["error"] == "ValueError: bad thing"
    assert "Traceback" not in orjson.dumps(entry).decode()


def test_configure_sends_everything_through_one_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
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
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


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
