"""Per-connection snapshots rendered when a poll lands, and the scrape body built from them.

The output is kept in three sections, each family grouped as the text formats require:

- stable: the exporter's own families, the connection families that change only with the
  API's answer, and every database family. Each family's lines are stored in blocks of
  ``BLOCK`` connections; a block is re-joined, re-compressed and re-checksummed only when
  a connection in it renders different bytes. A scrape concatenates stored blocks.
- every-poll: timestamps and counters that move at each poll (a few short lines per
  connection), rendered at scrape time when they changed.
- tail: prometheus_client's process metrics, produced by the HTTP layer per scrape.

A gzip answer is one valid gzip stream: the stable section's blocks were each compressed as
raw deflate ending in a sync flush, so their bytes concatenate; the every-poll section and
the tail are compressed fresh and close the stream; the CRC-32 of the whole is the cached CRC
of the stable section continued over the fresh bytes.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from exporter.metrics import (
    CONNECTION_METRICS,
    DATABASE_METRICS,
    EXPORTER_METRICS,
    IDENTITY_LABELS,
    ConnectionView,
    DatabaseView,
    ExporterView,
    MetricSpec,
)
from exporter.models import Connection
from exporter.render import Format, label_block, sample_lines

log = logging.getLogger(__name__)

# Level 1 keeps compression cheap; exposition text is so repetitive that it still shrinks ~10x.
GZIP_LEVEL = 1
# Connections per block: small enough that one poll re-compresses little, large enough that
# each block compresses well and a scrape joins few pieces.
BLOCK = 8
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

STABLE_CONNECTION = tuple(s for s in CONNECTION_METRICS if not s.every_poll)
EVERY_POLL = tuple(s for s in CONNECTION_METRICS if s.every_poll)
# The families of the stable section that come from connections, in output order.
STABLE_FAMILIES: tuple[MetricSpec[Any], ...] = STABLE_CONNECTION + DATABASE_METRICS


ALL_DATABASE_FAMILIES = tuple(range(len(DATABASE_METRICS)))
CLOCK_FAMILIES = tuple(i for i, spec in enumerate(DATABASE_METRICS) if spec.follows_clock)
NO_DATABASES: dict[int, bytes] = dict.fromkeys(ALL_DATABASE_FAMILIES, b"")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows ``"\\ud800"``) becomes ``?``."""
    return text.encode("utf-8", "replace")


def _build(pieces: Sequence[bytes | memoryview]) -> _Block:
    """A block from its members' lines."""
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    plain = b"".join(pieces)
    return _Block(plain, tuple(ends), _deflate(plain))


def _deflate(data: bytes) -> bytes:
    """Raw deflate ending in a sync flush, so the result can be followed by more deflate."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


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
        self.answer_digest: bytes | None = None  # of the answer ``data`` was parsed from
        self.status_since: dict[str, tuple[str | None, float]] = {}
        self.last_errors: dict[str, str] = {}
        self.stale_at: float | None = None
        self.connection_chunks: tuple[bytes, ...] = ()
        self.every_poll_chunks: tuple[bytes, ...] = ()
        self.serving_databases = False  # whether its database series are in the output
        self._render_connection()

    def record_success(self, data: Connection, now: float, duration: float,
                       retries: int) -> dict[int, bytes]:
        """Replace the snapshot whole with a good answer; returns the database chunks.

        Database chunks are not kept here: the store holds them inside its blocks.
        """
        self._count_poll(duration, retries)
        self.up = True
        self.not_before = None
        self.last_success = now
        self.stale_at = None
        self.data = data
        self._track_statuses(data, now)
        self._log_errors(data)
        self._render_connection()
        return self.render_databases(now)

    def record_unchanged(self, now: float, duration: float,
                         retries: int) -> dict[int, bytes] | None:
        """A good answer byte-identical to the last: only time-dependent series move.

        Returns the database chunks that may have changed, or None when none can have.
        """
        assert self.data is not None
        self._count_poll(duration, retries)
        self.up = True
        self.not_before = None
        self.last_success = now
        self.stale_at = None
        self._render_connection()
        if not self.serving_databases:
            return self.render_databases(now)  # back after its series went stale
        if any(db.pause_schedule is not None for db in self.data.databases):
            return self.render_databases(now, CLOCK_FAMILIES)  # pause windows follow the clock
        return None

    def record_failure(self, reason: str, now: float, duration: float, retries: int,
                       stale_after: float) -> None:
        """Mark the connection down; its database series stay until they are stale."""
        self._count_poll(duration, retries)
        self.up = False
        self.failures[reason] += 1
        self.last_failure = now
        self.last_failure_reason = reason
        if self.serving_databases and self.last_success is not None:
            self.stale_at = self.last_success + stale_after
        self._render_connection()

    def expire(self, now: float) -> dict[int, bytes] | None:
        """Empty database chunks once the data is stale, else None."""
        if self.stale_at is None or now < self.stale_at:
            return None
        self.serving_databases = False
        self.stale_at = None
        log.info("connection data is stale; dropping its database series",
                 extra={"connection_id": self.id})
        return NO_DATABASES

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
            failures=self.failures, last_success=self.last_success,
            last_failure=self.last_failure, poll_duration=self.poll_duration,
        )
        self.connection_chunks = tuple(
            _utf8(sample_lines(spec, self.identity, view)) for spec in STABLE_CONNECTION)
        self.every_poll_chunks = tuple(
            _utf8(sample_lines(spec, self.identity, view)) for spec in EVERY_POLL)

    def render_databases(self, now: float,
                         families: Sequence[int] = ALL_DATABASE_FAMILIES) -> dict[int, bytes]:
        """Lines of the given database families (indexes into DATABASE_METRICS) for this
        connection's latest good answer."""
        assert self.data is not None
        self.serving_databases = True
        specs = [DATABASE_METRICS[family] for family in families]
        parts: list[list[str]] = [[] for _ in families]
        names = IDENTITY_LABELS["database"]
        for db in self.data.databases:
            identity = label_block(names, (self.id, db.id, db.name))
            view = DatabaseView(db=db, status_since=self.status_since[db.id][1], now=now)
            for part, spec in zip(parts, specs, strict=True):
                part.append(sample_lines(spec, identity, view))
        return {family: _utf8("".join(part)) for family, part in zip(families, parts,
                                                                      strict=True)}


