"""Property-based tests: any API answer renders to output that parses back to the same values,
and any YAML yields a config or an error that names a path."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import uuid
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, parse_config
from exporter.models import Database, parse_connection
from exporter.render import negotiate
from exporter.store import Store
from tests.conftest import parse_exposition

CONNECTION_ID = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"

# Every code point, lone surrogates included: JSON's "\ud800" escape produces them.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
numbers = st.one_of(st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=False), st.just(-0.0))
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)), max_leaves=8)


def _maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, json_values)


database_fields = {
    "id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), json_values),
    "name": _maybe(any_text), "customerId": _maybe(st.uuids().map(str)),
    "mysqlDb": _maybe(any_text), "syncMode": _maybe(st.sampled_from(["poll", "cdc"]) | any_text),
    "syncInterval": numbers, "taskCpu": numbers, "taskMemoryMb": numbers,
    "logLevel": _maybe(any_text), "status": _maybe(any_text), "lastError": _maybe(any_text),
    "endpointUrl": _maybe(any_text), "healthStatus": _maybe(any_text),
    "buildComputeOverride": _maybe(any_text), "instanceSize": _maybe(any_text),
    "region": _maybe(any_text), "binlogServerId": numbers, "desiredState": _maybe(any_text),
    "reflexdbCustomDomain": _maybe(any_text),
    "pauseSchedule": _maybe(st.fixed_dictionaries({
        "pauseAt": _maybe(st.sampled_from(["01:00", "23:59", "24:00"])),
        "resumeAt": _maybe(st.sampled_from(["05:30", "00:00"])),
        "days": _maybe(st.lists(st.integers(-1, 8), max_size=4))})),
    "tags": _maybe(st.lists(st.fixed_dictionaries({"label": _maybe(any_text),
                                                   "color": _maybe(any_text)}), max_size=3)),
    "createdAt": _maybe(st.datetimes().map(lambda d: d.isoformat()) | any_text),
    "updatedAt": _maybe(st.datetimes().map(lambda d: d.isoformat() + "Z") | any_text),
}
records = st.one_of(
    st.fixed_dictionaries({}, optional=database_fields),  # any subset of the fields
    json_values)
payloads = st.fixed_dictionaries(
    {"databases": st.lists(records, max_size=6)},
    optional={"name": _maybe(any_text), "mysqlHost": _maybe(any_text), "mysqlPort": numbers,
              "customerId": _maybe(any_text), "backend": _maybe(any_text),
              "availableSchemas": json_values, "allowedSyncModes": json_values,
              "minSyncInterval": numbers})


def _render(payload: dict[str, Any]) -> tuple[str, list[Database]]:
    data = parse_connection(payload)
    store = Store([CONNECTION_ID], stale_after=300)
    store.success(CONNECTION_ID, data, 0.01)
    return store.body(negotiate(None)).decode(), list(data.databases)


def _text(value: str) -> str:
    return value.encode("utf-8", "replace").decode()


def _same(parsed: float | None, expected: float | None) -> bool:
    if expected is None:
        return parsed is None
    return parsed is not None and (parsed == expected or (math.isinf(expected) and parsed
                                                          == expected))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_answer_parses_back_to_the_same_values(payload: dict[str, Any]) -> None:
    """Whatever the API sends, the output parses and carries the model's values exactly."""
    text, databases = _render(payload)
    scrape = parse_exposition(text)  # fails on a duplicate series or a syntax error
    for db in databases:
        ids = {"connection_id": CONNECTION_ID, "database_id": _text(db.id),
               "database_name": _text(db.name)}
        info = scrape.series("reflexdb_database_info", **ids)
        assert len(info) == 1
        assert info[0][0]["region"] == _text(db.region or "")
        assert info[0][0]["mysql_db"] == _text(db.mysql_db or "")
        assert _same(scrape.value("reflexdb_database_sync_interval_seconds", **ids),
                     db.sync_interval)
        assert _same(scrape.value("reflexdb_database_created_timestamp_seconds", **ids),
                     db.created_at)
        statuses = scrape.series("reflexdb_database_status", **ids)
        assert sum(v for _, v in statuses) == (0 if db.status is None else 1)
        health = scrape.series("reflexdb_database_health_status", **ids)
        assert sum(v for _, v in health) == 1
        tags = {(labels["tag"], labels["color"]) for labels, _ in
                scrape.series("reflexdb_database_tag_info", **ids)}
        assert tags == {(_text(t.label), _text(t.color)) for t in db.tags}
    assert scrape.value("reflexdb_connection_databases", connection_id=CONNECTION_ID) == len(
        databases)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_promtool_accepts_a_sample_of_outputs(payload: dict[str, Any]) -> None:
    """promtool check metrics accepts what arbitrary answers render to."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    text, _ = _render(payload)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.uuids(), min_size=1, max_size=5, unique=True),
       st.lists(st.uuids(), max_size=5, unique=True))
def test_series_always_equal_the_latest_answer(first: list[uuid.UUID],
                                               second: list[uuid.UUID]) -> None:
    """After any sequence of answers, exactly the latest answer's databases have series."""
    store = Store([CONNECTION_ID], stale_after=300)
    for ids in (first, second):
        store.success(CONNECTION_ID, parse_connection(
            {"databases": [{"id": str(i), "status": "running"} for i in ids]}), 0.01)
    scrape = parse_exposition(store.body(negotiate(None)).decode())
    exported = {labels["database_id"] for labels, _ in
                scrape.series("reflexdb_database_status")}
    assert exported == {str(i) for i in second}


config_keys = st.sampled_from(["api", "url", "token_file", "timeout", "max_concurrency",
                               "poll_interval", "stale_after", "connections", "id", "retries",
                               "max_response_size", "ca_file", "insecure_skip_verify", "x"])
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
              st.uuids().map(str), st.sampled_from(["5s", "1h", "0", "-1", "32MiB"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(config_keys | st.text(max_size=4), inner,
                                            max_size=4)),
    max_leaves=12)
PROBLEM = re.compile(r"^\S[^\n]*: \S")


@settings(max_examples=400, deadline=None)
@given(st.one_of(yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text()))
def test_any_yaml_is_a_config_or_names_a_path(text: str) -> None:
    """Any text yields a valid config or a ConfigError whose every line is path: message."""
    problems: list[str] = []
    try:
        parse_config(text)
    except ConfigError as exc:
        problems = exc.problems or ["(no problem listed)"]
    for problem in problems:
        assert PROBLEM.match(problem), problem
