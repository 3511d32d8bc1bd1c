"""The hand-written parser the pydantic models replaced, kept as the oracle they must match."""

from __future__ import annotations

import math
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The values the API reference documents; anything else is exported as-is and logged once.
STATUSES = ("registered", "building", "deploying", "running", "pausing", "paused", "resuming",
            "terminating", "terminated", "failed", "stopped")
HEALTH_STATUSES = ("ok", "degraded", "unreachable", "cap_exceeded")
INSTANCE_SIZES = ("nano", "small", "medium", "large", "xlarge", "2xlarge")
SYNC_MODES = ("poll", "binlog", "logical", "cdc")
BACKENDS = ("mysql", "postgres", "mssql")
LOG_LEVELS = ("info", "debug", "warn", "error")
TAG_COLORS = ("gray", "red", "orange", "yellow", "green", "teal", "blue", "purple")

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Cap label values taken from free-form API fields so one bad answer cannot bloat the output.
MAX_LABEL_LENGTH = 256


class InvalidResponse(Exception):
    """The answer as a whole is not a connection; the poll fails as ``invalid_response``."""


def canonical_id(value: object) -> str | None:
    """Lowercase canonical UUID text, or the trimmed lowercase text if it is no UUID."""
    if not isinstance(value, str) or not value.strip():
        return None
    if _CANONICAL_UUID.fullmatch(value):
        return value  # the common case, without building a UUID object
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return value.strip().lower()[:MAX_LABEL_LENGTH]


def _str(value: object) -> str | None:
    return value[:MAX_LABEL_LENGTH] if isinstance(value, str) else None


