"""What a metric is: views of what the exporter knows, the spec of one family, and the
sample readers every family is built from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from exporter.models import Connection, Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Sample = tuple[tuple[str, ...], float]
Scope = Literal["exporter", "api", "connection", "database"]

IDENTITY_LABELS: dict[Scope, tuple[str, ...]] = {
    "exporter": (),
    "api": ("token_source",),
    "connection": ("connection_id",),
    "database": ("connection_id", "database_id", "database_name"),
}

@dataclass(frozen=True, slots=True)
class ExporterView:
    """What the exporter-level metrics read."""

    connections: int = 0
    reload_ok: bool = True
    reload_time: float | None = None
    shard: int = 0
    total_shards: int = 1


@dataclass(frozen=True, slots=True)
class ApiView:
    """What the API traffic metrics read: one token source's requests and budget."""

    token_source: str
    requests: tuple[tuple[str, int], ...]  # by HTTP status code, or "error"
    buckets: tuple[int, ...]  # cumulative counts of durations, for DURATION_BUCKETS and +Inf
    duration_sum: float
    limit: float | None
    paused_until: float  # Unix time, 0 when not paused
    waited: float
    recent_rate: float = 0.0  # requests per second over the last minute, for the page


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """What the connection-level metrics read: poll bookkeeping and the last good answer."""

    up: bool
    data: Connection | None
    polls: int
    retries: int
    failures: Mapping[str, int]
    last_success: float | None
    last_failure: float | None
    poll_duration: float | None


@dataclass(frozen=True, slots=True)
class DatabaseView:
    """What the database-level metrics read: one record and what the exporter saw of it."""

    db: Database
    status_since: float | None
    now: float


@dataclass(frozen=True, slots=True)
class MetricSpec(Generic[T]):
    """One metric family: name, type, help, extra labels and how to read its samples."""

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    scope: Scope
    labels: tuple[str, ...]
    samples: Callable[[T], Iterable[Sample]] = field(repr=False)
    # True for series that change at every poll (timestamps, counters): they are kept apart
    # so the rest of the output can stay cached, and compressed, between polls.
    every_poll: bool = False
    # True for series that depend on the time of the poll, not only on the API's answer:
    # they are re-rendered even when an answer is byte-identical to the last one.
    follows_clock: bool = False
    # For database families: the Database fields (or "status_since") the samples read. When a
    # record changes in none of them, the family's stored lines for it are kept as they are.
    # Empty means "not declared": re-render whenever the record changes.
    reads: tuple[str, ...] = ()
    # For histograms: the bucket bounds (``samples`` gives one cumulative count per bound and
    # one for +Inf) and the sum of observations; the count is the +Inf bucket's.
    bounds: tuple[float, ...] = ()
    total: Callable[[T], float] | None = field(default=None, repr=False)

    @property
    def all_labels(self) -> tuple[str, ...]:
        """Identity labels first, then the family's own."""
        return IDENTITY_LABELS[self.scope] + self.labels


_unlisted_seen: set[tuple[str, str]] = set()


def note_unlisted(metric: str, value: str) -> None:
    """Log the first sighting of an enum value the API reference does not list."""
    if (metric, value) not in _unlisted_seen:
        _unlisted_seen.add((metric, value))
        log.warning("API sent a value the reference does not list; exporting it as-is",
                    extra={"metric": metric, "value": value})


def value(read: Callable[[T], float | bool | None]) -> Callable[[T], Iterable[Sample]]:
    """One unlabelled sample, left out when the value is missing."""

    def samples(obj: T) -> Iterable[Sample]:
        number = read(obj)
        return () if number is None else (((), float(number)),)

    return samples


def state_set(
    metric: str,
    states: tuple[str, ...],
    read: Callable[[T], str | None],
    unknown: str | None = None,
) -> Callable[[T], Iterable[Sample]]:
    """Every listed state as 0/1, plus one series for a value outside the list.

    A missing value sets ``unknown`` when the family has such a state, else leaves it out.
    """

    def samples(obj: T) -> Iterable[Sample]:
        current = read(obj)
        if current is None:
            if unknown is None:
                return ()
            current = unknown
        out = [((state,), 1.0 if state == current else 0.0) for state in states]
        if current not in states:
            note_unlisted(metric, current)
            out.append(((current,), 1.0))
        return out

    return samples


def info(*reads: Callable[[T], object]) -> Callable[[T], Iterable[Sample]]:
    """A single sample of value 1 whose labels carry text; missing text is the empty string."""

    def samples(obj: T) -> Iterable[Sample]:
        return ((info_labels(read(obj) for read in reads), 1.0),)

    return samples


def info_labels(values: Iterable[object]) -> tuple[str, ...]:
    """Label text for info values: None becomes "", whole floats lose their ".0"."""
    return tuple(
        "" if v is None else str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        for v in values
    )
