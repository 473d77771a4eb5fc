"""Operator output of the long-running commands: one log line per event, and progress.

Every event is one line on standard error: `2026-11-29T21:00:00Z info run-finished outcome=ok
...` as text, or one JSON object per line with `--log-format json` (for journald, Loki and
friends). On a terminal, long runs also show a progress bar; elsewhere the same steps are plain
log lines. Secrets never reach a log: callers pass figures and names, never credentials.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, Literal

import click

LOGGER_NAME = "provisioner"
LogFormat = Literal["text", "json"]
LOG_FORMATS = ("text", "json")

log = logging.getLogger(LOGGER_NAME)


def _stamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """`TIME LEVEL EVENT key=value ... message`, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or record.name
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts = [_stamp(record.created), record.levelname.lower(), event]
        parts.extend(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
        message = record.getMessage()
        if message and message != event:
            parts.append(message)
        line = " ".join(parts)
        if record.exc_info:
            # Kept on one line: a traceback split over lines is several events to a collector.
            line += " exception=" + json.dumps(self.formatException(record.exc_info))
        return line.replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _stamp(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
            "message": record.getMessage(),
        }
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        for key, value in fields.items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str, sort_keys=False)


def configure(
    fmt: LogFormat = "text", *, level: int = logging.INFO, stream: IO[str] | None = None
) -> None:
    """Send the `provisioner` logger to standard error (or `stream`) in `fmt`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def event(name: str, message: str = "", *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: `name` is a stable identifier (`run-finished`), `fields` its figures."""
    log.log(level, message or name, extra={"event": name, "fields": fields})


def warn(name: str, message: str = "", **fields: Any) -> None:
    event(name, message, level=logging.WARNING, **fields)


def error(name: str, message: str = "", **fields: Any) -> None:
    event(name, message, level=logging.ERROR, **fields)


class Progress:
    """Steps of a long run: a bar on a terminal, a log line per step elsewhere."""

    def __init__(self, label: str, total: int, *, bar: bool) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._bar: Any = None
        if bar and total > 0:
            self._bar = click.progressbar(
                length=total, label=label, file=sys.stderr, show_pos=True, item_show_func=str
            )
            self._bar.__enter__()

    def step(self, what: str, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n, what)
        else:
            event("progress", what, step=self.done, of=self.total, task=self.label)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def wants_bar(fmt: LogFormat, stream: IO[str] | None = None) -> bool:
    """A bar only for a person at a terminal; JSON logs and pipes get plain lines."""
    stream = stream or sys.stderr
    return fmt == "text" and hasattr(stream, "isatty") and stream.isatty()


@contextmanager
def progress(label: str, total: int, *, bar: bool) -> Iterator[Progress]:
    p = Progress(label, total, bar=bar)
    try:
        yield p
    finally:
        p.close()
