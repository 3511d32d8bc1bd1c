"""The baseline: the usual first version of this exporter, written the textbook way.

A loop polls every configured connection with httpx, one after another, then clears its
labelled prometheus_client Gauges and sets them again from the answers; prometheus_client's own
``start_http_server`` serves them, running ``generate_latest`` on every scrape (and gzip, level
9, when the scraper asks for it). It reads the same config file as the real exporter (api.url,
api.token_file, poll_interval, connections) and takes the token from ``REFLEXDB_API_TOKEN``
otherwise.

It exports the same metric names and labels as ``exporter/metrics.py`` for the per-database
families and the main per-connection ones. It leaves out three families that need state or
clock logic (status_since, pause_window_active, last_failure_timestamp) and never exports the
extra series ours adds for values the API reference does not list, so it does slightly less
work than ours: every ratio against it is, if anything, in its favour.

Nothing here is slowed on purpose; it is simply the straightforward code.

    python -m benchmarks.naive --config.file=config.yaml --web.listen-address=127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import Counter, Gauge, start_http_server

STATUSES = ("registered", "building", "deploying", "running", "pausing", "paused", "resuming",
            "terminating", "terminated", "failed", "stopped")
HEALTH_STATUSES = ("ok", "degraded", "unreachable", "cap_exceeded", "unknown")
INSTANCE_SIZES = ("nano", "small", "medium", "large", "xlarge", "2xlarge")
SYNC_MODES = ("poll", "binlog", "logical", "cdc")
FAILURE_REASONS = ("timeout", "connect_error", "unauthorized", "forbidden", "not_found",
                   "rate_limited", "server_error", "client_error", "invalid_response")

CONN = ["connection_id"]
DB = ["connection_id", "database_id", "database_name"]

# Connection-level families.
UP = Gauge("reflexdb_connection_up", "1 if the latest poll of the connection succeeded.", CONN)
CONNECTION_INFO = Gauge("reflexdb_connection_info", "Connection details; always 1.",
                        [*CONN, "connection_name", "customer_id", "backend", "host", "port"])
DATABASES = Gauge("reflexdb_connection_databases", "Databases in the latest good answer.", CONN)
INVALID = Gauge("reflexdb_connection_invalid_databases", "Database records skipped.", CONN)
SCHEMAS = Gauge("reflexdb_connection_available_schemas", "Source schemas available.", CONN)
MIN_SYNC = Gauge("reflexdb_connection_min_sync_interval_seconds", "Shortest sync interval.",
                 CONN)
MODE_ALLOWED = Gauge("reflexdb_connection_sync_mode_allowed", "1 if the sync mode is allowed.",
                     [*CONN, "sync_mode"])
LAST_SUCCESS = Gauge("reflexdb_connection_last_success_timestamp_seconds",
                     "Unix time of the latest successful poll.", CONN)
POLL_DURATION = Gauge("reflexdb_connection_poll_duration_seconds",
                      "How long the latest poll took.", CONN)
POLLS = Counter("reflexdb_connection_polls", "Polls of the connection attempted.", CONN)
FAILURES = Counter("reflexdb_connection_poll_failures", "Failed polls, by reason.",
                   [*CONN, "reason"])

# Database-level families.
INFO = Gauge("reflexdb_database_info", "Database details; always 1.",
             [*DB, "customer_id", "mysql_db", "region", "log_level", "endpoint_url",
              "custom_domain", "build_compute_override"])
STATUS = Gauge("reflexdb_database_status", "Lifecycle status of the database.", [*DB, "status"])
HEALTH = Gauge("reflexdb_database_health_status", "Health of the database.",
               [*DB, "health_status"])
SIZE = Gauge("reflexdb_database_instance_size", "Instance size of the database.",
             [*DB, "instance_size"])
SYNC_MODE = Gauge("reflexdb_database_sync_mode", "Sync mode of the database.", [*DB, "sync_mode"])
SYNC_INTERVAL = Gauge("reflexdb_database_sync_interval_seconds", "Sync interval.", DB)
TASK_CPU = Gauge("reflexdb_database_task_cpu_vcpus", "vCPUs of the database's task.", DB)
TASK_MEMORY = Gauge("reflexdb_database_task_memory_bytes", "Memory of the database's task.", DB)
DESIRED = Gauge("reflexdb_database_desired_state", "The state the reconciler drives toward.",
                [*DB, "desired_state"])
LAST_ERROR = Gauge("reflexdb_database_last_error_present", "1 if the API reports an error.", DB)
CREATED = Gauge("reflexdb_database_created_timestamp_seconds", "createdAt as Unix time.", DB)
UPDATED = Gauge("reflexdb_database_updated_timestamp_seconds", "updatedAt as Unix time.", DB)
PAUSE_CONFIGURED = Gauge("reflexdb_database_pause_schedule_configured",
                         "1 if the database has a pause schedule.", DB)
PAUSE_INFO = Gauge("reflexdb_database_pause_schedule_info", "The pause schedule; always 1.",
                   [*DB, "pause_at", "resume_at", "days"])
TAGS = Gauge("reflexdb_database_tag_info", "A tag on the database; always 1.",
             [*DB, "tag", "color"])

CLEARED_EACH_POLL = (CONNECTION_INFO, MODE_ALLOWED, INFO, STATUS, HEALTH, SIZE, SYNC_MODE,
                     SYNC_INTERVAL, TASK_CPU, TASK_MEMORY, DESIRED, LAST_ERROR, CREATED,
                     UPDATED, PAUSE_CONFIGURED, PAUSE_INFO, TAGS)


def seconds(value: object) -> float:
    """``60s``, ``5m``, ``500ms`` or a number, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[
        match.group(2)]


