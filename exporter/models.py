"""The GET /v1/connections/{id} answer as pydantic models: one pass from the bytes, a bad
field degrades alone."""

from __future__ import annotations

import json
from dataclasses import field, fields
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from exporter.fields import (
    Day,
    Lenient,
    Name,
    Number,
    Raw,
    RecordId,
    ShortText,
    Text,
    Timestamp,
    Uuid,
    count,
    cut,
    distinct_texts,
    minutes,
    nothing,
    tag_label,
    timestamp,
)

# The values the API reference documents. Fields stay plain strings, not Literals, because an
# undocumented value must still be exported (and is logged once where it is rendered).
STATUSES = ("registered", "building", "deploying", "running", "pausing", "paused", "resuming",
            "terminating", "terminated", "failed", "stopped")
HEALTH_STATUSES = ("ok", "degraded", "unreachable", "cap_exceeded")
INSTANCE_SIZES = ("nano", "small", "medium", "large", "xlarge", "2xlarge")
SYNC_MODES = ("poll", "binlog", "logical", "cdc")
BACKENDS = ("mysql", "postgres", "mssql")
LOG_LEVELS = ("info", "debug", "warn", "error")
TAG_COLORS = ("gray", "red", "orange", "yellow", "green", "teal", "blue", "purple")


class InvalidResponse(Exception):
    """The answer as a whole is not a connection; the poll fails as ``invalid_response``."""


# camelCase aliases as the API spells them; unknown fields ignored. The models are pydantic
# dataclasses with slots: 10,000 BaseModel instances would hold about 30 MiB more, in their
# __dict__ and fields-set.
API = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


@dataclass(frozen=True, slots=True, kw_only=True, config=API)
class Tag:
    """A tag on a database."""

    label: Annotated[ShortText, Lenient(tag_label)]
    color: Name = ""


@dataclass(frozen=True, slots=True, kw_only=True, config=API)
class PauseSchedule:
    """A recurring UTC pause window; ``None`` fields mean the API sent them malformed.

    The text is kept as sent and read on use: only a schedule being rendered pays for it.
    """

    pause_text: Raw = Field(None, alias="pauseAt")
    resume_text: Raw = Field(None, alias="resumeAt")
    listed_days: Annotated[tuple[Day, ...] | None, Lenient(nothing)] = Field(None, alias="days")

    @property
    def pause_at(self) -> str:
        """pauseAt as a label value."""
        return cut(self.pause_text) or ""

    @property
    def resume_at(self) -> str:
        """resumeAt as a label value."""
        return cut(self.resume_text) or ""

    @property
    def pause_minute(self) -> int | None:
        """pauseAt in minutes after midnight."""
        return minutes(self.pause_text)

    @property
    def resume_minute(self) -> int | None:
        """resumeAt in minutes after midnight."""
        return minutes(self.resume_text)

    @property
    def days(self) -> tuple[int, ...] | None:
        """The listed weekdays (0=Sunday), sorted and distinct; None unless each is 0-6."""
        return None if self.listed_days is None else tuple(sorted(set(self.listed_days)))

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


def _distinct_tags(tags: tuple[Tag, ...]) -> tuple[Tag, ...]:
    """Good tags once each: a repeated tag would render a duplicate series."""
    seen: dict[tuple[str, str], Tag] = {}
    for tag in tags:
        if isinstance(tag, Tag):
            seen.setdefault((tag.label, tag.color), tag)
    return tuple(seen.values())


# An unreadable tag or record validates as None; Connection drops it (and any repeat).
Tags = Annotated[tuple[Annotated[Tag, Lenient(nothing)], ...], Lenient(lambda _: ())]
Schedule = Annotated[PauseSchedule | None, Lenient(nothing)]


def parse_pause_schedule(value: object) -> PauseSchedule | None:
    """A pause schedule, or None when the field is null or not an object."""
    return _SCHEDULE.validate_python(value) if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True, kw_only=True, config=API)
class Database:
    """One database instance as the API describes it; None marks a missing or bad field."""

    id: RecordId
    name: Name = ""
    customer_id: Uuid = None
    mysql_db: Text = None
    sync_mode: Text = None
    sync_interval: Number = None
    task_cpu: Number = None
    task_memory_mb: Number = None
    log_level: Text = None
    status: Text = None
    last_error: Raw = None
    endpoint_url: Text = None
    health_status: Text = None
    build_compute_override: Text = None
    instance_size: Text = None
    region: Text = None
    binlog_server_id: Number = None
    desired_state: Text = None
    custom_domain: Text = Field(None, alias="reflexdbCustomDomain")
    pause_schedule: Schedule = None
    tags: Tags = ()
    # Kept as the API's text and read when rendered: most polls re-render few records.
    created_iso: Raw = Field(None, alias="createdAt")
    updated_iso: Raw = Field(None, alias="updatedAt")

    @property
    def created_at(self) -> float | None:
        """createdAt as seconds since the epoch."""
        return timestamp(self.created_iso)

    @property
    def updated_at(self) -> float | None:
        """updatedAt as seconds since the epoch."""
        return timestamp(self.updated_iso)



