"""The rendered store: each connection's series as bytes, re-rendered only where a poll
changed them, and the Store that records what the poller learned.

Each connection keeps, for every stable family (the connection families that change only with
the API's answer, and every database family), its lines as bytes with their raw deflate. A
poll re-renders only the databases whose record (or status start) changed and re-compresses
only the families whose bytes changed; the every-poll families (timestamps and counters that
move at each poll) are a few short lines per connection, kept apart. Putting the output
together from these bytes is assembly.py's job.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from exporter import deflate
from exporter.assembly import Output, Section
from exporter.layout import FULL, Layout
from exporter.models import RECORD_FIELDS as _RECORD_FIELDS
from exporter.models import Connection, Database
from exporter.priority import Gate
from exporter.render import Format, label_block, sample_lines, utf8
from exporter.spec import IDENTITY_LABELS, ApiView, ConnectionView, DatabaseView, ExporterView
from exporter.state import ConnectionState


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


class Rendered:
    """One connection's series as bytes, rendered from its state when a poll lands."""

    def __init__(self, connection_id: str, layout: Layout = FULL) -> None:
        self.id = connection_id
        self.layout = layout
        self._first_database = layout.first_database_family
        self.identity = label_block(IDENTITY_LABELS["connection"], (connection_id,))
        self.serving_databases = False  # whether its database series are in the output
        # Lines of each stable family (the layout's order) and their raw deflate.
        self.stable: list[bytes] = [b""] * len(layout.stable_families)
        self.deflated: list[bytes] = [b""] * len(layout.stable_families)
        self.every_poll_chunks: tuple[bytes, ...] = ()
        self.changed: set[int] = set()  # stable families whose chunk changed; the store clears it
        self._seen: dict[str, _Seen] = {}
        self._order: list[str] = []  # database IDs in the order their lines are stored
        # Where each database's lines end in each database family's chunk; a compact array
        # since there are (databases x families) of them.
        self._ends: list[array[int]] = [array("I") for _ in layout.database]

    def drop_databases(self) -> None:
        """Take every database series out of the output (the data went stale)."""
        self.serving_databases = False
        self._seen, self._order = {}, []
        self._ends = [array("I") for _ in self.layout.database]
        for family in self.layout.all_database_families:
            self._set(self._first_database + family, b"")

    def _set(self, index: int, chunk: bytes) -> None:
        """Store a stable family's new lines, compressing them only if they differ."""
        if chunk != self.stable[index]:
            self.stable[index] = chunk
            self.deflated[index] = deflate.piece(chunk)
            self.changed.add(index)

    def connection(self, view: ConnectionView) -> None:
        """Lines of every connection family."""
        for index, spec in enumerate(self.layout.stable_connection):
            self._set(index, utf8(sample_lines(spec, self.identity, view)))
        self.every_poll_chunks = tuple(
            utf8(sample_lines(spec, self.identity, view)) for spec in self.layout.every_poll)

    def databases(self, state: ConnectionState, now: float, families: Sequence[int]) -> None:
        """Lines of the given database families; unchanged databases keep their stored lines.

        A database is re-rendered when its record or its status start changed, and for a
        family that follows the clock when it has a pause schedule.
        """
        data = state.data
        assert data is not None
        position = {database_id: index for index, database_id in enumerate(self._order)}
        names = IDENTITY_LABELS["database"]
        seen: dict[str, _Seen] = {}
        # Per database: its stored position and what changed since (None: render it anew).
        rows: list[tuple[_Seen, int | None, frozenset[str] | None]] = []
        for db in data.databases:
            since = state.status_since[db.id][1]
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
            spec = self.layout.database[family]
            if (in_place and spec.reads and changed_anywhere.isdisjoint(spec.reads)
                    and not (spec.follows_clock and scheduled)):
                continue
            old, ends = self.stable[self._first_database + family], self._ends[family]
            pieces, new_ends, total = [], array("I"), 0
            for entry, stored, changed in rows:
                if (stored is not None and changed is not None
                        and (not changed or (spec.reads and changed.isdisjoint(spec.reads)))
                        and not (spec.follows_clock and entry.db.pause_schedule is not None)):
                    piece = old[ends[stored - 1] if stored else 0:ends[stored]]
                else:
                    view = DatabaseView(db=entry.db, status_since=entry.since, now=now)
                    piece = utf8(sample_lines(spec, entry.identity, view))
                total += len(piece)
                pieces.append(piece)
                new_ends.append(total)
            self._ends[family] = new_ends
            self._set(self._first_database + family, b"".join(pieces))
        self._seen, self._order = seen, [db.id for db in data.databases]
        self.serving_databases = True



