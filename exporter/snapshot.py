"""Per-connection snapshots, rendered when a poll lands, and the scrape body built from them."""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from exporter.metrics import (
    CONNECTION_METRICS,
    DATABASE_METRICS,
    EXPORTER_METRICS,
    IDENTITY_LABELS,
    ConnectionView,
    DatabaseView,
    ExporterView,
)
from exporter.models import Connection
from exporter.render import Format, label_block, sample_lines

log = logging.getLogger(__name__)

# Level 1 keeps compression cheap; exposition text is so repetitive that it still shrinks ~10x.
GZIP_LEVEL = 1


def _utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows ``"\\ud800"``) becomes ``?``."""
    return text.encode("utf-8", "replace")


class ConnectionState:
    """What the exporter knows of one connection, and its series rendered as bytes."""

    def __init__(self, connection_id: str) -> None:
        self.id = connection_id
        self.identity = label_block(IDENTITY_LABELS["connection"], (connection_id,))
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
        self.status_since: dict[str, tuple[str | None, float]] = {}
        self.last_errors: dict[str, str] = {}
        self.stale_at: float | None = None
        self.connection_chunks: tuple[bytes, ...] = ()
        self.database_chunks: tuple[bytes, ...] | None = None
        self._render_connection()

    def record_success(self, data: Connection, now: float, duration: float,
                       retries: int) -> None:
        """Replace the snapshot whole with a good answer."""
        self._count_poll(duration, retries)
        self.up = True
        self.not_before = None
        self.last_success = now
        self.stale_at = None
        self.data = data
        self._track_statuses(data, now)
        self._log_errors(data)
        self._render_connection()
        self._render_databases(now)

    def record_failure(self, reason: str, now: float, duration: float, retries: int,
                       stale_after: float) -> None:
        """Mark the connection down; its database series stay until they are stale."""
        self._count_poll(duration, retries)
        self.up = False
        self.failures[reason] += 1
        self.last_failure = now
        self.last_failure_reason = reason
        if self.database_chunks is not None and self.last_success is not None:
            self.stale_at = self.last_success + stale_after
        self._render_connection()

    def expire(self, now: float) -> bool:
        """Drop database series once stale; True if anything was dropped."""
        if self.stale_at is None or now < self.stale_at:
            return False
        self.database_chunks = None
        self.stale_at = None
        log.info("connection data is stale; dropping its database series",
                 extra={"connection_id": self.id})
        return True

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

    def _render_connection(self) -> None:
        view = ConnectionView(
            up=self.up, data=self.data, polls=self.polls, retries=self.retries,
            failures=self.failures,
            last_success=self.last_success, last_failure=self.last_failure,
            poll_duration=self.poll_duration,
        )
        self.connection_chunks = tuple(
            _utf8(sample_lines(spec, self.identity, view)) for spec in CONNECTION_METRICS
        )

    def _render_databases(self, now: float) -> None:
        assert self.data is not None
        parts: list[list[str]] = [[] for _ in DATABASE_METRICS]
        names = IDENTITY_LABELS["database"]
        for db in self.data.databases:
            identity = label_block(names, (self.id, db.id, db.name))
            view = DatabaseView(db=db, status_since=self.status_since[db.id][1], now=now)
            for part, spec in zip(parts, DATABASE_METRICS, strict=True):
                part.append(sample_lines(spec, identity, view))
        self.database_chunks = tuple(_utf8("".join(part)) for part in parts)


class Store:
    """Every connection's state, and the scrape body cached until something changes."""

    def __init__(self, connection_ids: Iterable[str], stale_after: float) -> None:
        self.stale_after = stale_after
        self.exporter = ExporterView()
        self.states: dict[str, ConnectionState] = {}
        self._generation = 0
        self._bodies: dict[bool, tuple[int, bytes]] = {}
        self._gzip: dict[bool, tuple[int, bytes, zlib._Compress]] = {}
        self.set_connections(connection_ids)

    def set_connections(self, connection_ids: Iterable[str]) -> None:
        """Keep the states of connections still listed, add new ones, drop the rest."""
        self.states = {cid: self.states.get(cid) or ConnectionState(cid)
                       for cid in connection_ids}
        self.set_exporter(replace(self.exporter, connections=len(self.states)))

    def set_exporter(self, view: ExporterView) -> None:
        """Replace what the exporter-level metrics say."""
        self.exporter = view
        self._changed()

    @property
    def ready(self) -> bool:
        """Whether every connection has been polled at least once."""
        return all(state.polled for state in self.states.values())

    def success(self, connection_id: str, data: Connection, duration: float,
                retries: int = 0) -> None:
        """Record a good answer for a connection."""
        if state := self.states.get(connection_id):
            state.record_success(data, time.time(), duration, retries)
            self._changed()

    def failure(self, connection_id: str, reason: str, duration: float,
                retries: int = 0) -> None:
        """Record a failed poll of a connection."""
        if state := self.states.get(connection_id):
            state.record_failure(reason, time.time(), duration, retries, self.stale_after)
            self._changed()

    def body(self, fmt: Format) -> bytes:
        """The exposition of every connection, rebuilt only after a change."""
        self._expire(time.time())
        cached = self._bodies.get(fmt.openmetrics)
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        body = self._assemble(fmt)
        self._bodies[fmt.openmetrics] = (self._generation, body)
        return body

    def gzip_prefix(self, fmt: Format) -> tuple[bytes, zlib._Compress]:
        """The body gzipped and flushed, with the compressor so a caller can append a tail.

        The compressor is to be copied, never used directly, so the cached state stays whole.
        """
        body = self.body(fmt)
        cached = self._gzip.get(fmt.openmetrics)
        if cached is not None and cached[0] == self._generation:
            return cached[1], cached[2]
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        prefix = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._gzip[fmt.openmetrics] = (self._generation, prefix, compressor)
        return prefix, compressor

    def _changed(self) -> None:
        self._generation += 1

    def _expire(self, now: float) -> None:
        expired = [state for state in self.states.values() if state.expire(now)]
        if expired:
            self._changed()

    def _assemble(self, fmt: Format) -> bytes:
        states = list(self.states.values())
        out: list[bytes] = []
        exporter = self.exporter
        for exporter_spec in EXPORTER_METRICS:
            out.append(fmt.header(exporter_spec).encode())
            out.append(sample_lines(exporter_spec, "", exporter).encode())
        for index, connection_spec in enumerate(CONNECTION_METRICS):
            out.append(fmt.header(connection_spec).encode())
            out.extend(state.connection_chunks[index] for state in states)
        for index, database_spec in enumerate(DATABASE_METRICS):
            out.append(fmt.header(database_spec).encode())
            out.extend(state.database_chunks[index] for state in states
                       if state.database_chunks is not None)
        return b"".join(out)
