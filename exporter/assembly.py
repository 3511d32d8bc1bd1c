"""Assembly: the scrape answer put together from the store's bytes, plain and gzipped.

The output is kept in three sections, each family grouped as the text formats require:

- stable: the exporter's own families, then each stable family's header followed by every
  connection's stored lines of it (store.py);
- every-poll: timestamps and counters that move at each poll, joined when they changed;
- tail: prometheus_client's process metrics, produced by the HTTP layer.

A gzip answer is one valid gzip stream (see deflate.py): each stored chunk was compressed on
its own, so the chunks concatenate; the every-poll section and the tail are compressed fresh
and close the stream. Each family keeps its parts, joined deflate and CRC until one of its
chunks changes. Reassembling the changed families (chiefly a CRC-32 pass over their text,
tens of ms at 10,000 databases) runs in a worker thread, so neither a scrape nor a poll waits
for it; scrapes meanwhile send the last section assembled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter import deflate
from exporter.layout import Layout
from exporter.priority import Gate
from exporter.render import Format, label_block, sample_lines, utf8
from exporter.spec import IDENTITY_LABELS, ApiView, ExporterView

log = logging.getLogger(__name__)

CRC_BATCH = 64 * 1024  # bytes


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


def assemble(plan: _Plan) -> Section:
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




class Source(Protocol):
    """What assembly reads of the store (store.py): rendered bytes and their versions."""

    @property
    def layout(self) -> Layout: ...
    @property
    def exporter(self) -> ExporterView: ...
    @property
    def api(self) -> Sequence[ApiView]: ...
    @property
    def rendered(self) -> Mapping[str, RenderedBytes]: ...
    @property
    def family_versions(self) -> Sequence[int]: ...
    @property
    def stable_generation(self) -> int: ...
    @property
    def every_poll_generation(self) -> int: ...
    def expire(self, now: float) -> None: ...


class RenderedBytes(Protocol):
    """One connection's stored lines of every stable family, their deflate, and the
    every-poll lines."""

    @property
    def stable(self) -> Sequence[bytes]: ...
    @property
    def deflated(self) -> Sequence[bytes]: ...
    @property
    def every_poll_chunks(self) -> Sequence[bytes]: ...


class Output:
    """The scrape answers of one store, one stable section per format.

    The stable section is reassembled after a change: by the scrape that finds it out of date
    or, once ``assemble_in_background`` runs, in a worker thread at most every ``period``
    seconds, while scrapes go on sending the last one assembled.
    """

    def __init__(self, store: Source) -> None:
        self.store = store
        self._formats: dict[bool, Format] = {}
        self._sections: dict[bool, Section] = {}
        self._every_poll: dict[bool, tuple[int, bytes]] = {}
        self._closing: dict[bool, tuple[Section, bytes, bytes, bytes]] = {}
        self._background = False

    def shows(self, generation: int) -> bool:
        """Whether every section kept is at least ``generation`` (always, without
        background assembly: a scrape assembles what it sends)."""
        return not self._background or all(
            section.generation >= generation for section in self._sections.values())

    def parts(self, fmt: Format) -> list[bytes]:
        """The exposition, less the tail, as a list of byte strings to send in order."""
        return [*self.section(fmt).parts, self._every_poll_section(fmt)]

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
        self.store.expire(time.time())
        section = self._sections.get(fmt.openmetrics)
        if section is None or (section.generation != self.store.stable_generation
                               and not self._background):
            section = self._install(assemble(self._plan(fmt)))
        return section

    async def assemble_in_background(self, period: float, gate: Gate) -> None:
        """Keep every format scraped so far assembled, off the event loop, until cancelled."""
        self._background = True
        try:
            while True:
                await asyncio.sleep(period)
                self.store.expire(time.time())
                for fmt in list(self._formats.values()):
                    section = self._sections.get(fmt.openmetrics)
                    if (section is not None
                            and section.generation == self.store.stable_generation):
                        continue
                    async with gate.turn():
                        plan = self._plan(fmt)
                    self._install(await asyncio.to_thread(assemble, plan))
        except Exception:  # a bug here must not leave scrapes sending old data for ever
            log.exception("background assembly failed; scrapes assemble the output from now on")
        finally:
            self._background = False

    def _plan(self, fmt: Format) -> _Plan:
        """Copy out what assembling ``fmt`` reads: stored families, or the chunks to rebuild."""
        store = self.store
        self._formats[fmt.openmetrics] = fmt
        exporter = utf8("".join(fmt.header(spec) + sample_lines(spec, "", store.exporter)
                                for spec in store.layout.exporter))
        section = self._sections.get(fmt.openmetrics)
        stored = section.families if section is not None else []
        rendered = list(store.rendered.values())
        families: list[_Family | _Rebuild] = []
        for index, spec in enumerate(store.layout.stable_families):
            version = store.family_versions[index]
            if index < len(stored) and stored[index].version == version:
                families.append(stored[index])
            else:
                families.append(_Rebuild(version, utf8(fmt.header(spec)),
                                         [r.stable[index] for r in rendered],
                                         [r.deflated[index] for r in rendered]))
        return _Plan(fmt.openmetrics, store.stable_generation, exporter, families)

    def _install(self, section: Section) -> Section:
        """Keep a newly assembled section unless a newer one is kept already."""
        current = self._sections.get(section.openmetrics)
        if current is not None and current.generation > section.generation:
            return current
        self._sections[section.openmetrics] = section
        return section

    def _every_poll_section(self, fmt: Format) -> bytes:
        store = self.store
        cached = self._every_poll.get(fmt.openmetrics)
        if cached is None or cached[0] != store.every_poll_generation:
            out = []
            for index, spec in enumerate(store.layout.every_poll):
                out.append(utf8(fmt.header(spec)))
                out.extend(r.every_poll_chunks[index] for r in store.rendered.values())
            # The API traffic moves with every request: it goes out with the polls' counters.
            for api in store.layout.api:
                out.append(utf8(fmt.header(api) + "".join(
                    sample_lines(api, label_block(IDENTITY_LABELS["api"], (v.token_source,)), v)
                    for v in store.api)))
            cached = (store.every_poll_generation, b"".join(out))
            self._every_poll[fmt.openmetrics] = cached
        return cached[1]
