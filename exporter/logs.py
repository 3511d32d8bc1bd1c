"""Structured logging in logfmt or JSON, with every known secret redacted."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
REDACTED = "<redacted>"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class Secrets:
    """The set of strings that must never reach a log line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, value: str) -> None:
        """Remember a secret; short strings are ignored so redaction cannot shred logs."""
        if len(value) >= 4:
            with self._lock:
                self._values = self._values | {value}

    def redact(self, text: str) -> str:
        """Return text with every known secret replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


SECRETS = Secrets()


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn"}.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_") and value is not None:
            fields[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["err"] = f"{type(exc).__name__}: {exc}"
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=info logger=… msg="…" key=value``, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())
        return SECRETS.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return SECRETS.redact(json.dumps(_fields(record), default=str, ensure_ascii=False))


def setup(level: str, fmt: str) -> None:
    """Send all logs to stderr in the chosen format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # httpx logs every request at INFO; our own poll log says what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class Throttle:
    """Logs each message at most once per ``interval`` seconds, counting the ones it held back.

    For errors a client can cause at will: one line a second says it is happening without
    letting the client fill the disk.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, logger: logging.Logger, msg: str, *, level: int = logging.ERROR,
            exc_info: bool | BaseException = False, **fields: object) -> None:
        """Log ``msg`` with ``fields`` unless it was logged less than ``interval`` ago."""
        now = time.monotonic()
        last = self._last.get(msg)
        if last is not None and now - last < self.interval:
            self._held[msg] = self._held.get(msg, 0) + 1
            return
        self._last[msg] = now
        held = self._held.pop(msg, 0)
        if held:
            fields["held_back"] = held
        logger.log(level, msg, extra=fields, exc_info=exc_info)
