"""Turn the YAML config file's text into validated, immutable objects (no I/O here)."""

from __future__ import annotations

import json
import math
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_API_URL = "https://api.reflexdb.cloud/v1"
# Below this poll interval a real account with many connections risks its API rate limit.
RATE_LIMIT_WARNING_SECONDS = 15.0

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_UNIT_BYTES = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024,
               "MiB": 1024**2, "GiB": 1024**3}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists ``path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> float:
    """Read ``500ms``, ``30s``, ``5m``, ``1h`` or a plain number as seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("not a duration (use 500ms, 30s, 5m, 1h or a number of seconds)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def parse_size(value: object) -> int:
    """Read ``512KiB``, ``32MiB``, ``1GB`` or a plain number as bytes."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    else:
        raise ValueError("not a size (use 512KiB, 32MiB, 1GiB or a number of bytes)")
    if size < 1024:
        raise ValueError("must be at least 1KiB")
    return size


def canonical_uuid(value: object) -> str:
    """Return a UUID as lowercase canonical text, whatever case or braces it came with."""
    if not isinstance(value, str):
        raise ValueError("not a UUID")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError("not a UUID") from None


M = TypeVar("M", bound=BaseModel)
Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
ConnectionId = Annotated[str, BeforeValidator(canonical_uuid)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Strict):
    """How to reach the ReflexDB control-plane API."""

    url: str = DEFAULT_API_URL
    token_file: Path | None = None
    timeout: Duration = 10.0
    max_concurrency: int = Field(default=8, ge=1, le=256)
    retries: int = Field(default=2, ge=0, le=5)
    # Requests per second at most, per token (retries included); None: only max_concurrency.
    requests_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_response_size: ByteSize = 32 * 1024 * 1024
    ca_file: Path | None = None
    insecure_skip_verify: StrictBool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http:// or https:// URL")
        return value.rstrip("/")


class ConnectionConfig(_Strict):
    """One ReflexDB connection to poll, optionally under another account's token."""

    id: ConnectionId
    token_file: Path | None = None


class Config(_Strict):
    """The whole exporter configuration."""

    api: ApiConfig = ApiConfig()
    poll_interval: Duration = 60.0
    stale_after: Duration = 300.0
    connections: list[ConnectionConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_connections(self) -> Config:
        first: dict[str, int] = {}
        problems = []
        for index, connection in enumerate(self.connections):
            if connection.id in first:
                problems.append(
                    f"connections[{index}].id: duplicate of connections[{first[connection.id]}]"
                )
            first.setdefault(connection.id, index)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``connections[2].id``."""
    text = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif str(part).startswith(("function-", "constrained-")):
            continue
        elif _KEY.fullmatch(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part), ensure_ascii=False)}]"  # an odd key, quoted
    return text or "(top level)"


def _message(error: Any) -> str:
    """Say what is wrong without echoing the value, which may be a secret."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short" and error["loc"] == ("connections",):
        return "at least one connection is required"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(text: str) -> Config:
    """Validate config text, raising ``ConfigError`` that names every bad key by its path."""
    return parse_yaml(text, Config)


def _duplicate_keys(node: yaml.Node, loc: tuple[int | str, ...] = ()) -> list[str]:
    """``path: duplicate key`` for every key given twice in one mapping, at any depth."""
    problems = []
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child = (*loc, key) if isinstance(key, str) else loc
            if isinstance(key, str) and key != "<<":  # merge keys may repeat by design
                if key in seen:
                    problems.append(f"{_path(child)}: duplicate key")
                seen.add(key)
            problems.extend(_duplicate_keys(value_node, child))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, (*loc, index)))
    return problems


def _load(text: str) -> object:
    """Parse YAML safely, refusing duplicate keys (PyYAML keeps the last one silently)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if problems := _duplicate_keys(node):
            raise ConfigError(problems)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_yaml(text: str, model: type[M]) -> M:
    """Validate YAML text against a model; ConfigError names every bad key by its path."""
    try:
        data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{where}: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): expected a mapping of keys"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc)) from None


def validation_problems(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        message = _message(error)
        if not error["loc"] and message.startswith("connections["):
            problems.extend(message.split("; "))  # model-level checks name their own paths
        else:
            problems.append(f"{_path(error['loc'])}: {message}")
    return problems
