"""How the exporter treats what the API says over time: removals, odd values, failures."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Exporter,
    Scrape,
    Simulator,
    exporter_config,
    free_port,
    patient_config,
)

pytestmark = pytest.mark.e2e


def _all_up(sim: Simulator) -> Callable[[Scrape], bool]:
    count = len(sim.connection_ids)
    return lambda s: sum(v for _, v in s.series("reflexdb_connection_up")) == count


def _series_of_database(scrape: Scrape, database_id: str) -> list[str]:
    return [name for name, labels in scrape.samples if ("database_id", database_id) in labels]


def test_removed_database_loses_every_series(simulator: Simulator, exporter: Exporter) -> None:
    """A database that leaves the API's answer has no series at all at the next scrape."""
    connection_id = simulator.connection_ids[0]
    victim = simulator.databases(connection_id)[1]["id"].lower()
    before = exporter.wait_for(_all_up(simulator))
    assert len(_series_of_database(before, victim)) > 20
    simulator.control("DELETE", f"connections/{connection_id}/databases/{victim}")
    after = exporter.wait_for(lambda s: not _series_of_database(s, victim), what="series gone")
    assert after.value("reflexdb_connection_databases", connection_id=connection_id.lower()) == 3


def test_unknown_enum_values_are_exported_and_logged_once(
        simulator: Simulator, exporter: Exporter) -> None:
    """A value outside the documented lists gets its own series at 1 and one log line."""
    connection_id = simulator.connection_ids[0]
    db = simulator.databases(connection_id)[0]
    ids = {"connection_id": connection_id.lower(), "database_id": db["id"].lower(),
           "database_name": db["name"]}
    simulator.patch_database(connection_id, db["id"], status="hibernating",
                             healthStatus="on_fire", instanceSize="4xlarge", syncMode="stream")
    scrape = exporter.wait_for(
        lambda s: s.value("reflexdb_database_status", **ids, status="hibernating") == 1)
    statuses = {labels["status"]: v for labels, v in
                scrape.series("reflexdb_database_status", **ids)}
    assert len(statuses) == 12
    assert statuses["hibernating"] == 1
    assert sum(statuses.values()) == 1
    assert scrape.value("reflexdb_database_health_status", **ids, health_status="on_fire") == 1
    assert scrape.value("reflexdb_database_health_status", **ids, health_status="unknown") == 0
    assert scrape.value("reflexdb_database_instance_size", **ids, instance_size="4xlarge") == 1
    assert scrape.value("reflexdb_database_sync_mode", **ids, sync_mode="stream") == 1
    polls_then = scrape.value("reflexdb_connection_polls_total", connection_id=ids["connection_id"])
    assert polls_then is not None
    exporter.wait_for(lambda s: (s.value("reflexdb_connection_polls_total",
                                         connection_id=ids["connection_id"]) or 0)
                      >= polls_then + 3, what="three more polls")
    logged = [line for line in exporter.logs().splitlines() if "value=hibernating" in line]
    assert len(logged) == 1
    assert "level=warn" in logged[0]


def test_skipped_records_are_counted_and_harmless(
        simulator: Simulator, exporter: Exporter) -> None:
    """Records that are not objects, lack an id or repeat one are skipped and counted."""
    connection_id = simulator.connection_ids[2]
    good = simulator.databases(connection_id)
    for junk in (42, "text", None, [], {}, {"id": None, "name": "x"}, {"name": "no id"},
                 {"id": 7}, dict(good[0])):
        simulator.control("POST", f"connections/{connection_id}/databases", junk)
    ids = {"connection_id": connection_id.lower()}
    scrape = exporter.wait_for(
        lambda s: s.value("reflexdb_connection_invalid_databases", **ids) == 9)
    assert scrape.value("reflexdb_connection_databases", **ids) == len(good)
    assert scrape.value("reflexdb_connection_up", **ids) == 1
    for db in good:
        assert _series_of_database(scrape, db["id"].lower())


