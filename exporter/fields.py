"""Field types of the API models: strict in pydantic-core, repaired in Python only when a
value fails, so that a bad field degrades alone."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, PlainValidator, Strict, StringConstraints
from pydantic_core import core_schema

# Cap label values taken from free-form API fields so one bad answer cannot bloat the output.
MAX_LABEL_LENGTH = 256
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


@dataclass(frozen=True, slots=True)
class Lenient:
    """Validate strictly in pydantic-core; only a value that fails is repaired in Python.

    A good answer never leaves Rust, so the fallback costs nothing until a field is bad.
    """

    repair: Callable[[Any], Any]

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """A left-to-right union: the strict schema first, then the repair."""
        return core_schema.union_schema(
            [handler(source), core_schema.no_info_plain_validator_function(self.repair)],
            mode="left_to_right")


def canonical_id(value: object) -> str | None:
    """Lowercase canonical UUID text, or the trimmed lowercase text if it is no UUID."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return value.strip().lower()[:MAX_LABEL_LENGTH]


def record_id(value: object) -> str:
    """A database's canonical ID; a record without one fails and is counted as invalid."""
    database_id = canonical_id(value)
    if database_id is None:
        raise ValueError("record has no id")
    return database_id


def cut(value: object) -> str | None:
    """A string cut at MAX_LABEL_LENGTH, or None for anything else."""
    return value[:MAX_LABEL_LENGTH] if isinstance(value, str) else None


def number(value: object) -> float | None:
    """A finite number as a float, or None (bools, strings, overflows, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def timestamp(value: object) -> float | None:
    """ISO 8601 text as Python reads it, in seconds since the epoch; a naive time is UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def minutes(value: object) -> int | None:
    """Minutes after midnight for ``HH:MM``, or None."""
    if not isinstance(value, str) or len(value.strip()) != 5 or value.strip()[2] != ":":
        return None
    hours, mins = value.strip()[:2], value.strip()[3:]
    if not (hours.isdigit() and mins.isdigit()):
        return None
    if int(hours) > 23 or int(mins) > 59:
        return None
    return int(hours) * 60 + int(mins)


def nothing(_: object) -> None:
    """None, whatever was sent: the repair of a field with no better reading."""


def tag_label(value: object) -> str:
    """A tag's label, cut; a tag without a text label fails and is skipped."""
    if not isinstance(value, str):
        raise ValueError("tag without a text label")  # the tag is skipped
    return value[:MAX_LABEL_LENGTH]


def count(value: object) -> int | None:
    """How many items a list has, or None for anything else."""
    return len(value) if isinstance(value, list) else None


def distinct_texts(value: object) -> tuple[str, ...] | None:
    """The strings of a list, cut, once each in order; None for anything but a list."""
    if not isinstance(value, list):
        return None
    return tuple(dict.fromkeys(m[:MAX_LABEL_LENGTH] for m in value if isinstance(m, str)))


ShortText = Annotated[str, Strict(), StringConstraints(max_length=MAX_LABEL_LENGTH)]
# Free text, cut at MAX_LABEL_LENGTH; None when missing or not a string.
Text = Annotated[ShortText | None, Lenient(cut)]
Name = Annotated[ShortText, Lenient(lambda value: cut(value) or "")]
# A finite number; a bool, a string, an overflow or a non-finite value reads as None.
Number = Annotated[Annotated[float, Strict(), Field(allow_inf_nan=False)] | None,
                   Lenient(number)]
# A canonical UUID, lowered in Rust; anything else is repaired in Python.
_UuidText = Annotated[str, Strict(), StringConstraints(pattern=_UUID, to_lower=True)]
Uuid = Annotated[_UuidText | None, Lenient(canonical_id)]
RecordId = Annotated[_UuidText, Lenient(record_id)]
# ISO 8601 as Python reads it; a naive time is UTC.
Timestamp = Annotated[float | None, PlainValidator(timestamp)]
Raw = Annotated[Annotated[str, Strict()] | None, Lenient(nothing)]  # uncut, read later
Day = Annotated[int, Strict(), Field(ge=0, le=6)]
