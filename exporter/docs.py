"""Write docs/metrics.md from the metric specs, so the docs cannot name other metrics.

The series counts are not declared anywhere: they are counted by rendering each family for
a database (and a connection) with every optional field missing, and with every one set.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from exporter.metrics import (
    ALL_METRICS,
    API_METRICS,
    CONNECTION_METRICS,
    DATABASE_METRICS,
    DURATION_BUCKETS,
    EXPORTER_METRICS,
)
from exporter.models import Connection, read_connection
from exporter.spec import IDENTITY_LABELS, ApiView, ConnectionView, DatabaseView, MetricSpec

HEADER = """# Metrics

Generated from `exporter/metrics.py` by `python -m exporter.docs > docs/metrics.md`;
a test fails when the two disagree.

Every per-connection series carries `connection_id`; every per-database series carries
`connection_id`, `database_id` and `database_name`. IDs are lowercase canonical UUIDs.
State sets emit every documented state as 0 or 1 (values below), plus one series at 1 for a
value the API reference does not list. A missing optional text label is the empty string.
Values come from the latest background poll of each connection, never from the API at scrape
time. `--metric-allowlist` and `--metric-denylist` cut whole families (README).

The exporter also serves prometheus_client's `process_*` and `python_*` metrics (about 15
series).
"""

_ID = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"
_BARE = {"id": "0b7d4c2e-9a51-4f7e-8c1e-3f5a6b7c8d90", "name": "bare"}
_FULL = {
    "id": "6f1c2a9e-1b0d-4c3e-9f8a-7d6e5c4b3a21", "name": "full", "customerId": _ID,
    "connectionId": _ID, "mysqlDb": "main", "syncMode": "binlog", "syncInterval": 60,
    "taskCpu": 1024, "taskMemoryMb": 2048, "logLevel": "info", "status": "running",
    "lastError": "x", "endpointUrl": "https://full.example", "healthStatus": "ok",
    "buildComputeOverride": "BUILD_GENERAL1_LARGE", "instanceSize": "small",
    "region": "eu-west-1", "desiredState": "running", "reflexdbCustomDomain": "full",
    "pauseSchedule": {"pauseAt": "00:00", "resumeAt": "23:59", "days": []},
    "tags": [{"label": "prod", "color": "red"}, {"label": "pii", "color": "purple"}],
    "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-02T00:00:00Z",
}
_CONNECTION = {"id": _ID, "name": "c", "customerId": _ID, "backend": "mysql",
               "mysqlHost": "h", "mysqlPort": 3306, "availableSchemas": ["main"],
               "allowedSyncModes": ["poll", "binlog"], "minSyncInterval": 30}


def _answer(databases: list[dict[str, Any]]) -> Connection:
    return read_connection(json.dumps({**_CONNECTION, "databases": databases}).encode())


_TYPICAL = {**{k: v for k, v in _FULL.items()
               if k not in ("tags", "pauseSchedule", "desiredState")},
            "id": "7a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"}


def _database_views() -> tuple[DatabaseView, DatabaseView, DatabaseView]:
    """A database with every optional field missing, one with its lifecycle fields but no
    tags, schedule or desired state, and one with every field set."""
    now = time.time()
    bare, typical, full = _answer([_BARE, _TYPICAL, _FULL]).databases
    return (DatabaseView(db=bare, status_since=None, now=now),
            DatabaseView(db=typical, status_since=now, now=now),
            DatabaseView(db=full, status_since=now, now=now))


def _connection_views() -> tuple[ConnectionView, ConnectionView]:
    """A connection before its first poll, and one polled, failed once and answered."""
    before = ConnectionView(up=False, data=None, polls=0, retries=0, failures={},
                            last_success=None, last_failure=None, poll_duration=None)
    after = ConnectionView(up=True, data=_answer([]), polls=3, retries=1,
                           failures={"timeout": 1}, last_success=1.0, last_failure=2.0,
                           poll_duration=0.1)
    return before, after


def _count(spec: MetricSpec[Any], view: object) -> int:
    return len(list(spec.samples(view)))


def _series(spec: MetricSpec[Any], bare: object, full: object) -> str:
    low, high = _count(spec, bare), _count(spec, full)
    if spec.name == "reflexdb_database_tag_info":
        return "1 per tag"
    return str(low) if low == high else f"{low} to {high}"


def _costs() -> dict[str, str]:
    bare_db, _, full_db = _database_views()
    before, after = _connection_views()
    costs = {s.name: _series(s, bare_db, full_db) for s in DATABASE_METRICS}
    costs.update({s.name: _series(s, before, after) for s in CONNECTION_METRICS})
    return costs


def _per_token() -> int:
    """Series of one token source that has had no answer yet (each status seen adds one)."""
    view = ApiView(token_source="env",  # noqa: S106 - a label, not a password
                   requests=(), buckets=(0,) * (len(DURATION_BUCKETS) + 1),
                   duration_sum=0.0, limit=1.0, paused_until=0.0, waited=0.0)
    return sum(len(s.bounds) + 3 if s.kind == "histogram" else _count(s, view)
               for s in API_METRICS)


def totals() -> tuple[int, int, int, int, int]:
    """Series per database (every optional field missing, typical, every one set with two
    tags) and per connection (before its first poll, once answered and failed)."""
    before, after = _connection_views()
    bare, typical, full = (sum(_count(s, view) for s in DATABASE_METRICS)
                           for view in _database_views())
    return (bare, typical, full, sum(_count(s, before) for s in CONNECTION_METRICS),
            sum(_count(s, after) for s in CONNECTION_METRICS))


def _state_sets() -> list[str]:
    """Each state set (a family with one own label and a sample per value) and its values."""
    _, _, full_db = _database_views()
    _, after = _connection_views()
    rows = []
    pairs: list[tuple[MetricSpec[Any], object]] = [
        *((s, full_db) for s in DATABASE_METRICS), *((s, after) for s in CONNECTION_METRICS)]
    for spec, view in pairs:
        samples = list(spec.samples(view))
        if len(spec.labels) == 1 and len(samples) > 2:
            values = ", ".join(f"`{labels[0]}`" for labels, _ in samples)
            rows.append(f"| `{spec.name}` | `{spec.labels[0]}` | {values} |")
    return rows


def render() -> str:
    """The whole Markdown page."""
    costs = _costs()
    bare, typical, full, before, after = totals()
    out = [HEADER, "## Series per object\n",
           f"Each database costs **{typical} series** with its lifecycle fields set (status, "
           f"health, size, sync mode) and no tags, pause schedule or desired state; {bare} "
           f"with every optional field missing; {full} with every field set and two tags. "
           f"Each connection costs {before} series before its first poll and **{after}** once "
           f"answered (and failed once); the exporter's own families {len(EXPORTER_METRICS)}, "
           f"and each token {_per_token()} plus one per HTTP status seen. So D databases on C "
           f"connections cost about {typical}·D + {after}·C series, which Prometheus holds at "
           "a few KiB of memory each: at 10,000 databases on 500 connections, about "
           f"{(typical * 10_000 + after * 500) // 1000}k series.\n",
           "## State sets\n", "| metric | label | values |", "|---|---|---|", *_state_sets(),
           "", "## Families\n", "| metric | type | labels | series | help |",
           "|---|---|---|---|---|"]
    for spec in ALL_METRICS:
        own = ", ".join(f"`{label}`" for label in spec.labels)
        identity = ", ".join(IDENTITY_LABELS[spec.scope])
        labels = f"{spec.scope} ({identity})" if identity else "none"
        labels = f"{labels}; {own}" if own else labels
        per = {"database": " per database", "connection": " per connection",
               "api": " per token"}.get(spec.scope, "")
        count = costs.get(spec.name)
        if count is None:
            count = f"{len(spec.bounds) + 3}" if spec.kind == "histogram" else (
                "1 per status code" if spec.labels == ("code",) else "1")
        out.append(f"| `{spec.name}` | {spec.kind} | {labels} | {count}{per} | {spec.help} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