def timestamp(value: object) -> float | None:
    """An ISO 8601 time as Unix seconds, or None."""
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def text(value: object) -> str:
    """A label value: None becomes the empty string."""
    return "" if value is None else str(value)


def one_hot(gauge: Gauge, labels: list[str], states: tuple[str, ...], current: object) -> None:
    """Set every state of a state set: 1 for the current one, 0 for the others."""
    for state in states:
        gauge.labels(*labels, state).set(1 if state == current else 0)


def set_database(connection_id: str, db: dict[str, Any]) -> None:
    """Set every database family from one record."""
    ids = [connection_id, str(db.get("id", "")).lower(), text(db.get("name"))]
    INFO.labels(*ids, text(db.get("customerId")).lower(), text(db.get("mysqlDb")),
                text(db.get("region")), text(db.get("logLevel")), text(db.get("endpointUrl")),
                text(db.get("reflexdbCustomDomain")),
                text(db.get("buildComputeOverride"))).set(1)
    one_hot(STATUS, ids, STATUSES, db.get("status"))
    one_hot(HEALTH, ids, HEALTH_STATUSES, db.get("healthStatus") or "unknown")
    one_hot(SIZE, ids, INSTANCE_SIZES, db.get("instanceSize"))
    one_hot(SYNC_MODE, ids, SYNC_MODES, db.get("syncMode"))
    if db.get("syncInterval") is not None:
        SYNC_INTERVAL.labels(*ids).set(db["syncInterval"])
    if db.get("taskCpu") is not None:
        TASK_CPU.labels(*ids).set(db["taskCpu"] / 1024)
    if db.get("taskMemoryMb") is not None:
        TASK_MEMORY.labels(*ids).set(db["taskMemoryMb"] * 1024 * 1024)
    if db.get("desiredState"):
        DESIRED.labels(*ids, db["desiredState"]).set(1)
    LAST_ERROR.labels(*ids).set(1 if db.get("lastError") else 0)
    for gauge, key in ((CREATED, "createdAt"), (UPDATED, "updatedAt")):
        when = timestamp(db.get(key))
        if when is not None:
            gauge.labels(*ids).set(when)
    schedule = db.get("pauseSchedule")
    PAUSE_CONFIGURED.labels(*ids).set(1 if schedule else 0)
    if isinstance(schedule, dict):
        days = ",".join(str(day) for day in schedule.get("days") or [])
        PAUSE_INFO.labels(*ids, text(schedule.get("pauseAt")), text(schedule.get("resumeAt")),
                          days).set(1)
    for tag in db.get("tags") or []:
        TAGS.labels(*ids, text(tag.get("label")), text(tag.get("color"))).set(1)