def test_bad_fields_degrade_alone(simulator: Simulator, exporter: Exporter) -> None:
    """Wrong types leave out that field's series (or read unknown); the rest stays exported."""
    connection_id = simulator.connection_ids[0]
    db = simulator.databases(connection_id)[2]
    ids = {"connection_id": connection_id.lower(), "database_id": db["id"].lower(),
           "database_name": db["name"]}
    simulator.patch_database(
        connection_id, db["id"], syncInterval="fast", taskCpu=None, taskMemoryMb=True,
        healthStatus=7, createdAt="yesterday", tags="none", region=["eu"],
        pauseSchedule={"pauseAt": "25:00", "resumeAt": "01:00", "days": []},
        __delete__=["instanceSize", "updatedAt"])
    scrape = exporter.wait_for(
        lambda s: s.value("reflexdb_database_health_status", **ids, health_status="unknown") == 1)
    present = set(_series_of_database(scrape, ids["database_id"]))
    for gone in ("reflexdb_database_sync_interval_seconds", "reflexdb_database_task_cpu_vcpus",
                 "reflexdb_database_task_memory_bytes",
                 "reflexdb_database_created_timestamp_seconds",
                 "reflexdb_database_updated_timestamp_seconds", "reflexdb_database_instance_size",
                 "reflexdb_database_tag_info", "reflexdb_database_pause_window_active"):
        assert gone not in present, gone
    for kept in ("reflexdb_database_status", "reflexdb_database_sync_mode",
                 "reflexdb_database_status_since_timestamp_seconds",
                 "reflexdb_database_pause_schedule_configured"):
        assert kept in present, kept
    info = scrape.series("reflexdb_database_info", **ids)
    assert len(info) == 1
    assert info[0][0]["region"] == ""


def test_awkward_names_round_trip_exactly(simulator: Simulator, exporter: Exporter) -> None:
    """Quotes, backslashes, newlines and unicode in names come back unchanged through the parser."""
    connection_id = simulator.connection_ids[1]
    db = simulator.databases(connection_id)[0]
    name = 'say "hi"\\path\nnext line — café 数据库 🚀'
    tag = 'a"b\\c\nd'
    simulator.patch_database(connection_id, db["id"], name=name,
                             tags=[{"label": tag, "color": "red"}])
    simulator.control("PATCH", f"connections/{connection_id}", {"name": name})
    ids = {"connection_id": connection_id.lower(), "database_id": db["id"].lower(),
           "database_name": name}
    # Two patches: a poll may land between them, so wait for the second one too.
    scrape = exporter.wait_for(lambda s: s.value("reflexdb_database_tag_info", **ids, tag=tag,
                                                 color="red") == 1
                               and bool(s.series("reflexdb_connection_info",
                                                 connection_id=ids["connection_id"],
                                                 connection_name=name)))
    info = scrape.series("reflexdb_connection_info", connection_id=ids["connection_id"])
    assert info[0][0]["connection_name"] == name
    assert 'database_name="say \\"hi\\"\\\\path\\nnext line' in scrape.text


def test_ids_are_lowercase_whatever_the_case(simulator: Simulator,
                                             start_exporter: Callable[..., Exporter]) -> None:
    """Uppercase IDs in the config and in the API's answer are exported lowercase."""
    upper_ids = [cid for cid in simulator.connection_ids if cid.isupper()]
    assert upper_ids, "the simulator should answer some connections in uppercase"
    config = exporter_config(simulator, connections=[{"id": cid.upper()} for cid in
                                                     simulator.connection_ids])
    exporter = start_exporter(config)
    scrape = exporter.wait_for(_all_up(simulator))
    for (_, labels) in scrape.samples:
        for key, text in labels:
            if key in ("connection_id", "database_id", "customer_id"):
                assert text == text.lower(), (key, text)
                uuid.UUID(text)


@pytest.mark.parametrize(("fault", "reason"), [
    ({"status": 500, "body": "oops"}, "server_error"),
    ({"status": 503, "body": "<html>down</html>", "content_type": "text/html"}, "server_error"),
    ({"status": 401, "body": '{"error": "unauthorized"}'}, "unauthorized"),
    ({"status": 403, "body": '{"error": "forbidden"}'}, "forbidden"),
    ({"status": 429, "body": ""}, "rate_limited"),
    ({"status": 400, "body": '{"error": "bad"}'}, "client_error"),
    ({"status": 200, "body": "{not json"}, "invalid_response"),
    ({"status": 200, "body": '["a", "list"]'}, "invalid_response"),
    ({"status": 200, "body": '{"id": "x", "databases": "none"}'}, "invalid_response"),
    ({"status": 200, "body": '{"id": "x", "databases": [{"id": "a"}', "truncate": True},
     "invalid_response"),
    ({"status": 200, "body": "{}", "delay": 5}, "timeout"),
])
def test_failed_poll_counts_its_reason_and_keeps_series(
        simulator: Simulator, exporter: Exporter, fault: dict[str, object], reason: str) -> None:
    """A failed poll sets up to 0 at once, counts the reason, keeps database series, recovers."""
    connection_id = simulator.connection_ids[0]
    ids = {"connection_id": connection_id.lower()}
    other = {"connection_id": simulator.connection_ids[1].lower()}
    exporter.wait_for(_all_up(simulator))
    simulator.fault(connection_id, **fault)
    down = exporter.wait_for(
        lambda s: (s.value("reflexdb_connection_poll_failures_total", **ids, reason=reason) or 0)
        >= 1, what=f"a {reason} failure")
    assert down.value("reflexdb_connection_up", **ids) == 0
    assert down.value("reflexdb_connection_up", **other) == 1
    assert len(down.series("reflexdb_database_status", **ids)) == 4 * 11
    assert down.series("reflexdb_connection_info", **ids)
    simulator.clear_fault(connection_id)
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1, what="recovery")


