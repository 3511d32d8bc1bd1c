"""The store's incremental output equals a from-scratch build, plain and gzipped."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
import uuid
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import assembly, deflate
from exporter import store as store_module
from exporter.layout import FULL
from exporter.metrics import API_METRICS, DATABASE_METRICS, EXPORTER_METRICS
from exporter.models import parse_connection
from exporter.priority import Gate
from exporter.render import label_block, negotiate, sample_lines
from exporter.spec import IDENTITY_LABELS, DatabaseView
from exporter.store import Store
from tests.conftest import parse_exposition

IDS = [str(uuid.UUID(int=n + 1)) for n in range(5)]
TAIL = b"# HELP tail_metric A tail.\n# TYPE tail_metric gauge\ntail_metric 1\n"

statuses = st.sampled_from(["running", "failed", "paused", "hibernating", None])
# Every other field the metrics read, each drawn from a couple of values, so a family whose
# declared ``reads`` missed a field would keep stale lines and differ from the reference.
other_fields = st.fixed_dictionaries({}, optional={
    "customerId": st.sampled_from([str(uuid.UUID(int=77)), "x"]),
    "mysqlDb": st.sampled_from(["a", "b"]), "region": st.sampled_from(["eu", "us"]),
    "logLevel": st.sampled_from(["info", "debug"]), "endpointUrl": st.sampled_from(["u", None]),
    "reflexdbCustomDomain": st.sampled_from(["d", None]),
    "buildComputeOverride": st.sampled_from(["L", None]),
    "healthStatus": st.sampled_from(["ok", "degraded", None]),
    "instanceSize": st.sampled_from(["nano", "large"]), "syncMode": st.sampled_from(["poll"]),
    "syncInterval": st.sampled_from([60, 120]), "taskCpu": st.sampled_from([256, 512]),
    "taskMemoryMb": st.sampled_from([512, 1024]), "desiredState": st.sampled_from(["x", None]),
    "lastError": st.sampled_from(["e", None]),
    "createdAt": st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]),
    "updatedAt": st.sampled_from(["2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]),
    "pauseSchedule": st.sampled_from([None, {"pauseAt": "bad", "resumeAt": "01:00",
                                             "days": []}]),
    "tags": st.sampled_from([[], [{"label": "t", "color": "red"}]]),
})
databases = st.lists(st.tuples(st.integers(0, 6), statuses, st.text(max_size=8), other_fields),
                     max_size=4)
events = st.lists(st.tuples(
    st.sampled_from(IDS), st.sampled_from(["success", "unchanged", "failure", "expire"]),
    databases), min_size=1, max_size=25)


def _answer(records: list[tuple[int, Any, str, dict[str, Any]]]) -> Any:
    return parse_connection({"name": "c", "databases": [
        {**other, "id": str(uuid.UUID(int=1000 + n)), "status": status, "name": name}
        for n, status, name, other in records]})


def _reference(store: Store, fmt: Any) -> bytes:
    """The body rendered from scratch: every family's header, then each connection's lines."""
    exporter = "".join(fmt.header(s) + sample_lines(s, "", store.exporter)
                       for s in EXPORTER_METRICS)
    rows = {}
    for state in store.states.values():
        rendered = store.rendered[state.id]
        databases = [b""] * len(DATABASE_METRICS)
        if rendered.serving_databases:
            assert state.data is not None
            databases = ["".join(sample_lines(spec, label_block(
                IDENTITY_LABELS["database"], (state.id, db.id, db.name)), DatabaseView(
                db, state.status_since[db.id][1], 0)) for db in state.data.databases).encode()
                for spec in DATABASE_METRICS]
        rows[state.id] = (*rendered.stable[:FULL.first_database_family], *databases)
    out = [exporter.encode()]
    for family, spec in enumerate(FULL.stable_families):
        out.append(fmt.header(spec).encode())
        out.extend(row[family] for row in rows.values())
    for family, spec in enumerate(FULL.every_poll):
        out.append(fmt.header(spec).encode())
        out.extend(r.every_poll_chunks[family] for r in store.rendered.values())
    for api in API_METRICS:
        out.append(fmt.header(api).encode())
        out.extend(sample_lines(api, label_block(IDENTITY_LABELS["api"], (v.token_source,)),
                                v).encode() for v in store.api)
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(events)
def test_incremental_output_equals_a_fresh_build(sequence: list[tuple[str, str, Any]]) -> None:
    """After any sequence of polls, blocks maintained incrementally match a rebuild, in both
    formats, and the gzip answer is one stream that decodes to the plain answer."""
    store = Store(IDS, stale_after=0.0)
    for connection_id, kind, records in sequence:
        state = store.states[connection_id]
        if kind == "success" or (kind == "unchanged" and state.data is None):
            store.success(connection_id, _answer(records), 0.01)
        elif kind == "unchanged":
            store.unchanged(connection_id, 0.01)
        elif kind == "failure":
            store.failure(connection_id, "timeout", 0.01)  # stale_after 0: expires at scrape
        else:
            store.body(negotiate(None))
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        fmt = negotiate(accept)
        plain = store.body(fmt)
        assert plain == _reference(store, fmt)
        store.set_connections(list(store.states))  # a reload keeps every series as it was
        assert store.body(fmt) == plain
        compressed = b"".join(store.gzip(fmt, TAIL))
        one_member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one_member.decompress(compressed) == plain + TAIL
        assert one_member.eof
        assert one_member.unused_data == b""
        assert gzip.decompress(compressed) == plain + TAIL
    store.set_connections(IDS[1:4])  # a reload drops exactly the removed connections' series
    assert store.body(negotiate(None)) == _reference(store, negotiate(None))


def test_unchanged_data_is_not_rebuilt() -> None:
    """A poll whose answer renders the same bytes leaves the stable section's cache intact."""
    store = Store(IDS[:3], stale_after=300)
    store.success(IDS[0], _answer([(1, "running", "a", {})]), 0.01)
    fmt = negotiate(None)
    first = store.parts(fmt)
    store.unchanged(IDS[0], 0.02)
    store.success(IDS[0], _answer([(1, "running", "a", {})]), 0.03)
    second = store.parts(fmt)
    assert all(a is b for a, b in zip(first[:-1], second[:-1], strict=True))
    assert first[-1] != second[-1]  # the every-poll section (counters, timestamps) moved


