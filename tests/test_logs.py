"""Log lines: logfmt and JSON, structured fields, secrets redacted."""

from __future__ import annotations

import json
import logging

import pytest

from exporter import logs


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("exporter.test", logging.WARNING, __file__, 1, message, None,
                               None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_logfmt_quotes_what_needs_quoting() -> None:
    """logfmt keeps plain values bare and quotes values with spaces, quotes or newlines."""
    line = logs.LogfmtFormatter().format(_record("poll failed", reason="timeout",
                                                 detail='a "b"\nc'))
    assert line.startswith("ts=")
    assert " level=warn logger=exporter.test " in line
    assert 'msg="poll failed"' in line
    assert "reason=timeout" in line
    assert 'detail="a \\"b\\"\\nc"' in line
    assert "\n" not in line


def test_json_lines_parse_and_carry_the_fields() -> None:
    """--log.format=json writes one JSON object per line with the extra fields."""
    record = _record("listening", port=10510)
    parsed = json.loads(logs.JsonFormatter().format(record))
    assert parsed["msg"] == "listening"
    assert parsed["port"] == 10510
    assert parsed["level"] == "warn"


def test_known_secrets_are_redacted_in_both_formats() -> None:
    """A registered token is replaced wherever it appears: message, fields or error text."""
    secret = "tok-unit-test-secret-123"  # noqa: S105 - a made-up token to find in the output
    logs.SECRETS.add(secret)
    record = _record(f"token {secret} rejected", header=f"Bearer {secret}")
    for formatter in (logs.LogfmtFormatter(), logs.JsonFormatter()):
        line = formatter.format(record)
        assert secret not in line
        assert logs.REDACTED in line


def test_absent_fields_are_left_out() -> None:
    """A field whose value is None (no Retry-After, say) does not appear in the line."""
    line = logs.LogfmtFormatter().format(_record("poll failed", reason="timeout",
                                                 retry_after_seconds=None))
    assert "reason=timeout" in line
    assert "retry_after_seconds" not in line
    assert "None" not in logs.JsonFormatter().format(_record("x", retry_after_seconds=None))


def test_throttle_logs_once_per_interval_and_counts_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A message repeated 1,000 times within the interval is logged once; the next line after
    the interval says how many were held back."""
    clock = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    seen: list[logging.LogRecord] = []
    logger = logging.getLogger("exporter.throttle-test")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign] # collect records, print none
    logger.addHandler(handler)
    throttle = logs.Throttle(1.0)
    for _ in range(1000):
        throttle.log(logger, "cannot accept", level=logging.WARNING, err="EMFILE")
    assert len(seen) == 1
    clock[0] += 1.5
    throttle.log(logger, "cannot accept", level=logging.WARNING, err="EMFILE")
    throttle.log(logger, "another message")
    assert len(seen) == 3
    assert seen[1].held_back == 999  # type: ignore[attr-defined] # set through extra=
    assert not hasattr(seen[2], "held_back")