def test_unknown_connection_counts_not_found(simulator: Simulator,
                                             start_exporter: Callable[..., Exporter]) -> None:
    """A connection the API does not know fails as not_found; the others are unaffected."""
    missing = str(uuid.uuid4())
    config = exporter_config(simulator, connections=[{"id": simulator.connection_ids[0]},
                                                     {"id": missing}])
    exporter = start_exporter(config)
    scrape = exporter.wait_for(lambda s: (s.value(
        "reflexdb_connection_poll_failures_total", connection_id=missing, reason="not_found")
        or 0) >= 1)
    assert scrape.value("reflexdb_connection_up", connection_id=missing) == 0
    assert scrape.series("reflexdb_connection_info", connection_id=missing) == []
    assert scrape.value("reflexdb_connection_up",
                        connection_id=simulator.connection_ids[0].lower()) == 1


def test_unreachable_api_counts_connect_error(tmp_path: Path,
                                              start_exporter: Callable[..., Exporter]) -> None:
    """An API address where nothing listens fails every poll as connect_error, and stays ready."""
    connection_id = str(uuid.uuid4())
    exporter = start_exporter({
        "api": {"url": f"http://127.0.0.1:{free_port()}/v1", "timeout": "2s"},
        "poll_interval": "0.5s", "connections": [{"id": connection_id}]})
    scrape = exporter.wait_for(lambda s: (s.value(
        "reflexdb_connection_poll_failures_total", connection_id=connection_id,
        reason="connect_error") or 0) >= 2)
    assert scrape.value("reflexdb_connection_up", connection_id=connection_id) == 0
    assert exporter.http.get("/-/ready").status_code == 200


def test_stale_database_series_expire(simulator: Simulator,
                                      start_exporter: Callable[..., Exporter]) -> None:
    """Database series of a failing connection go once stale_after passes; they return with it."""
    stale_after = 8.0  # long enough that the first scrape after the failure always falls in it
    exporter = start_exporter(exporter_config(simulator, stale_after=f"{stale_after:g}s"))
    connection_id = simulator.connection_ids[0]
    ids = {"connection_id": connection_id.lower()}
    exporter.wait_for(_all_up(simulator))
    simulator.fault(connection_id, status=502)
    failed_at = time.time()
    down = exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 0)
    seen_down = time.time()
    last_success = down.value("reflexdb_connection_last_success_timestamp_seconds", **ids)
    assert last_success is not None
    assert seen_down < last_success + stale_after - 1, "the failure took too long to show"
    assert down.series("reflexdb_database_status", **ids)  # failing, but not yet stale
    gone = exporter.wait_for(lambda s: not s.series("reflexdb_database_status", **ids),
                             timeout=30, what="stale series to go")
    assert time.time() >= last_success + stale_after - 0.2
    assert time.time() - failed_at < stale_after + 10
    assert gone.series("reflexdb_connection_info", **ids)
    assert gone.value("reflexdb_connection_databases", **ids) == 4
    other = simulator.connection_ids[1].lower()
    assert gone.series("reflexdb_database_status", connection_id=other)
    simulator.clear_fault(connection_id)
    exporter.wait_for(lambda s: len(s.series("reflexdb_database_status", **ids)) == 44,
                      what="series back after recovery")


def test_metrics_answer_while_the_api_hangs(simulator: Simulator,
                                            start_exporter: Callable[..., Exporter]) -> None:
    """With every API request hanging, scrapes still answer at once from the cache."""
    exporter = start_exporter(patient_config(simulator))
    exporter.wait_for(_all_up(simulator))
    simulator.hang()
    time.sleep(1.5)  # polls are now stuck inside the hanging requests
    for _ in range(5):
        started = time.monotonic()
        response = httpx.get(f"{exporter.url}/metrics", timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 2
        assert "reflexdb_database_status{" in response.text
