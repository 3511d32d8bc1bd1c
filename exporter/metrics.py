"""The metric contract: one declarative list drives rendering, HELP/TYPE headers and the docs."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable

from exporter import __version__
from exporter.models import (
    HEALTH_STATUSES,
    INSTANCE_SIZES,
    STATUSES,
    SYNC_MODES,
    Connection,
    Database,
)
from exporter.spec import (
    ApiView,
    ConnectionView,
    DatabaseView,
    ExporterView,
    MetricSpec,
    Sample,
    info,
    info_labels,
    note_unlisted,
    state_set,
    value,
)

FAILURE_REASONS = ("timeout", "connect_error", "unauthorized", "forbidden", "not_found",
                   "rate_limited", "server_error", "client_error", "invalid_response")
CACHE_NOTE = " Served from the exporter's cache of the latest poll, not fetched at scrape time."


def _connection_samples(read: Callable[[Connection], float | None]) -> Callable[
        [ConnectionView], Iterable[Sample]]:
    """One sample from the last good answer, absent before the first success."""
    return value(lambda v: None if v.data is None else read(v.data))


def _sync_modes_allowed(view: ConnectionView) -> Iterable[Sample]:
    if view.data is None or view.data.allowed_sync_modes is None:
        return ()
    allowed = view.data.allowed_sync_modes
    out = [((mode,), 1.0 if mode in allowed else 0.0) for mode in SYNC_MODES]
    for mode in allowed:
        if mode not in SYNC_MODES:
            note_unlisted("reflexdb_connection_sync_mode_allowed", mode)
            out.append(((mode,), 1.0))
    return out


def _connection_info(view: ConnectionView) -> Iterable[Sample]:
    if view.data is None:
        return ()
    d = view.data
    return ((info_labels((d.name, d.customer_id, d.backend, d.host, d.port)), 1.0),)


def _tags(view: DatabaseView) -> Iterable[Sample]:
    return [((tag.label, tag.color), 1.0) for tag in view.db.tags]


def _pause_window(view: DatabaseView) -> float | None:
    schedule = view.db.pause_schedule
    if schedule is None:
        return 0.0
    active = schedule.active(view.now)
    return None if active is None else float(active)


def _pause_schedule_info(view: DatabaseView) -> Iterable[Sample]:
    schedule = view.db.pause_schedule
    if schedule is None:
        return ()
    days = "" if schedule.days is None else ",".join(str(d) for d in schedule.days)
    return (((schedule.pause_at, schedule.resume_at, days), 1.0),)


def _desired_state(view: DatabaseView) -> Iterable[Sample]:
    desired = view.db.desired_state
    return () if desired is None else (((desired,), 1.0),)


def _scaled(read: Callable[[Database], float | None], factor: float) -> Callable[
        [DatabaseView], float | None]:
    def scaled(view: DatabaseView) -> float | None:
        number = read(view.db)
        return None if number is None else number * factor

    return scaled


# Seconds from sending an API request to its whole answer.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

API_METRICS: tuple[MetricSpec[ApiView], ...] = (
    MetricSpec("reflexdb_api_requests_total", "counter",
               "API requests sent with this token, by HTTP status code; code=\"error\" when no "
               "answer came (a timeout or a connection error).",
               "api", ("code",), lambda v: [((code,), float(n)) for code, n in v.requests]),
    MetricSpec("reflexdb_api_request_duration_seconds", "histogram",
               "Time from sending an API request to its whole answer.",
               "api", (), lambda v: [((), float(n)) for n in v.buckets], bounds=DURATION_BUCKETS,
               total=lambda v: v.duration_sum),
    MetricSpec("reflexdb_api_requests_per_second_limit", "gauge",
               "The request budget in force for this token now (api.requests_per_second, or "
               "less after a 429 without Retry-After); absent when there is none.",
               "api", (), value(lambda v: v.limit)),
    MetricSpec("reflexdb_api_paused_until_timestamp_seconds", "gauge",
               "Unix time until which a 429's Retry-After stops every request with this "
               "token; 0 when not paused.",
               "api", (), value(lambda v: v.paused_until)),
    MetricSpec("reflexdb_api_budget_wait_seconds_total", "counter",
               "Seconds that polls with this token spent waiting for its budget.",
               "api", (), value(lambda v: v.waited)),
)

EXPORTER_METRICS: tuple[MetricSpec[ExporterView], ...] = (
    MetricSpec("reflexdb_exporter_build_info", "gauge",
               "Version of the exporter and of the Python that runs it; always 1.",
               "exporter", ("version", "python_version"),
               info(lambda _: __version__, lambda _: platform.python_version())),
    MetricSpec("reflexdb_exporter_connections", "gauge",
               "Connections this exporter polls (its shard's share of the config).",
               "exporter", (), value(lambda v: v.connections)),
    MetricSpec("reflexdb_exporter_config_last_reload_successful", "gauge",
               "1 if the latest config (re)load succeeded, 0 if it was refused and the "
               "previous config still runs.",
               "exporter", (), value(lambda v: v.reload_ok)),
    MetricSpec("reflexdb_exporter_config_last_reload_success_timestamp_seconds", "gauge",
               "Unix time of the latest successful config load.",
               "exporter", (), value(lambda v: v.reload_time)),
    MetricSpec("reflexdb_exporter_shard_ordinal", "gauge",
               "Which shard of the connections this replica polls (--shard).",
               "exporter", (), value(lambda v: v.shard)),
    MetricSpec("reflexdb_exporter_total_shards", "gauge",
               "How many replicas share the connections (--total-shards).",
               "exporter", (), value(lambda v: v.total_shards)),
)

CONNECTION_METRICS: tuple[MetricSpec[ConnectionView], ...] = (
    MetricSpec("reflexdb_connection_up", "gauge",
               "1 if the latest poll of the connection succeeded, else 0 (also 0 before the "
               "first poll)." + CACHE_NOTE,
               "connection", (), value(lambda v: v.up)),
    MetricSpec("reflexdb_connection_info", "gauge",
               "Connection details from the latest good answer; always 1.",
               "connection", ("connection_name", "customer_id", "backend", "host", "port"),
               _connection_info),
    MetricSpec("reflexdb_connection_databases", "gauge",
               "Databases in the latest good answer.",
               "connection", (), _connection_samples(lambda c: len(c.databases))),
    MetricSpec("reflexdb_connection_invalid_databases", "gauge",
               "Database records skipped in the latest good answer (not an object, no id, "
               "or a repeated id).",
               "connection", (), _connection_samples(lambda c: c.invalid_databases)),
    MetricSpec("reflexdb_connection_available_schemas", "gauge",
               "Source schemas available to instances on the connection (availableSchemas).",
               "connection", (), _connection_samples(lambda c: c.available_schemas)),
    MetricSpec("reflexdb_connection_min_sync_interval_seconds", "gauge",
               "Shortest sync interval instances on the connection may use.",
               "connection", (), _connection_samples(lambda c: c.min_sync_interval)),
    MetricSpec("reflexdb_connection_sync_mode_allowed", "gauge",
               "1 if instances on the connection may use the sync mode, else 0.",
               "connection", ("sync_mode",), _sync_modes_allowed),
    MetricSpec("reflexdb_connection_last_success_timestamp_seconds", "gauge",
               "Unix time of the latest successful poll of the connection.",
               "connection", (), value(lambda v: v.last_success), every_poll=True),
    MetricSpec("reflexdb_connection_last_failure_timestamp_seconds", "gauge",
               "Unix time of the latest failed poll of the connection.",
               "connection", (), value(lambda v: v.last_failure), every_poll=True),
    MetricSpec("reflexdb_connection_poll_duration_seconds", "gauge",
               "How long the latest poll of the connection took.",
               "connection", (), value(lambda v: v.poll_duration), every_poll=True),
    MetricSpec("reflexdb_connection_polls_total", "counter",
               "Polls of the connection attempted.",
               "connection", (), value(lambda v: v.polls), every_poll=True),
    MetricSpec("reflexdb_connection_poll_retries_total", "counter",
               "Requests repeated within a poll after a server error or connection error.",
               "connection", (), value(lambda v: v.retries)),
    MetricSpec("reflexdb_connection_poll_failures_total", "counter",
               "Failed polls of the connection, by reason.",
               "connection", ("reason",),
               lambda v: [((r,), float(v.failures.get(r, 0))) for r in FAILURE_REASONS]),
)

DATABASE_METRICS: tuple[MetricSpec[DatabaseView], ...] = (
    MetricSpec("reflexdb_database_info", "gauge",
               "Database details; always 1. Missing values are empty strings.",
               "database", ("customer_id", "mysql_db", "region", "log_level", "endpoint_url",
                            "custom_domain", "build_compute_override"),
               info(lambda v: v.db.customer_id, lambda v: v.db.mysql_db, lambda v: v.db.region,
                    lambda v: v.db.log_level, lambda v: v.db.endpoint_url,
                    lambda v: v.db.custom_domain, lambda v: v.db.build_compute_override),
               reads=("customer_id", "mysql_db", "region", "log_level", "endpoint_url",
                      "custom_domain", "build_compute_override")),
    MetricSpec("reflexdb_database_status", "gauge",
               "Lifecycle status of the database: 1 for the current one, 0 for the others."
               + CACHE_NOTE,
               "database", ("status",),
               state_set("reflexdb_database_status", STATUSES, lambda v: v.db.status),
               reads=("status",)),
    MetricSpec("reflexdb_database_health_status", "gauge",
               "Health of the database: 1 for the current one, 0 for the others; unknown "
               "when the API reports none.",
               "database", ("health_status",),
               state_set("reflexdb_database_health_status", (*HEALTH_STATUSES, "unknown"),
                         lambda v: v.db.health_status, unknown="unknown"),
               reads=("health_status",)),
    MetricSpec("reflexdb_database_instance_size", "gauge",
               "Instance size of the database: 1 for the current one, 0 for the others.",
               "database", ("instance_size",),
               state_set("reflexdb_database_instance_size", INSTANCE_SIZES,
                         lambda v: v.db.instance_size),
               reads=("instance_size",)),
    MetricSpec("reflexdb_database_sync_mode", "gauge",
               "Sync mode of the database: 1 for the current one, 0 for the others.",
               "database", ("sync_mode",),
               state_set("reflexdb_database_sync_mode", SYNC_MODES, lambda v: v.db.sync_mode),
               reads=("sync_mode",)),
    MetricSpec("reflexdb_database_sync_interval_seconds", "gauge",
               "Sync interval of the database.",
               "database", (), value(lambda v: v.db.sync_interval),
               reads=("sync_interval",)),
    MetricSpec("reflexdb_database_task_cpu_vcpus", "gauge",
               "vCPUs of the database's task (the API's taskCpu / 1024).",
               "database", (), value(_scaled(lambda d: d.task_cpu, 1 / 1024)),
               reads=("task_cpu",)),
    MetricSpec("reflexdb_database_task_memory_bytes", "gauge",
               "Memory of the database's task (the API's taskMemoryMb in MiB).",
               "database", (), value(_scaled(lambda d: d.task_memory_mb, 1024 * 1024)),
               reads=("task_memory_mb",)),
    MetricSpec("reflexdb_database_desired_state", "gauge",
               "The state the reconciler is driving the database toward; 1 while one is set, "
               "absent otherwise.",
               "database", ("desired_state",), _desired_state,
               reads=("desired_state",)),
    MetricSpec("reflexdb_database_last_error_present", "gauge",
               "1 if the API reports a last error for the database, else 0 (the text is "
               "logged at debug level, never exported).",
               "database", (), value(lambda v: v.db.last_error is not None),
               reads=("last_error",)),
    MetricSpec("reflexdb_database_created_timestamp_seconds", "gauge",
               "Unix time the database was created (createdAt).",
               "database", (), value(lambda v: v.db.created_at),
               reads=("created_at",)),
    MetricSpec("reflexdb_database_updated_timestamp_seconds", "gauge",
               "Unix time the database was last updated (updatedAt).",
               "database", (), value(lambda v: v.db.updated_at),
               reads=("updated_at",)),
    MetricSpec("reflexdb_database_status_since_timestamp_seconds", "gauge",
               "Unix time the current status began: updatedAt when the exporter first saw the "
               "database, then the poll at which it saw the status change.",
               "database", (), value(lambda v: v.status_since),
               reads=("status_since",)),
    MetricSpec("reflexdb_database_pause_schedule_configured", "gauge",
               "1 if the database has a recurring pause schedule, else 0.",
               "database", (), value(lambda v: v.db.pause_schedule is not None),
               reads=("pause_schedule",)),
    MetricSpec("reflexdb_database_pause_window_active", "gauge",
               "1 while the time of the latest poll (UTC) lies inside the database's pause "
               "window, else 0; absent when the schedule cannot be read.",
               "database", (), value(_pause_window), follows_clock=True,
               reads=("pause_schedule",)),
    MetricSpec("reflexdb_database_pause_schedule_info", "gauge",
               "The database's pause schedule: pause and resume time (HH:MM UTC) and the days "
               "a window starts (0=Sunday; empty for every day); always 1.",
               "database", ("pause_at", "resume_at", "days"), _pause_schedule_info,
               reads=("pause_schedule",)),
    MetricSpec("reflexdb_database_tag_info", "gauge",
               "A tag on the database; always 1, one series per tag.",
               "database", ("tag", "color"), _tags,
               reads=("tags",)),
)

ALL_METRICS: tuple[MetricSpec[ExporterView] | MetricSpec[ApiView] | MetricSpec[ConnectionView]
                   | MetricSpec[DatabaseView], ...] = (
    EXPORTER_METRICS + API_METRICS + CONNECTION_METRICS + DATABASE_METRICS
)