@dataclass(slots=True)
class _Block:
    """One family's lines for up to BLOCK connections, with their deflate and CRC.

    ``ends[i]`` is where member i's lines end, so one member's lines can be replaced
    without keeping a second copy of everyone's.
    """

    plain: bytes = b""
    ends: tuple[int, ...] = ()
    deflated: bytes = b""

    def member(self, index: int) -> memoryview:
        """Member ``index``'s lines, without copying them."""
        start = self.ends[index - 1] if index else 0
        return memoryview(self.plain)[start:self.ends[index]]


@dataclass(frozen=True, slots=True)
class _Section:
    """The stable section, assembled for one format and one generation."""

    generation: int
    parts: list[bytes]
    length: int
    deflated: bytes | None = None
    crc: int = 0


class Store:
    """Every connection's state, and the scrape output built from stored bytes."""

    def __init__(self, connection_ids: Iterable[str], stale_after: float) -> None:
        self.stale_after = stale_after
        self.exporter = ExporterView()
        self.states: dict[str, ConnectionState] = {}
        self._order: list[ConnectionState] = []
        self._position: dict[str, int] = {}
        self._blocks: list[list[_Block]] = []  # [family][block]
        self._stable_generation = 0
        self._every_poll_generation = 0
        self._sections: dict[bool, _Section] = {}
        self._every_poll: dict[bool, tuple[int, bytes]] = {}
        self._headers: dict[bool, list[tuple[bytes, bytes]]] = {}
        self.set_connections(connection_ids)

    # Recording what the poller learned.

    def set_connections(self, connection_ids: Iterable[str]) -> None:
        """Keep the states (and series) of connections still listed, add new ones, drop
        the rest, and lay the blocks out anew."""
        kept = {state.id: self.chunks(state.id) for state in self._order}
        self.states = {cid: self.states.get(cid) or ConnectionState(cid)
                       for cid in connection_ids}
        self._order = list(self.states.values())
        self._position = {state.id: index for index, state in enumerate(self._order)}
        count = (len(self._order) + BLOCK - 1) // BLOCK
        self._blocks = [[_Block() for _ in range(count)] for _ in STABLE_FAMILIES]
        for index in range(count):
            members = self._order[index * BLOCK:(index + 1) * BLOCK]
            rows = [kept.get(state.id) or state.connection_chunks + tuple(NO_DATABASES.values())
                    for state in members]
            for family in range(len(STABLE_FAMILIES)):
                self._blocks[family][index] = _build([row[family] for row in rows])
        self._every_poll_generation += 1
        self.set_exporter(replace(self.exporter, connections=len(self.states)))

    def chunks(self, connection_id: str) -> tuple[bytes, ...]:
        """A connection's lines of each stable family, as stored (STABLE_FAMILIES order)."""
        position = self._position[connection_id]
        index, member = divmod(position, BLOCK)
        return tuple(bytes(family[index].member(member)) for family in self._blocks)

    def set_exporter(self, view: ExporterView) -> None:
        """Replace what the exporter-level metrics say."""
        self.exporter = view
        self._stable_generation += 1

    @property
    def ready(self) -> bool:
        """Whether every connection has been polled at least once."""
        return all(state.polled for state in self.states.values())

    def success(self, connection_id: str, data: Connection, duration: float,
                retries: int = 0) -> None:
        """Record a good answer for a connection."""
        self._update(connection_id, lambda s: s.record_success(data, time.time(), duration,
                                                               retries))

    def unchanged(self, connection_id: str, duration: float, retries: int = 0) -> None:
        """Record a good answer identical to the connection's previous one."""
        self._update(connection_id, lambda s: s.record_unchanged(time.time(), duration, retries))

    def failure(self, connection_id: str, reason: str, duration: float,
                retries: int = 0) -> None:
        """Record a failed poll of a connection."""
        self._update(connection_id, lambda s: s.record_failure(
            reason, time.time(), duration, retries, self.stale_after))

    def _update(self, connection_id: str,
                change: Callable[[ConnectionState], dict[int, bytes] | None]) -> None:
        state = self.states.get(connection_id)
        if state is None:
            return  # polled under a config that has since been reloaded away
        before = state.connection_chunks
        databases = change(state)
        self._every_poll_generation += 1
        self._store(state, before, databases)

    def _store(self, state: ConnectionState, before: tuple[bytes, ...],
               databases: dict[int, bytes] | None) -> None:
        """Rebuild the blocks of the families whose bytes this connection changed."""
        index, member = divmod(self._position[state.id], BLOCK)
        new = list(enumerate(state.connection_chunks))
        if databases is not None:
            offset = len(STABLE_CONNECTION)
            new.extend((offset + family, chunk) for family, chunk in databases.items())
        changed = False
        for family, chunk in new:
            if family < len(STABLE_CONNECTION) and before[family] is chunk:
                continue
            block = self._blocks[family][index]
            if block.member(member) == chunk:
                continue
            pieces: list[bytes | memoryview] = [
                block.member(m) for m in range(len(block.ends))]
            pieces[member] = chunk
            self._blocks[family][index] = _build(pieces)
            changed = True
        if changed:
            self._stable_generation += 1

    def _expire(self, now: float) -> None:
        for state in self._order:
            if state.stale_at is not None and now >= state.stale_at:
                self._store(state, state.connection_chunks, state.expire(now))

    # Building the output.

    def parts(self, fmt: Format) -> list[bytes]:
        """The exposition, less the tail, as a list of byte strings to send in order."""
        return [*self._stable(fmt).parts, self._every_poll_section(fmt)]

    def body(self, fmt: Format) -> bytes:
        """The exposition, less the tail, as one byte string."""
        return b"".join(self.parts(fmt))

    def gzip(self, fmt: Format, tail: bytes) -> list[bytes]:
        """One gzip stream of the exposition followed by ``tail``, as parts to send."""
        section = self._stable(fmt, compressed=True)
        assert section.deflated is not None
        fresh = self._every_poll_section(fmt) + tail
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        closing = compressor.compress(fresh) + compressor.flush(zlib.Z_FINISH)
        crc = zlib.crc32(fresh, section.crc)
        trailer = struct.pack("<II", crc, (section.length + len(fresh)) & 0xFFFFFFFF)
        return [GZIP_HEADER, section.deflated, closing + trailer]

    def _stable(self, fmt: Format, compressed: bool = False) -> _Section:
        """The stable section for ``fmt``, reassembled only after a change."""
        self._expire(time.time())
        section = self._sections.get(fmt.openmetrics)
        if section is None or section.generation != self._stable_generation:
            section = self._assemble(fmt)
        if compressed and section.deflated is None:
            section = self._compress(fmt, section)
        self._sections[fmt.openmetrics] = section
        return section

    def _assemble(self, fmt: Format) -> _Section:
        exporter = [fmt.header(spec) + sample_lines(spec, "", self.exporter)
                    for spec in EXPORTER_METRICS]
        parts = [_utf8("".join(exporter))]
        for (header, _), blocks in zip(self._family_headers(fmt), self._blocks, strict=True):
            parts.append(header)
            parts.extend(block.plain for block in blocks if block.plain)
        return _Section(self._stable_generation, parts, sum(len(p) for p in parts))

    def _compress(self, fmt: Format, section: _Section) -> _Section:
        """Add the deflate and CRC of a section, from the blocks' stored ones."""
        crc = zlib.crc32(section.parts[0])
        pieces = [_deflate(section.parts[0])]
        for (header, deflated), blocks in zip(self._family_headers(fmt), self._blocks,
                                              strict=True):
            crc = zlib.crc32(header, crc)
            pieces.append(deflated)
            for block in blocks:
                if block.plain:
                    crc = zlib.crc32(block.plain, crc)
                    pieces.append(block.deflated)
        return replace(section, deflated=b"".join(pieces), crc=crc)

    def _family_headers(self, fmt: Format) -> list[tuple[bytes, bytes]]:
        """Each stable family's HELP/TYPE lines for ``fmt``, plain and deflated."""
        headers = self._headers.get(fmt.openmetrics)
        if headers is None:
            plain = [_utf8(fmt.header(spec)) for spec in STABLE_FAMILIES]
            headers = [(text, _deflate(text)) for text in plain]
            self._headers[fmt.openmetrics] = headers
        return headers

    def _every_poll_section(self, fmt: Format) -> bytes:
        cached = self._every_poll.get(fmt.openmetrics)
        if cached is None or cached[0] != self._every_poll_generation:
            out = []
            for index, spec in enumerate(EVERY_POLL):
                out.append(_utf8(fmt.header(spec)))
                out.extend(state.every_poll_chunks[index] for state in self._order)
            cached = (self._every_poll_generation, b"".join(out))
            self._every_poll[fmt.openmetrics] = cached
        return cached[1]

