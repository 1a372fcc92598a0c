"""TETHER_LOG_FORMAT=json: one JSON object per log record, with the fields operators filter on."""

from __future__ import annotations

import io
import logging
import logging.config

import orjson
import pytest

from tether.logs import JsonFormatter, dict_config


def _emit(formatter: logging.Formatter, log: logging.Logger, *calls: tuple[str, dict]) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        for message, extra in calls:
            log.warning(message, extra=extra)
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed on %s", "x", extra={"partition": 2})
    finally:
        log.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_every_record_is_one_json_line_with_the_operators_fields() -> None:
    lines = _emit(
        JsonFormatter(worker="w-7"),
        logging.getLogger("tether.test.logs"),
        ("plain", {}),
        ("multi\nline message", {"workflow": "wf-1", "code": "chain_too_long", "partition": 3}),
    )
    assert len(lines) == 3  # a traceback or a newline never splits a record
    docs = [orjson.loads(line) for line in lines]
    for d in docs:
        assert {"ts", "level", "logger", "message", "worker"} <= d.keys()
        assert d["worker"] == "w-7"
        assert d["logger"] == "tether.test.logs"
        assert d["ts"].endswith("+00:00")
    assert docs[0]["level"] == "warning"
    assert "workflow" not in docs[0]
    assert docs[1] | {"message": ""} == docs[1] | {
        "workflow": "wf-1",
        "code": "chain_too_long",
        "partition": 3,
        "message": "",
    }
    assert docs[1]["message"] == "multi\nline message"
    assert docs[2]["level"] == "error"
    assert docs[2]["message"] == "failed on x"
    assert "ValueError: boom" in docs[2]["exc"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_dict_config_faust_applies_keeps_the_format(fmt: str) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logging.config.dictConfig(dict_config("info", fmt=fmt, worker="w1"))  # type: ignore[arg-type]
        (handler,) = root.handlers
        record = logging.LogRecord("tether.x", logging.INFO, __file__, 1, "hello", None, None)
        out = handler.format(record)
        if fmt == "json":
            assert orjson.loads(out)["worker"] == "w1"
        else:
            assert out.endswith("INFO tether.x hello")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_configure_leaves_a_root_logger_someone_else_configured() -> None:
    from tether.logs import configure

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    foreign = logging.NullHandler()
    try:
        root.handlers[:] = [foreign]
        configure("debug", fmt="json")
        assert root.handlers == [foreign]
        root.handlers[:] = []
        configure("info", fmt="json")
        configure("info", fmt="json")  # again: its own handler replaced, not doubled
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
