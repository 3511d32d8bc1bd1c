"""The metric contract, checked series by series against what the simulated API answered."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Exporter, Scrape, Simulator
from tests.oracle_models import parse_pause_schedule

pytestmark = pytest.mark.e2e

STATUSES = ["registered", "building", "deploying", "running", "pausing", "paused", "resuming",
            "terminating", "terminated", "failed", "stopped"]
HEALTH = ["ok", "degraded", "unreachable", "cap_exceeded", "unknown"]
SIZES = ["nano", "small", "medium", "large", "xlarge", "2xlarge"]
MODES = ["poll", "binlog", "logical", "cdc"]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _db_labels(connection_id: str, db: dict[str, Any]) -> dict[str, str]:
    return {"connection_id": connection_id.lower(), "database_id": db["id"].lower(),
            "database_name": db["name"]}


def _state_set(scrape: Scrape, name: str, label: str, states: list[str], current: str,
               *, ids: dict[str, str]) -> None:
    got = {labels[label]: value for labels, value in scrape.series(name, **ids)}
    assert got == {s: float(s == current) for s in states}, (name, ids)


def _pause_window(scrape: Scrape, db: dict[str, Any], ids: dict[str, str]) -> None:
    """pause_window_active is what the schedule says at the poll (now, or a minute ago at
    most): 0 without a schedule, absent when the schedule cannot be read."""
    value = scrape.value("reflexdb_database_pause_window_active", **ids)
    schedule = parse_pause_schedule(db["pauseSchedule"])
    if schedule is None:
        assert value == 0, (db["pauseSchedule"], value)
        return
    now, before = schedule.active(time.time()), schedule.active(time.time() - 60)
    if now is None:
        assert value is None, (db["pauseSchedule"], value)
    else:
        assert value in {float(now), float(bool(before))}, (db["pauseSchedule"], value)


@pytest.fixture
def scrape(simulator: Simulator, exporter: Exporter) -> Scrape:
    """A scrape taken once every connection has been polled successfully."""
    count = len(simulator.connection_ids)
    return exporter.wait_for(
        lambda s: sum(v for _, v in s.series("reflexdb_connection_up")) == count,
        what="every connection up")


def test_connection_series_match_the_api(simulator: Simulator, scrape: Scrape) -> None:
    """Every connection-level metric carries the answer's values under a lowercase connection_id."""
    for connection_id, answer in simulator.fleet().items():
        ids = {"connection_id": connection_id}
        assert connection_id == connection_id.lower()
        assert scrape.value("reflexdb_connection_up", **ids) == 1
        assert scrape.value(
            "reflexdb_connection_info", **ids, connection_name=answer["name"],
            customer_id=answer["customerId"].lower(), backend=answer["backend"],
            host=answer["mysqlHost"], port=str(answer["mysqlPort"])) == 1
        assert scrape.value("reflexdb_connection_databases", **ids) == len(answer["databases"])
        assert scrape.value("reflexdb_connection_invalid_databases", **ids) == 0
        assert scrape.value("reflexdb_connection_available_schemas", **ids) == len(
            answer["availableSchemas"])
        assert scrape.value("reflexdb_connection_min_sync_interval_seconds", **ids) == answer[
            "minSyncInterval"]
        allowed = {labels["sync_mode"]: v for labels, v in
                   scrape.series("reflexdb_connection_sync_mode_allowed", **ids)}
        assert allowed == {m: float(m in answer["allowedSyncModes"]) for m in MODES}
        last_success = scrape.value("reflexdb_connection_last_success_timestamp_seconds", **ids)
        assert last_success is not None
        assert abs(last_success - time.time()) < 30
        duration = scrape.value("reflexdb_connection_poll_duration_seconds", **ids)
        assert duration is not None
        assert 0 < duration < 2
        polls = scrape.value("reflexdb_connection_polls_total", **ids)
        assert polls is not None
        assert polls >= 1
        failures = {labels["reason"]: v for labels, v in
                    scrape.series("reflexdb_connection_poll_failures_total", **ids)}
        assert failures == dict.fromkeys(
            ["timeout", "connect_error", "unauthorized", "forbidden", "not_found",
             "rate_limited", "server_error", "client_error", "invalid_response"], 0.0)


