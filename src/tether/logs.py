"""Log output of tether's processes: text for people, or one JSON object per line for machines.

``TETHER_LOG_FORMAT=json`` turns every log record into a line with ``ts`` (UTC, ISO 8601),
``level``, ``logger`` and ``message``, plus the fields an operator filters on when the record
knows them: ``worker`` (the process's ``TETHER_WORKER_ID``, on every line), ``partition``,
``workflow``, ``code``, ``reason``, ``topic``, ``offset`` (given by the code that logs, as
``extra=``), and ``exc`` with the traceback of an exception. A message is never split over
lines, so a log shipper needs no multi-line rules.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

FIELDS: Final = ("worker", "partition", "workflow", "code", "reason", "topic", "offset")
"""Record attributes copied into a JSON line when present (set with ``extra=``)."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            doc["worker"] = self.worker
        attrs = record.__dict__
        for name in FIELDS:
            value = attrs.get(name)
            if value is not None:
                doc[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def formatter(
    fmt: LogFormat, *, worker: str | None = None, text: str = TEXT_FORMAT
) -> logging.Formatter:
    """The formatter for ``fmt`` (``text`` is the pattern of the text format)."""
    if fmt == "json":
        return JsonFormatter(worker)
    return logging.Formatter(text)


def configure(
    level: str | int = logging.INFO,
    *,
    fmt: LogFormat = "text",
    worker: str | None = None,
    text: str = TEXT_FORMAT,
) -> None:
    """Send the root logger's records to stderr in ``fmt``, as ``logging.basicConfig`` would:
    nothing changes if someone else has configured the root logger already (a test runner's
    capture, an embedding application). Called again, it replaces its own handler."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "tether", False)]
    if len(ours) != len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.tether = True  # type: ignore[attr-defined]  # marks the handler this function added
    handler.setFormatter(formatter(fmt, worker=worker, text=text))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def dict_config(level: str, *, fmt: LogFormat, worker: str | None = None) -> dict[str, Any]:
    """The same set-up as ``configure``, as a ``logging.config.dictConfig`` mapping (what faust's
    worker applies when it starts, replacing whatever was configured before)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "tether": (
                {"()": JsonFormatter, "worker": worker}
                if fmt == "json"
                else {"format": TEXT_FORMAT}
            )
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "tether"},
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
