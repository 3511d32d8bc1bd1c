"""Log lines: logfmt and JSON, structured fields, secrets redacted."""

from __future__ import annotations

import json
import logging

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
