"""Per-connection snapshots rendered when a poll lands, and the scrape body built from them.

The output is kept in three sections, each family grouped as the text formats require:

- stable: the exporter's own families, the connection families that change only with the
  API's answer, and every database family. Each connection keeps its lines of each family as
  bytes, with their raw deflate; a poll re-renders only the databases whose record (or
  status start) changed and re-compresses only the families whose bytes changed. A scrape
  concatenates stored bytes.
- every-poll: timestamps and counters that move at each poll (a few short lines per
  connection), joined at scrape time when they changed.
- tail: prometheus_client's process metrics, produced by the HTTP layer per scrape.

A gzip answer is one valid gzip stream (see deflate.py): each stored chunk was compressed on
its own, so the chunks concatenate; the every-poll section and the tail are compressed fresh
and close the stream. Each family keeps its parts, joined deflate and CRC until one of its
chunks changes. Reassembling the changed families (chiefly a CRC-32 pass over their text,
tens of ms at 10,000 databases) runs in a worker thread while the exporter runs, so neither a
scrape nor a poll waits for it; scrapes meanwhile send the last section assembled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from exporter import deflate
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
from exporter.models import Connection, Database
from exporter.priority import Gate
from exporter.render import Format, label_block, sample_lines

log = logging.getLogger(__name__)

STABLE_CONNECTION = tuple(s for s in CONNECTION_METRICS if not s.every_poll)
EVERY_POLL = tuple(s for s in CONNECTION_METRICS if s.every_poll)
# The families of the stable section that come from connections, in output order.
STABLE_FAMILIES: tuple[MetricSpec[Any], ...] = STABLE_CONNECTION + DATABASE_METRICS
FIRST_DATABASE_FAMILY = len(STABLE_CONNECTION)
ALL_DATABASE_FAMILIES = tuple(range(len(DATABASE_METRICS)))
CLOCK_FAMILIES = tuple(i for i, spec in enumerate(DATABASE_METRICS) if spec.follows_clock)
CRC_BATCH = 64 * 1024  # bytes


def _utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows ``"\\ud800"``) becomes ``?``."""
    return text.encode("utf-8", "replace")


_RECORD_FIELDS = tuple(f.name for f in fields(Database) if f.name not in ("id", "name"))


def _changed_fields(previous: _Seen, db: Database, since: float) -> frozenset[str]:
    """The fields (and "status_since") in which a database differs from how it was rendered."""
    if previous.db == db:
        return frozenset() if previous.since == since else frozenset(("status_since",))
    changed = {name for name in _RECORD_FIELDS
               if getattr(previous.db, name) != getattr(db, name)}
    if previous.since != since:
        changed.add("status_since")
    return frozenset(changed)