def test_database_series_match_the_api(simulator: Simulator, scrape: Scrape) -> None:
    """Every database-level metric carries the record's values with the documented units."""
    checked = 0
    for connection_id, answer in simulator.fleet().items():
        for db in answer["databases"]:
            ids = _db_labels(connection_id, db)
            assert scrape.value(
                "reflexdb_database_info", **ids, customer_id=db["customerId"].lower(),
                mysql_db=db["mysqlDb"], region=db["region"], log_level=db["logLevel"],
                endpoint_url=db["endpointUrl"] or "",
                custom_domain=db["reflexdbCustomDomain"] or "",
                build_compute_override=db["buildComputeOverride"] or "") == 1
            _state_set(scrape, "reflexdb_database_status", "status", STATUSES, db["status"],
                       ids=ids)
            _state_set(scrape, "reflexdb_database_health_status", "health_status", HEALTH,
                       db["healthStatus"] or "unknown", ids=ids)
            _state_set(scrape, "reflexdb_database_instance_size", "instance_size", SIZES,
                       db["instanceSize"], ids=ids)
            _state_set(scrape, "reflexdb_database_sync_mode", "sync_mode", MODES, db["syncMode"],
                       ids=ids)
            assert scrape.value("reflexdb_database_sync_interval_seconds", **ids) == db[
                "syncInterval"]
            assert scrape.value("reflexdb_database_task_cpu_vcpus", **ids) == db["taskCpu"] / 1024
            assert scrape.value("reflexdb_database_task_memory_bytes", **ids) == db[
                "taskMemoryMb"] * 1048576
            desired = scrape.series("reflexdb_database_desired_state", **ids)
            if db["desiredState"] is None:
                assert desired == []
            else:
                assert desired == [({**ids, "desired_state": db["desiredState"]}, 1.0)]
            assert scrape.value("reflexdb_database_last_error_present", **ids) == float(
                db["lastError"] is not None)
            assert scrape.value("reflexdb_database_created_timestamp_seconds", **ids) == _ts(
                db["createdAt"])
            assert scrape.value("reflexdb_database_updated_timestamp_seconds", **ids) == _ts(
                db["updatedAt"])
            # First sighting: the status is taken to have begun at updatedAt.
            assert scrape.value("reflexdb_database_status_since_timestamp_seconds", **ids) == _ts(
                db["updatedAt"])
            assert scrape.value("reflexdb_database_pause_schedule_configured", **ids) == float(
                db["pauseSchedule"] is not None)
            _pause_window(scrape, db, ids)
            tags = {(labels["tag"], labels["color"]) for labels, value in
                    scrape.series("reflexdb_database_tag_info", **ids) if value == 1}
            assert tags == {(t["label"], t["color"]) for t in db["tags"]}
            checked += 1
    assert checked == 12


def test_build_info_and_types(scrape: Scrape) -> None:
    """build_info is 1 with version labels; counters are typed counter and the rest gauge."""
    build = scrape.series("reflexdb_exporter_build_info")
    assert len(build) == 1
    assert build[0][1] == 1
    assert set(build[0][0]) == {"version", "python_version"}
    assert scrape.types["reflexdb_connection_polls"] == "counter"
    assert scrape.types["reflexdb_connection_poll_failures"] == "counter"
    assert scrape.types["reflexdb_database_status"] == "gauge"
    assert "not fetched at scrape time" in scrape.helps["reflexdb_connection_up"]


