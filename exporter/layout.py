"""The order of the output: which families are stable, which move at every poll."""

from __future__ import annotations

from typing import Any

from exporter.metrics import CONNECTION_METRICS, DATABASE_METRICS
from exporter.spec import MetricSpec

STABLE_CONNECTION = tuple(s for s in CONNECTION_METRICS if not s.every_poll)
EVERY_POLL = tuple(s for s in CONNECTION_METRICS if s.every_poll)
# The families of the stable section that come from connections, in output order.
STABLE_FAMILIES: tuple[MetricSpec[Any], ...] = STABLE_CONNECTION + DATABASE_METRICS
FIRST_DATABASE_FAMILY = len(STABLE_CONNECTION)
ALL_DATABASE_FAMILIES = tuple(range(len(DATABASE_METRICS)))
CLOCK_FAMILIES = tuple(i for i, spec in enumerate(DATABASE_METRICS) if spec.follows_clock)
