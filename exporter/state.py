"""What the exporter knows of each connection: polls, failures, staleness, status starts.

Bookkeeping only; the bytes rendered from it live in store.py.
"""

from __future__ import annotations

import logging
from collections import Counter

from exporter.models import Connection
from exporter.spec import ConnectionView

log = logging.getLogger(__name__)


class ConnectionState:
    """One connection's poll history and its last good answer."""

    def __init__(self, connection_id: str) -> None:
        self.id = connection_id
        self.polled = False
        self.up = False
        self.polls = 0
        self.retries = 0
        self.not_before: float | None = None  # no request before this (Retry-After)
        self.failures: Counter[str] = Counter()
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_failure_reason: str | None = None
        self.poll_duration: float | None = None
        self.data: Connection | None = None
        self.answer_digest: bytes | None = None  # of the answer ``data`` was parsed from
        self.status_since: dict[str, tuple[str | None, float]] = {}
        self.last_errors: dict[str, str] = {}
        self.stale_at: float | None = None

    def view(self) -> ConnectionView:
        """What the connection families read."""
        return ConnectionView(
            up=self.up, data=self.data, polls=self.polls, retries=self.retries,
            failures=self.failures, last_success=self.last_success,
            last_failure=self.last_failure, poll_duration=self.poll_duration,
        )

    def record_success(self, data: Connection, now: float, duration: float,
                       retries: int) -> None:
        """Take a good answer as the connection's whole snapshot."""
        self._count_poll(duration, retries)
        self._succeeded(now)
        self.data = data
        self._track_statuses(data, now)
        self._log_errors(data)

    def record_unchanged(self, now: float, duration: float, retries: int) -> None:
        """A good answer byte-identical to the last."""
        assert self.data is not None
        self._count_poll(duration, retries)
        self._succeeded(now)

    def record_failure(self, reason: str, now: float, duration: float, retries: int, *,
                       stale_after: float | None) -> None:
        """Mark the connection down; its database series (None when none are served) stay
        until ``stale_after`` has passed since the last success."""
        self._count_poll(duration, retries)
        self.up = False
        self.failures[reason] += 1
        self.last_failure = now
        self.last_failure_reason = reason
        if stale_after is not None and self.last_success is not None:
            self.stale_at = self.last_success + stale_after

    def expire(self, now: float) -> bool:
        """Whether the data just went stale (then its database series must go)."""
        if self.stale_at is None or now < self.stale_at:
            return False
        self.stale_at = None
        log.info("connection data is stale; dropping its database series",
                 extra={"connection_id": self.id})
        return True

    def _succeeded(self, now: float) -> None:
        self.up = True
        self.not_before = None
        self.last_success = now
        self.stale_at = None

    def _count_poll(self, duration: float, retries: int) -> None:
        self.polled = True
        self.polls += 1
        self.retries += retries
        self.poll_duration = duration

    def _track_statuses(self, data: Connection, now: float) -> None:
        """Remember when each database's status began; forget databases that left."""
        since: dict[str, tuple[str | None, float]] = {}
        for db in data.databases:
            previous = self.status_since.get(db.id)
            if previous is None:
                since[db.id] = (db.status, db.updated_at if db.updated_at is not None else now)
            elif previous[0] != db.status:
                since[db.id] = (db.status, now)
            else:
                since[db.id] = previous
        self.status_since = since

    def _log_errors(self, data: Connection) -> None:
        """Send a new lastError text to the debug log; it never becomes a label."""
        errors = {db.id: db.last_error for db in data.databases if db.last_error is not None}
        for database_id, text in errors.items():
            if self.last_errors.get(database_id) != text:
                log.debug("database reports an error", extra={
                    "connection_id": self.id, "database_id": database_id, "error": text})
        self.last_errors = errors