def test_status_change_moves_status_since(simulator: Simulator, exporter: Exporter,
                                          scrape: Scrape) -> None:
    """A status change seen at a poll sets status_since to that poll's time, not updatedAt."""
    connection_id = simulator.connection_ids[0]
    db = simulator.databases(connection_id)[0]
    ids = _db_labels(connection_id, db)
    new_status = "failed" if db["status"] != "failed" else "running"
    before = time.time()
    simulator.patch_database(connection_id, db["id"], status=new_status)
    after = exporter.wait_for(
        lambda s: s.value("reflexdb_database_status", **ids, status=new_status) == 1,
        what="the new status")
    since = after.value("reflexdb_database_status_since_timestamp_seconds", **ids)
    assert since is not None
    assert before - 1 <= since <= time.time()
    assert after.value("reflexdb_database_updated_timestamp_seconds", **ids) == _ts(
        db["updatedAt"])


def test_pause_window_follows_the_schedule(simulator: Simulator, exporter: Exporter,
                                           scrape: Scrape) -> None:
    """A window around now reads 1, one across midnight that excludes now reads 0, days count."""
    connection_id = simulator.connection_ids[1]
    first, second, third = simulator.databases(connection_id)[:3]
    now = time.gmtime()
    minute = now.tm_hour * 60 + now.tm_min
    today = (now.tm_wday + 1) % 7
    if minute < 11 or minute > 1428:
        pytest.skip("too close to midnight UTC for the window arithmetic of this test")

    def hhmm(m: int) -> str:
        return f"{m // 60 % 24:02d}:{m % 60:02d}"

    # Opens 10 minutes ago today, closes in 10 minutes: active.
    simulator.patch_database(connection_id, first["id"], pauseSchedule={
        "pauseAt": hhmm(minute - 10), "resumeAt": hhmm(minute + 10), "days": [today]})
    # The complement window (opens in 10 minutes, closes 10 minutes ago, across midnight).
    simulator.patch_database(connection_id, second["id"], pauseSchedule={
        "pauseAt": hhmm(minute + 10), "resumeAt": hhmm(minute - 10), "days": []})
    # The same active hours, but only on another day of the week.
    simulator.patch_database(connection_id, third["id"], pauseSchedule={
        "pauseAt": hhmm(minute - 10), "resumeAt": hhmm(minute + 10), "days": [(today + 3) % 7]})
    # A poll may land between the patches: wait for one that has the last of them too.
    result = exporter.wait_for(
        lambda s: s.value("reflexdb_database_pause_window_active",
                          **_db_labels(connection_id, first)) == 1
        and s.value("reflexdb_database_pause_schedule_configured",
                    **_db_labels(connection_id, third)) == 1, what="window active")
    assert result.value("reflexdb_database_pause_window_active",
                        **_db_labels(connection_id, second)) == 0
    assert result.value("reflexdb_database_pause_window_active",
                        **_db_labels(connection_id, third)) == 0
    for db in (first, second, third):
        assert result.value("reflexdb_database_pause_schedule_configured",
                            **_db_labels(connection_id, db)) == 1


def test_last_error_present_follows_the_record(simulator: Simulator, exporter: Exporter,
                                              scrape: Scrape) -> None:
    """A database with lastError text shows last_error_present 1, the others 0; clearing the
    text brings it back to 0, and the text itself goes to the debug log only."""
    connection_id = simulator.connection_ids[0]
    target, other = simulator.databases(connection_id)[:2]
    ids, other_ids = _db_labels(connection_id, target), _db_labels(connection_id, other)
    text = "task exited: OutOfMemoryError (exit 137) marker-5a1d"
    assert scrape.value("reflexdb_database_last_error_present", **ids) == 0
    simulator.patch_database(connection_id, target["id"], lastError=text)
    failing = exporter.wait_for(lambda s: s.value(
        "reflexdb_database_last_error_present", **ids) == 1, what="last_error_present 1")
    assert failing.value("reflexdb_database_last_error_present", **other_ids) == float(
        other["lastError"] is not None)
    assert text not in failing.text  # a free text is never a label value
    logged = [line for line in exporter.logs().splitlines() if "marker-5a1d" in line]
    assert logged, exporter.logs()[-2000:]
    assert all("level=debug" in line for line in logged), logged
    simulator.patch_database(connection_id, target["id"], lastError=None)
    exporter.wait_for(lambda s: s.value("reflexdb_database_last_error_present", **ids) == 0,
                      what="last_error_present back to 0")
