"""The families served and the order of the output: which are stable, which move at every
poll. A family left out by --metric-allowlist or --metric-denylist is in no list here, so it
is never rendered and the store keeps no bytes or offsets for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.metrics import API_METRICS, CONNECTION_METRICS, DATABASE_METRICS, EXPORTER_METRICS
from exporter.spec import ApiView, ConnectionView, DatabaseView, ExporterView, MetricSpec


@dataclass(frozen=True, slots=True)
class Layout:
    """The served families of each kind, in output order."""

    exporter: tuple[MetricSpec[ExporterView], ...]
    api: tuple[MetricSpec[ApiView], ...]
    stable_connection: tuple[MetricSpec[ConnectionView], ...]
    every_poll: tuple[MetricSpec[ConnectionView], ...]
    database: tuple[MetricSpec[DatabaseView], ...]

    @classmethod
    def of(cls, keep: Callable[[str], bool] = lambda _: True) -> Layout:
        """The families whose name ``keep`` accepts."""
        return cls(
            exporter=tuple(s for s in EXPORTER_METRICS if keep(s.name)),
            api=tuple(s for s in API_METRICS if keep(s.name)),
            stable_connection=tuple(s for s in CONNECTION_METRICS
                                    if not s.every_poll and keep(s.name)),
            every_poll=tuple(s for s in CONNECTION_METRICS if s.every_poll and keep(s.name)),
            database=tuple(s for s in DATABASE_METRICS if keep(s.name)))

    @property
    def stable_families(self) -> tuple[MetricSpec[Any], ...]:
        """The stable section's families that come from connections, in output order."""
        return self.stable_connection + self.database

    @property
    def first_database_family(self) -> int:
        """Where the database families start among the stable families."""
        return len(self.stable_connection)

    @property
    def all_database_families(self) -> tuple[int, ...]:
        """Every database family, by its index in ``database``."""
        return tuple(range(len(self.database)))

    @property
    def clock_families(self) -> tuple[int, ...]:
        """The database families that follow the clock (pause windows)."""
        return tuple(i for i, spec in enumerate(self.database) if spec.follows_clock)

    @property
    def names(self) -> tuple[str, ...]:
        """Every served family's name."""
        specs: tuple[MetricSpec[Any], ...] = (*self.exporter, *self.api,
                                              *self.stable_connection, *self.every_poll,
                                              *self.database)
        return tuple(s.name for s in specs)


FULL = Layout.of()