@dataclass(frozen=True, slots=True)
class _Seen:
    """A database as last rendered: its record, when its status began, its identity labels."""

    db: Database
    since: float
    identity: str


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
        self.serving_databases = False  # whether its database series are in the output
        # Lines of each stable family (STABLE_FAMILIES order) and their raw deflate.
        self.stable: list[bytes] = [b""] * len(STABLE_FAMILIES)
        self.deflated: list[bytes] = [b""] * len(STABLE_FAMILIES)
        self.every_poll_chunks: tuple[bytes, ...] = ()
        self.changed: set[int] = set()  # stable families whose chunk changed; the store clears it
        self._seen: dict[str, _Seen] = {}
        self._order: list[str] = []  # database IDs in the order their lines are stored
        # Where each database's lines end in each database family's chunk; a compact array
        # since there are (databases x families) of them.
        self._ends: list[array[int]] = [array("I") for _ in DATABASE_METRICS]
        self._render_connection()

    def record_success(self, data: Connection, now: float, duration: float,
                       retries: int) -> None:
        """Replace the snapshot whole with a good answer."""
        self._count_poll(duration, retries)
        self._succeeded(now)
        self.data = data
        self._track_statuses(data, now)
        self._log_errors(data)
        self._render_connection()
        self._render_databases(now, ALL_DATABASE_FAMILIES)

    def record_unchanged(self, now: float, duration: float, retries: int) -> None:
        """A good answer byte-identical to the last: only time-dependent series move."""
        assert self.data is not None
        self._count_poll(duration, retries)
        self._succeeded(now)
        self._render_connection()
        if not self.serving_databases:
            self._render_databases(now, ALL_DATABASE_FAMILIES)  # back after going stale
        elif any(db.pause_schedule is not None for db in self.data.databases):
            self._render_databases(now, CLOCK_FAMILIES)  # pause windows follow the clock

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

    def expire(self, now: float) -> bool:
        """Drop the database series once the data is stale; True if it did."""
        if self.stale_at is None or now < self.stale_at:
            return False
        self.stale_at = None
        self.serving_databases = False
        self._seen, self._order = {}, []
        self._ends = [array("I") for _ in DATABASE_METRICS]
        for family in ALL_DATABASE_FAMILIES:
            self._set(FIRST_DATABASE_FAMILY + family, b"")
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

    def _set(self, index: int, chunk: bytes) -> None:
        """Store a stable family's new lines, compressing them only if they differ."""
        if chunk != self.stable[index]:
            self.stable[index] = chunk
            self.deflated[index] = deflate.piece(chunk)
            self.changed.add(index)

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
        for index, spec in enumerate(STABLE_CONNECTION):
            self._set(index, _utf8(sample_lines(spec, self.identity, view)))
        self.every_poll_chunks = tuple(
            _utf8(sample_lines(spec, self.identity, view)) for spec in EVERY_POLL)

    def _render_databases(self, now: float, families: Sequence[int]) -> None:
        """Lines of the given database families; unchanged databases keep their stored lines.

        A database is re-rendered when its record or its status start changed, and for a
        family that follows the clock when it has a pause schedule.
        """
        assert self.data is not None
        position = {database_id: index for index, database_id in enumerate(self._order)}
        names = IDENTITY_LABELS["database"]
        seen: dict[str, _Seen] = {}
        # Per database: its stored position and what changed since (None: render it anew).
        rows: list[tuple[_Seen, int | None, frozenset[str] | None]] = []
        for db in self.data.databases:
            since = self.status_since[db.id][1]
            previous = self._seen.get(db.id)
            if previous is None or previous.db.name != db.name:
                identity = label_block(names, (self.id, db.id, db.name))
                seen[db.id] = current = _Seen(db, since, identity)
                rows.append((current, None, None))
                continue
            differences = _changed_fields(previous, db, since)
            seen[db.id] = previous if not differences else _Seen(db, since, previous.identity)
            rows.append((seen[db.id], position[db.id], differences))
        # When every database is where it was and none changed a field a family reads, that
        # family's stored chunk is already right: skip it without touching its lines.
        in_place = [stored for _, stored, _ in rows] == list(range(len(self._order)))
        changed_anywhere: set[str] = set().union(*(c for _, _, c in rows if c is not None))
        scheduled = any(entry.db.pause_schedule is not None for entry, _, _ in rows)
        for family in families:
            spec = DATABASE_METRICS[family]
            if (in_place and spec.reads and changed_anywhere.isdisjoint(spec.reads)
                    and not (spec.follows_clock and scheduled)):
                continue
            old, ends = self.stable[FIRST_DATABASE_FAMILY + family], self._ends[family]
            pieces, new_ends, total = [], array("I"), 0
            for entry, stored, changed in rows:
                if (stored is not None and changed is not None
                        and (not changed or (spec.reads and changed.isdisjoint(spec.reads)))
                        and not (spec.follows_clock and entry.db.pause_schedule is not None)):
                    piece = old[ends[stored - 1] if stored else 0:ends[stored]]
                else:
                    view = DatabaseView(db=entry.db, status_since=entry.since, now=now)
                    piece = _utf8(sample_lines(spec, entry.identity, view))
                total += len(piece)
                pieces.append(piece)
                new_ends.append(total)
            self._ends[family] = new_ends
            self._set(FIRST_DATABASE_FAMILY + family, b"".join(pieces))
        self._seen, self._order = seen, [db.id for db in self.data.databases]
        self.serving_databases = True