def test_pause_window_moves_on_an_unchanged_answer(monkeypatch: Any) -> None:
    """A byte-identical answer still re-evaluates pause windows at the poll's time."""
    inside, outside = 1_795_000_000.0, 1_795_000_000.0 + 6 * 3600  # window 01:00-05:00 UTC
    hour = int(inside // 3600 % 24)
    answer = parse_connection({"databases": [{"id": str(uuid.UUID(int=5)), "name": "d",
                                              "pauseSchedule": {"pauseAt": f"{hour:02d}:00",
                                                                "resumeAt": f"{hour + 4:02d}:00",
                                                                "days": []}}]})
    store = Store(IDS[:1], stale_after=300)
    monkeypatch.setattr(store_module.time, "time", lambda: inside)
    store.success(IDS[0], answer, 0.01)

    def window() -> float | None:
        scrape = parse_exposition(store.body(negotiate(None)).decode())
        return scrape.value("reflexdb_database_pause_window_active", connection_id=IDS[0],
                            database_id=str(uuid.UUID(int=5)), database_name="d")

    assert window() == 1
    monkeypatch.setattr(store_module.time, "time", lambda: outside)
    store.unchanged(IDS[0], 0.01)
    assert window() == 0


FIELD_CHANGES = {
    "customerId": (str(uuid.UUID(int=77)), str(uuid.UUID(int=78))), "mysqlDb": ("a", "b"),
    "region": ("eu", "us"), "logLevel": ("info", "debug"), "endpointUrl": ("u", None),
    "reflexdbCustomDomain": ("d", None), "buildComputeOverride": ("L", None),
    "healthStatus": ("ok", "degraded"), "instanceSize": ("nano", "large"),
    "syncMode": ("poll", "cdc"), "syncInterval": (60, 120), "taskCpu": (256, 512),
    "taskMemoryMb": (512, 1024), "desiredState": ("running", None), "lastError": ("e", None),
    "createdAt": ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
    "updatedAt": ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
    "pauseSchedule": (None, {"pauseAt": "bad", "resumeAt": "01:00", "days": []}),
    "tags": ([], [{"label": "t", "color": "red"}]), "status": ("running", "failed"),
    "binlogServerId": (1, 2),
}


def test_field_changes_cover_every_record_field() -> None:
    """The table below names every field of the API's database record that the models read."""
    assert len(FIELD_CHANGES) == len(store_module._RECORD_FIELDS)


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_a_change_in_one_field_reaches_every_family_that_reads_it(field: str) -> None:
    """Changing one field re-renders exactly what depends on it: the output equals a fresh
    render, so no family's declared ``reads`` misses a field it shows."""
    before, after = FIELD_CHANGES[field]
    base = {"id": str(uuid.UUID(int=9)), "name": "n", "status": "running"}
    store = Store(IDS[:1], stale_after=300)
    store.success(IDS[0], parse_connection({"databases": [{**base, field: before}]}), 0.01)
    store.success(IDS[0], parse_connection({"databases": [{**base, field: after}]}), 0.01)
    fmt = negotiate(None)
    assert store.body(fmt) == _reference(store, fmt)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_matches_zlib(first: bytes, second: bytes) -> None:
    """The CRC of a concatenation derived from the pieces' CRCs equals zlib's own."""
    assert deflate.crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == (
        zlib.crc32(first + second))


def test_background_assembly_catches_up_and_keeps_scrapes_consistent() -> None:
    """With background assembly, a scrape sends the last assembled section, then the new one
    within a period or two; readiness waits for it, and gzip stays one valid stream."""
    store = Store(IDS[:2], stale_after=300)
    fmt = negotiate(None)
    store.success(IDS[0], _answer([(1, "running", "a", {})]), 0.01)
    before = store.section(fmt)  # assembled now: no background assembly runs yet

    async def scenario() -> None:
        task = asyncio.create_task(store.assemble_in_background(0.05, Gate()))
        await asyncio.sleep(0)
        try:
            store.success(IDS[1], _answer([(2, "failed", "b", {})]), 0.01)
            assert store.section(fmt) is before  # not reassembled on the scrape's time
            assert not store.ready  # every connection polled, but the output lags
            deadline = time.monotonic() + 5
            while store.section(fmt) is before:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert store.ready
            assert store.body(fmt) == _reference(store, fmt)
            assert gzip.decompress(b"".join(store.gzip(fmt, TAIL))) == store.body(fmt) + TAIL
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_failed_background_assembly_hands_over_to_scrapes(monkeypatch: Any,
                                                          caplog: Any) -> None:
    """If a background assembly raises, it is logged and scrapes assemble current data again."""
    store = Store(IDS[:1], stale_after=300)
    fmt = negotiate(None)
    before = store.section(fmt)
    real, calls = assembly.assemble, []

    def failing_once(plan: Any) -> Any:
        calls.append(plan)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(plan)

    monkeypatch.setattr(assembly, "assemble", failing_once)

    async def scenario() -> None:
        task = asyncio.create_task(store.assemble_in_background(0.01, Gate()))
        store.success(IDS[0], _answer([(3, "running", "c", {})]), 0.01)
        await asyncio.wait_for(task, 5)  # it stops rather than retry a bug for ever

    asyncio.run(scenario())
    assert "background assembly failed" in caplog.text
    assert store.section(fmt) is not before
    assert store.body(fmt) == _reference(store, fmt)