# A record's fields by the names its readers use (the timestamps through their properties).
RECORD_FIELDS = tuple({"created_iso": "created_at", "updated_iso": "updated_at"}.get(name, name)
                      for name in (f.name for f in fields(Database)) if name not in ("id", "name"))


@dataclass(frozen=True, slots=True, kw_only=True, config=API)
class Connection:
    """A connection and the databases of one good answer."""

    name: Text = None
    customer_id: Uuid = None
    backend: Text = None
    host: Text = Field(None, alias="mysqlHost")
    port: Number = Field(None, alias="mysqlPort")
    available_schemas: Annotated[int | None, PlainValidator(count)] = None
    allowed_sync_modes: Annotated[tuple[str, ...] | None, PlainValidator(distinct_texts)] = None
    min_sync_interval: Number = None
    created_at: Timestamp = None
    updated_at: Timestamp = None
    databases: tuple[Annotated[Database, Lenient(nothing)], ...]
    invalid_databases: int = field(default=0, init=False)

    @model_validator(mode="after")
    def _databases_once(self) -> Connection:
        """Skip unreadable and repeated records and tags, counting the records.

        A repeat would render duplicate series. The tuples are replaced in place: nothing
        else holds these models yet.
        """
        records: dict[str, Database] = {}
        invalid = 0
        for db in self.databases:
            if not isinstance(db, Database) or db.id in records:
                invalid += 1
                continue
            records[db.id] = db
            if len(db.tags) > 1 or (db.tags and not isinstance(db.tags[0], Tag)):
                object.__setattr__(db, "tags", _distinct_tags(db.tags))
        if invalid:
            object.__setattr__(self, "databases", tuple(records.values()))
        object.__setattr__(self, "invalid_databases", invalid)
        return self


_CONNECTION = TypeAdapter(Connection)
_SCHEDULE = TypeAdapter(PauseSchedule)


def _invalid(error: ValidationError) -> InvalidResponse:
    """Why an answer failed whole: only its shape can fail it, every field is lenient."""
    locations = {e["loc"][:1] for e in error.errors()}
    if () in locations:
        return InvalidResponse("answer is not a JSON object")
    return InvalidResponse("answer has no databases list")


def _ascii_keys(value: object) -> object:
    """A JSON object without its non-ASCII keys, which no model reads; anything else as is."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if not isinstance(k, str) or k.isascii()}


def _readable(payload: dict[str, Any]) -> dict[str, Any]:
    """The objects the models read, without non-ASCII keys: pydantic-core refuses a whole
    object over a key with a lone surrogate (valid in Python's JSON), so such a key would
    otherwise fail its record. Values are left alone, and nothing is walked deeper."""
    top: dict[str, Any] = _ascii_keys(payload)  # type: ignore[assignment]  # a dict in, a dict out
    if isinstance(top.get("databases"), list):
        records = []
        for raw in top["databases"]:
            record = _ascii_keys(raw)
            if isinstance(record, dict):
                if isinstance(record.get("tags"), list):
                    record["tags"] = [_ascii_keys(tag) for tag in record["tags"]]
                record["pauseSchedule"] = _ascii_keys(record.get("pauseSchedule"))
            records.append(record)
        top["databases"] = records
    return top


def parse_connection(payload: object) -> Connection:
    """Read a decoded answer; only a non-object or a missing ``databases`` list fails it."""
    if not isinstance(payload, dict):
        raise InvalidResponse("answer is not a JSON object")
    try:
        return _CONNECTION.validate_python(_readable(payload))
    except ValidationError as exc:
        raise _invalid(exc) from None


def read_connection(body: bytes) -> Connection:
    """Read an answer straight from its bytes; raises ValueError when it is not JSON.

    JSON that pydantic's parser refuses is decoded by the standard library instead, so
    every answer Python can read is read as before.
    """
    try:
        return _CONNECTION.validate_json(body)
    except ValidationError as exc:
        if not any(e["type"] == "json_invalid" for e in exc.errors()):
            raise _invalid(exc) from None
    return parse_connection(json.loads(body))