def _word(value: object) -> str | None:
    """A short enum-like value, interned: 10,000 databases share one "running"."""
    if isinstance(value, str) and len(value) <= 32:
        return sys.intern(value)
    return _str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _minutes(value: object) -> int | None:
    """Minutes after midnight for ``HH:MM``, or None."""
    if not isinstance(value, str) or len(value.strip()) != 5 or value.strip()[2] != ":":
        return None
    hours, minutes = value.strip()[:2], value.strip()[3:]
    if not (hours.isdigit() and minutes.isdigit()):
        return None
    if int(hours) > 23 or int(minutes) > 59:
        return None
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag on a database."""

    label: str
    color: str


@dataclass(frozen=True, slots=True)
class PauseSchedule:
    """A recurring UTC pause window; ``None`` fields mean the API sent them malformed."""

    pause_at: str
    resume_at: str
    pause_minute: int | None
    resume_minute: int | None
    days: tuple[int, ...] | None

    def active(self, now: float) -> bool | None:
        """Whether ``now`` lies in a window, or None when the schedule cannot be read.

        A window opens at pauseAt on a listed day (every day when none are listed) and
        closes at the next resumeAt, which may fall after midnight on the following day.
        """
        if self.pause_minute is None or self.resume_minute is None or self.days is None:
            return None
        start, end = self.pause_minute, self.resume_minute
        moment = datetime.fromtimestamp(now, UTC)
        minute = moment.hour * 60 + moment.minute
        today = (moment.weekday() + 1) % 7  # the API counts 0=Sunday
        yesterday = (today - 1) % 7

        def listed(day: int) -> bool:
            return not self.days or day in self.days

        if start < end:
            return listed(today) and start <= minute < end
        if start > end:
            return (listed(today) and minute >= start) or (listed(yesterday) and minute < end)
        return False


def parse_pause_schedule(value: object) -> PauseSchedule | None:
    """A pause schedule, or None when the field is null or not an object."""
    if not isinstance(value, dict):
        return None
    raw_days = value.get("days")
    days: tuple[int, ...] | None = None
    if isinstance(raw_days, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in raw_days
    ):
        days = tuple(sorted(set(raw_days)))
    return PauseSchedule(
        pause_at=_str(value.get("pauseAt")) or "",
        resume_at=_str(value.get("resumeAt")) or "",
        pause_minute=_minutes(value.get("pauseAt")),
        resume_minute=_minutes(value.get("resumeAt")),
        days=days,
    )


def _tags(value: object) -> tuple[Tag, ...]:
    if not isinstance(value, list):
        return ()
    seen: dict[tuple[str, str], Tag] = {}
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("label"), str):
            tag = Tag(label=item["label"][:MAX_LABEL_LENGTH], color=_word(item.get("color")) or "")
            # A repeated tag would render a duplicate series, which Prometheus rejects.
            seen.setdefault((tag.label, tag.color), tag)
    return tuple(seen.values())


@dataclass(frozen=True, slots=True)
class Database:
    """One database instance as the API describes it; None marks a missing or bad field."""

    id: str
    name: str
    customer_id: str | None
    mysql_db: str | None
    sync_mode: str | None
    sync_interval: float | None
    task_cpu: float | None
    task_memory_mb: float | None
    log_level: str | None
    status: str | None
    last_error: str | None
    endpoint_url: str | None
    health_status: str | None
    build_compute_override: str | None
    instance_size: str | None
    region: str | None
    binlog_server_id: float | None
    desired_state: str | None
    custom_domain: str | None
    pause_schedule: PauseSchedule | None
    tags: tuple[Tag, ...]
    created_at: float | None
    updated_at: float | None


def parse_database(raw: dict[str, Any], database_id: str) -> Database:
    """Build a Database from a record whose id is already known good."""
    return Database(
        id=database_id,
        name=_str(raw.get("name")) or "",
        customer_id=canonical_id(raw.get("customerId")),
        mysql_db=_str(raw.get("mysqlDb")),
        sync_mode=_word(raw.get("syncMode")),
        sync_interval=_number(raw.get("syncInterval")),
        task_cpu=_number(raw.get("taskCpu")),
        task_memory_mb=_number(raw.get("taskMemoryMb")),
        log_level=_word(raw.get("logLevel")),
        status=_word(raw.get("status")),
        last_error=raw.get("lastError") if isinstance(raw.get("lastError"), str) else None,
        endpoint_url=_str(raw.get("endpointUrl")),
        health_status=_word(raw.get("healthStatus")),
        build_compute_override=_word(raw.get("buildComputeOverride")),
        instance_size=_word(raw.get("instanceSize")),
        region=_word(raw.get("region")),
        binlog_server_id=_number(raw.get("binlogServerId")),
        desired_state=_word(raw.get("desiredState")),
        custom_domain=_str(raw.get("reflexdbCustomDomain")),
        pause_schedule=parse_pause_schedule(raw.get("pauseSchedule")),
        tags=_tags(raw.get("tags")),
        created_at=_timestamp(raw.get("createdAt")),
        updated_at=_timestamp(raw.get("updatedAt")),
    )


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection and the databases of one good answer."""

    name: str | None
    customer_id: str | None
    backend: str | None
    host: str | None
    port: float | None
    available_schemas: int | None
    allowed_sync_modes: tuple[str, ...] | None
    min_sync_interval: float | None
    created_at: float | None
    updated_at: float | None
    databases: tuple[Database, ...]
    invalid_databases: int


def parse_connection(payload: object) -> Connection:
    """Read an answer; only a non-object or a missing ``databases`` list fails it whole."""
    if not isinstance(payload, dict):
        raise InvalidResponse("answer is not a JSON object")
    records = payload.get("databases")
    if not isinstance(records, list):
        raise InvalidResponse("answer has no databases list")
    databases: list[Database] = []
    seen: set[str] = set()
    invalid = 0
    for raw in records:
        database_id = canonical_id(raw.get("id")) if isinstance(raw, dict) else None
        if database_id is None or database_id in seen:
            invalid += 1  # no id, or a repeat that would duplicate every series
            continue
        seen.add(database_id)
        databases.append(parse_database(raw, database_id))
    schemas = payload.get("availableSchemas")
    modes = payload.get("allowedSyncModes")
    return Connection(
        name=_str(payload.get("name")),
        customer_id=canonical_id(payload.get("customerId")),
        backend=_word(payload.get("backend")),
        host=_str(payload.get("mysqlHost")),
        port=_number(payload.get("mysqlPort")),
        available_schemas=len(schemas) if isinstance(schemas, list) else None,
        allowed_sync_modes=(
            tuple(dict.fromkeys(m[:MAX_LABEL_LENGTH] for m in modes if isinstance(m, str)))
            if isinstance(modes, list) else None
        ),
        min_sync_interval=_number(payload.get("minSyncInterval")),
        created_at=_timestamp(payload.get("createdAt")),
        updated_at=_timestamp(payload.get("updatedAt")),
        databases=tuple(databases),
        invalid_databases=invalid,
    )