def set_connection(connection_id: str, answer: dict[str, Any]) -> None:
    """Set the connection families from one good answer."""
    CONNECTION_INFO.labels(connection_id, text(answer.get("name")),
                           text(answer.get("customerId")).lower(), text(answer.get("backend")),
                           text(answer.get("mysqlHost")), text(answer.get("mysqlPort"))).set(1)
    DATABASES.labels(connection_id).set(len(answer.get("databases") or []))
    INVALID.labels(connection_id).set(0)
    SCHEMAS.labels(connection_id).set(len(answer.get("availableSchemas") or []))
    if answer.get("minSyncInterval") is not None:
        MIN_SYNC.labels(connection_id).set(answer["minSyncInterval"])
    allowed = answer.get("allowedSyncModes") or []
    for mode in SYNC_MODES:
        MODE_ALLOWED.labels(connection_id, mode).set(1 if mode in allowed else 0)
    for db in answer.get("databases") or []:
        if isinstance(db, dict):
            set_database(connection_id, db)


def failure_reason(exc: Exception) -> str:
    """A poll failure's reason label."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "connect_error"
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        named = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}
        return named.get(code, "server_error" if code >= 500 else "client_error")
    return "invalid_response"


def poll_once(client: httpx.Client, url: str, connection_ids: list[str], token: str) -> int:
    """Fetch every connection, then clear and set the gauges; returns the good answers."""
    answers: dict[str, dict[str, Any]] = {}
    for connection_id in connection_ids:
        started = time.monotonic()
        POLLS.labels(connection_id).inc()
        try:
            response = client.get(f"{url}/connections/{connection_id}",
                                  headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            answers[connection_id] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            FAILURES.labels(connection_id, failure_reason(exc)).inc()
            UP.labels(connection_id).set(0)
        else:
            UP.labels(connection_id).set(1)
            LAST_SUCCESS.labels(connection_id).set(time.time())
        POLL_DURATION.labels(connection_id).set(time.monotonic() - started)
    for gauge in CLEARED_EACH_POLL:
        gauge.clear()
    for connection_id, answer in answers.items():
        set_connection(connection_id, answer)
    return len(answers)


def main(argv: list[str] | None = None) -> int:
    """Serve the gauges and poll until SIGTERM."""
    parser = argparse.ArgumentParser(prog="naive-exporter", description=__doc__.split("\n")[0])
    parser.add_argument("--config.file", dest="config_file", type=Path, required=True)
    parser.add_argument("--web.listen-address", dest="listen_address", default="127.0.0.1:9000")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config_file.read_text(encoding="utf-8"))
    api = config.get("api") or {}
    url = str(api.get("url", "https://api.reflexdb.cloud/v1")).rstrip("/")
    interval = seconds(config.get("poll_interval", "60s"))
    if api.get("token_file"):
        token = Path(api["token_file"]).read_text(encoding="utf-8").strip()
    else:
        token = os.environ["REFLEXDB_API_TOKEN"]
    connection_ids = [str(c["id"]).lower() for c in config["connections"]]
    for connection_id in connection_ids:
        for reason in FAILURE_REASONS:
            FAILURES.labels(connection_id, reason)

    host, _, port = args.listen_address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - only if asked to
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cycle = 0
    with httpx.Client(timeout=seconds(api.get("timeout", "10s"))) as client:
        while not stop.is_set():
            started = time.monotonic()
            good = poll_once(client, url, connection_ids, token)
            cycle += 1
            print(f"naive: poll cycle {cycle} done: {good}/{len(connection_ids)} connections "
                  f"in {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True)
            stop.wait(max(0.0, started + interval - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