class Store:
    """Every connection's state and rendered bytes, with the versions assembly reads.

    ``output`` (assembly.py) builds the scrape answers from what is stored here.
    """

    def __init__(self, connection_ids: Iterable[str], stale_after: float,
                 layout: Layout = FULL) -> None:
        self.stale_after = stale_after
        self.layout = layout
        self.exporter = ExporterView()
        self.api: tuple[ApiView, ...] = ()  # each token source's traffic, set by the poller
        self.states: dict[str, ConnectionState] = {}
        self.rendered: dict[str, Rendered] = {}
        self.stable_generation = 0  # moves whenever a stable family's bytes change
        # Moves whenever the databases served change, whatever families are served: what the
        # service discovery answer (discovery.py) is cached on.
        self.data_generation = 0
        self.every_poll_generation = 0  # moves at every recorded poll
        self.family_versions = [0] * len(layout.stable_families)
        self.complete_generation = 0  # the generation at which every connection was polled
        self.output = Output(self)
        self.set_connections(connection_ids)

    # Recording what the poller learned.

    def set_connections(self, connection_ids: Iterable[str]) -> None:
        """Keep the states (and series) of connections still listed, add new ones, drop
        the rest."""
        ids = list(connection_ids)
        self.states = {cid: self.states.get(cid) or ConnectionState(cid) for cid in ids}
        rendered = {}
        for cid in ids:
            if (kept := self.rendered.get(cid)) is None:
                kept = Rendered(cid, self.layout)
                kept.connection(self.states[cid].view())
            rendered[cid] = kept
        self.rendered = rendered
        self.data_generation += 1
        self.family_versions = [v + 1 for v in self.family_versions]
        self.every_poll_generation += 1
        self.set_exporter(replace(self.exporter, connections=len(self.states)))

    def set_exporter(self, view: ExporterView) -> None:
        """Replace what the exporter-level metrics say."""
        self.exporter = view
        self.stable_generation += 1

    def served(self) -> Iterator[tuple[str, ConnectionState, Connection]]:
        """Each connection whose databases are on /metrics now, with its latest answer: what
        the status page and service discovery list (stale data is off all three)."""
        for cid, state in self.states.items():
            rendered = self.rendered.get(cid)
            if state.data is not None and rendered is not None and rendered.serving_databases:
                yield cid, state, state.data

    @property
    def ready(self) -> bool:
        """Whether every connection has been polled, and the output shows all of them."""
        return (all(state.polled for state in self.states.values())
                and self.output.shows(self.complete_generation))

    def success(self, connection_id: str, data: Connection, duration: float,
                retries: int = 0) -> None:
        """Record a good answer for a connection and render what it changed."""
        if state := self.states.get(connection_id):
            now = time.time()
            state.record_success(data, now, duration, retries)
            rendered = self.rendered[connection_id]
            rendered.connection(state.view())
            rendered.databases(state, now, self.layout.all_database_families)
            self.data_generation += 1
            self._recorded(state, rendered)

    def unchanged(self, connection_id: str, duration: float, retries: int = 0) -> None:
        """Record a good answer identical to the connection's previous one: only
        time-dependent series move."""
        if state := self.states.get(connection_id):
            now = time.time()
            state.record_unchanged(now, duration, retries)
            rendered = self.rendered[connection_id]
            rendered.connection(state.view())
            assert state.data is not None
            if not rendered.serving_databases:
                # Back after going stale.
                rendered.databases(state, now, self.layout.all_database_families)
                self.data_generation += 1
            elif any(db.pause_schedule is not None for db in state.data.databases):
                # Pause windows follow the clock.
                rendered.databases(state, now, self.layout.clock_families)
            self._recorded(state, rendered)

    def failure(self, connection_id: str, reason: str, duration: float,
                retries: int = 0) -> None:
        """Record a failed poll of a connection."""
        if state := self.states.get(connection_id):
            rendered = self.rendered[connection_id]
            state.record_failure(
                reason, time.time(), duration, retries,
                stale_after=self.stale_after if rendered.serving_databases else None)
            rendered.connection(state.view())
            self._recorded(state, rendered)

    def expire(self, now: float) -> None:
        """Drop the database series of every connection whose data went stale."""
        for state in self.states.values():
            if state.stale_at is not None and state.expire(now):
                rendered = self.rendered[state.id]
                rendered.drop_databases()
                self.data_generation += 1
                self._recorded(state, rendered)

    def _recorded(self, state: ConnectionState, rendered: Rendered) -> None:
        self.every_poll_generation += 1
        if rendered.changed:
            for family in rendered.changed:
                self.family_versions[family] += 1
            rendered.changed.clear()
            self.stable_generation += 1
        if state.polls == 1:
            self.complete_generation = self.stable_generation

    # The output, built by assembly.py.

    def parts(self, fmt: Format) -> list[bytes]:
        """The exposition, less the tail, as a list of byte strings to send in order."""
        return self.output.parts(fmt)

    def body(self, fmt: Format) -> bytes:
        """The exposition, less the tail, as one byte string."""
        return b"".join(self.output.parts(fmt))

    def gzip(self, fmt: Format, tail: bytes) -> list[bytes]:
        """One gzip stream of the exposition followed by ``tail``, as parts to send."""
        return self.output.gzip(fmt, tail)

    def section(self, fmt: Format) -> Section:
        """The stable section for ``fmt`` (see ``Output.section``)."""
        return self.output.section(fmt)

    async def assemble_in_background(self, period: float, gate: Gate) -> None:
        """Keep the output assembled off the event loop (see ``Output``), until cancelled."""
        await self.output.assemble_in_background(period, gate)