@dataclass(frozen=True, slots=True)
class _Family:
    """One stable family in one format: header and chunks, their joined deflate and CRC."""

    version: int
    parts: list[bytes]
    deflated: bytes
    crc: int
    length: int


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """What rebuilding one family reads, taken on the event loop for a worker thread."""

    version: int
    header: bytes
    chunks: list[bytes]
    pieces: list[bytes]


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything an assembly of the stable section needs, copied out of the live store."""

    openmetrics: bool
    generation: int
    exporter: bytes
    families: list[_Family | _Rebuild]


@dataclass(frozen=True, slots=True)
class Section:
    """The stable section for one format and one generation."""

    openmetrics: bool
    generation: int
    parts: list[bytes]
    deflated: list[bytes]
    crc: int
    length: int
    families: list[_Family]


def _crc32(parts: list[bytes]) -> int:
    """CRC-32 of the parts back to back, fed to zlib in batches of about CRC_BATCH bytes.

    zlib releases the GIL only for inputs over 5 KiB, and a connection's chunk of one family
    is often smaller; batches let the event loop run during the pass without joining a whole
    family into one large, short-lived buffer that would fragment the heap.
    """
    crc, batch, size = 0, [], 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= CRC_BATCH:
            crc = zlib.crc32(b"".join(batch), crc)
            batch, size = [], 0
    return zlib.crc32(b"".join(batch), crc)


def _rebuild(job: _Rebuild) -> _Family:
    """A family from its chunks, checksummed and its deflate pieces joined."""
    parts = [job.header, *(chunk for chunk in job.chunks if chunk)]
    return _Family(job.version, parts, b"".join([deflate.piece(job.header), *job.pieces]),
                   _crc32(parts), sum(len(part) for part in parts))


def _assemble(plan: _Plan) -> Section:
    """The stable section from a plan; touches nothing live, so it may run in a thread."""
    families = [f if isinstance(f, _Family) else _rebuild(f) for f in plan.families]
    parts, deflated = [plan.exporter], [deflate.piece(plan.exporter)]
    crc, length = zlib.crc32(plan.exporter), len(plan.exporter)
    for family in families:
        parts.extend(family.parts)
        deflated.append(family.deflated)
        crc = deflate.crc32_combine(crc, family.crc, family.length)
        length += family.length
    return Section(plan.openmetrics, plan.generation, parts, deflated, crc, length, families)


class Store:
    """Every connection's state, and the scrape output built from stored bytes.

    The stable section is reassembled after a change: by the scrape that finds it out of date
    or, once ``assemble_in_background`` runs, in a worker thread at most every ``period``
    seconds, while scrapes go on sending the last one assembled.
    """

    def __init__(self, connection_ids: Iterable[str], stale_after: float) -> None:
        self.stale_after = stale_after
        self.exporter = ExporterView()
        self.states: dict[str, ConnectionState] = {}
        self._stable_generation = 0
        self._every_poll_generation = 0
        self._formats: dict[bool, Format] = {}
        self._sections: dict[bool, Section] = {}
        self._family_versions = [0] * len(STABLE_FAMILIES)
        self._every_poll: dict[bool, tuple[int, bytes]] = {}
        self._closing: dict[bool, tuple[Section, bytes, bytes, bytes]] = {}
        self._background = False
        self._complete_generation = 0  # the generation at which every connection was polled
        self.set_connections(connection_ids)

    # Recording what the poller learned.

    def set_connections(self, connection_ids: Iterable[str]) -> None:
        """Keep the states (and series) of connections still listed, add new ones, drop
        the rest."""
        self.states = {cid: self.states.get(cid) or ConnectionState(cid)
                       for cid in connection_ids}
        self._family_versions = [v + 1 for v in self._family_versions]
        self._every_poll_generation += 1
        self.set_exporter(replace(self.exporter, connections=len(self.states)))

    def set_exporter(self, view: ExporterView) -> None:
        """Replace what the exporter-level metrics say."""
        self.exporter = view
        self._stable_generation += 1

    @property
    def ready(self) -> bool:
        """Whether every connection has been polled, and the output shows all of them."""
        if not all(state.polled for state in self.states.values()):
            return False
        return not self._background or all(
            section.generation >= self._complete_generation for section in self._sections.values())

    def success(self, connection_id: str, data: Connection, duration: float,
                retries: int = 0) -> None:
        """Record a good answer for a connection."""
        if state := self.states.get(connection_id):
            state.record_success(data, time.time(), duration, retries)
            self._recorded(state)

    def unchanged(self, connection_id: str, duration: float, retries: int = 0) -> None:
        """Record a good answer identical to the connection's previous one."""
        if state := self.states.get(connection_id):
            state.record_unchanged(time.time(), duration, retries)
            self._recorded(state)

    def failure(self, connection_id: str, reason: str, duration: float,
                retries: int = 0) -> None:
        """Record a failed poll of a connection."""
        if state := self.states.get(connection_id):
            state.record_failure(reason, time.time(), duration, retries, self.stale_after)
            self._recorded(state)

    def _recorded(self, state: ConnectionState) -> None:
        self._every_poll_generation += 1
        if state.changed:
            for family in state.changed:
                self._family_versions[family] += 1
            state.changed.clear()
            self._stable_generation += 1
        if state.polls == 1:
            self._complete_generation = self._stable_generation

    def _expire(self, now: float) -> None:
        for state in self.states.values():
            if state.stale_at is not None and state.expire(now):
                self._recorded(state)

    # Building the output.

    def parts(self, fmt: Format) -> list[bytes]:
        """The exposition, less the tail, as a list of byte strings to send in order."""
        return [*self.section(fmt).parts, self._every_poll_section(fmt)]

    def body(self, fmt: Format) -> bytes:
        """The exposition, less the tail, as one byte string."""
        return b"".join(self.parts(fmt))

    def gzip(self, fmt: Format, tail: bytes) -> list[bytes]:
        """One gzip stream of the exposition followed by ``tail``, as parts to send."""
        section = self.section(fmt)
        every = self._every_poll_section(fmt)
        cached = self._closing.get(fmt.openmetrics)
        if cached is None or cached[0] is not section or cached[1] is not every \
                or cached[2] != tail:
            # Compressing the changing end costs a millisecond or two at 10,000 databases;
            # requests that come together (a burst of them) share one.
            fresh = every + tail
            crc = zlib.crc32(fresh, section.crc)
            cached = (section, every, tail, deflate.closing(fresh)
                      + deflate.trailer(crc, section.length + len(fresh)))
            self._closing[fmt.openmetrics] = cached
        return [deflate.HEADER, *section.deflated, cached[3]]

    def section(self, fmt: Format) -> Section:
        """The stable section for ``fmt``: the last one assembled while a background assembly
        keeps it current, else reassembled now if anything changed."""
        self._expire(time.time())
        section = self._sections.get(fmt.openmetrics)
        if section is None or (section.generation != self._stable_generation
                               and not self._background):
            section = self._install(_assemble(self._plan(fmt)))
        return section

    async def assemble_in_background(self, period: float, gate: Gate) -> None:
        """Keep every format scraped so far assembled, off the event loop, until cancelled."""
        self._background = True
        try:
            while True:
                await asyncio.sleep(period)
                self._expire(time.time())
                for fmt in list(self._formats.values()):
                    section = self._sections.get(fmt.openmetrics)
                    if section is not None and section.generation == self._stable_generation:
                        continue
                    async with gate.turn():
                        plan = self._plan(fmt)
                    self._install(await asyncio.to_thread(_assemble, plan))
        except Exception:  # a bug here must not leave scrapes sending old data for ever
            log.exception("background assembly failed; scrapes assemble the output from now on")
        finally:
            self._background = False

    def _plan(self, fmt: Format) -> _Plan:
        """Copy out what assembling ``fmt`` reads: stored families, or the chunks to rebuild."""
        self._formats[fmt.openmetrics] = fmt
        exporter = _utf8("".join(fmt.header(spec) + sample_lines(spec, "", self.exporter)
                                 for spec in EXPORTER_METRICS))
        section = self._sections.get(fmt.openmetrics)
        stored = section.families if section is not None else []
        states = list(self.states.values())
        families: list[_Family | _Rebuild] = []
        for index, spec in enumerate(STABLE_FAMILIES):
            version = self._family_versions[index]
            if index < len(stored) and stored[index].version == version:
                families.append(stored[index])
            else:
                families.append(_Rebuild(version, _utf8(fmt.header(spec)),
                                         [state.stable[index] for state in states],
                                         [state.deflated[index] for state in states]))
        return _Plan(fmt.openmetrics, self._stable_generation, exporter, families)

    def _install(self, section: Section) -> Section:
        """Keep a newly assembled section unless a newer one is kept already."""
        current = self._sections.get(section.openmetrics)
        if current is not None and current.generation > section.generation:
            return current
        self._sections[section.openmetrics] = section
        return section

    def _every_poll_section(self, fmt: Format) -> bytes:
        cached = self._every_poll.get(fmt.openmetrics)
        if cached is None or cached[0] != self._every_poll_generation:
            out = []
            for index, spec in enumerate(EVERY_POLL):
                out.append(_utf8(fmt.header(spec)))
                out.extend(state.every_poll_chunks[index] for state in self.states.values())
            cached = (self._every_poll_generation, b"".join(out))
            self._every_poll[fmt.openmetrics] = cached
        return cached[1]
