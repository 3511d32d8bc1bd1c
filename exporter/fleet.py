"""The simulated fleet: seeded connections whose database records move through their
lifecycle as the API reference describes them, and the faults tests inject."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.models import INSTANCE_SIZES, parse_pause_schedule

JSON = "application/json"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
NAMES = ("orders", "billing", "inventory", "analytics", "users", "events", "catalog",
         "payments", "search", "audit", "crm", "ledger")
TAGS = (("prod", "red"), ("staging", "yellow"), ("team-data", "blue"), ("pii", "purple"),
        ("reporting", "teal"))
TASK_SIZES = {"nano": (256, 512), "small": (512, 1024), "medium": (1024, 2048),
              "large": (2048, 4096), "xlarge": (4096, 8192), "2xlarge": (8192, 16384)}
# What --attention gives the databases that need attention, in turn: (status, healthStatus,
# desiredState, lastError); the fourth kind is a transition, one of TRANSITIONS in turn. The
# errors hold characters that HTML must escape, so the pages that show them prove they do.
AttentionKind = tuple[str, str | None, str | None, str | None]
ATTENTION_KINDS: tuple[AttentionKind, ...] = (
    ("failed", "unreachable", "running",
     'task exited: OutOfMemoryError <oom-killer> & "restart" limit'),
    ("running", "degraded", None, 'replication lag 95 s > 60 s & rising on <binlog "main">'),
    ("running", "cap_exceeded", None,
     'row cap exceeded: 1000000 > 999999 & "writes" paused <plan limit>'),
    ("transition", None, None, None),
)
TRANSITIONS = (("building", "running"), ("deploying", "running"), ("resuming", "running"),
               ("pausing", "paused"))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hhmm(minute: int) -> str:
    return f"{minute // 60 % 24:02d}:{minute % 60:02d}"


def _uuid(rng: random.Random, upper: bool) -> str:
    text = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return text.upper() if upper else text


@dataclass
class Fault:
    """An injected answer that replaces the real one while ``remaining`` lasts."""

    status: int = 500
    body: str = ""
    content_type: str = JSON
    delay: float = 0.0
    truncate: bool = False
    chunked: bool = False  # sent with Transfer-Encoding: chunked, so with no Content-Length
    headers: dict[str, str] = field(default_factory=dict)
    remaining: int | None = None


@dataclass
class SimConnection:
    """One connection: its fields, its raw database records, its account's token."""

    fields: dict[str, Any]
    databases: list[Any]
    token: str
    fault: Fault | None = None
    pinned: set[str] = field(default_factory=set)


class Fleet:
    """A seeded fleet of connections whose databases move through their lifecycle."""

    def __init__(self, connections: int, databases: int, seed: int, token: str, *,
                 churn: int = 0, touch_all: bool = False,
                 attention: float | None = None) -> None:
        self.rng = random.Random(seed)
        self.token = token
        self.churn = churn  # databases replaced per connection at every tick
        self.touch_all = touch_all  # every record's updatedAt moves at every tick
        self.ticks = 0
        self.connections: dict[str, SimConnection] = {}
        # With serve_endpoints: the simulator answers each running database's endpointUrl.
        self.endpoint_base: str | None = None
        self.silent: set[str] = set()  # databases whose endpoint stops answering
        now = time.time()
        for index in range(connections):
            upper = index % 2 == 1  # some answers use uppercase IDs, as the reference's example
            connection_id = _uuid(self.rng, upper)
            customer_id = _uuid(self.rng, upper)
            backend = ("mysql", "postgres", "mssql")[index % 3]
            created = now - self.rng.uniform(30, 400) * 86400
            fields = {
                "id": connection_id, "customerId": customer_id,
                "name": f"{backend}-{('prod', 'staging', 'analytics')[index % 3]}-{index}",
                "backend": backend,
                "mysqlHost": f"db{index}.example.internal",
                "mysqlPort": {"mysql": 3306, "postgres": 5432, "mssql": 1433}[backend],
                "availableSchemas": [f"schema_{n}" for n in range(self.rng.randint(1, 12))],
                "mysqlUser": "reflexdb",
                "allowedSyncModes": ["poll", "binlog"] if backend == "mysql" else
                                    ["poll", "logical"] if backend == "postgres" else
                                    ["poll", "cdc"],
                "minSyncInterval": self.rng.choice((30, 60, 300)),
                "createdAt": _iso(created), "updatedAt": _iso(created),
            }
            records = [self._new_database(fields, n, now) for n in range(databases)]
            self.connections[connection_id.lower()] = SimConnection(fields, records, token)
        if attention is not None:
            self._set_attention(attention, seed)

    def _set_attention(self, fraction: float, seed: int) -> None:
        """Make exactly ``round(fraction * databases)`` databases need attention and every
        other one running with health ok (a fleet whose share in trouble is known).

        The chosen databases, spread over the fleet by their own seeded draw, take the kinds
        of ATTENTION_KINDS in turn: failed and unreachable, running but degraded or over its
        cap (each with a lastError), or a transitional status with no health yet. The rest
        of each record (names, sizes, regions, schedules) stays as generated.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"attention must be a fraction from 0 to 1, not {fraction}")
        records = [r for c in self.connections.values() for r in c.databases]
        chosen = random.Random(f"attention-{seed}").sample(
            range(len(records)), round(fraction * len(records)))
        kinds: dict[int, AttentionKind] = {}
        for turn, index in enumerate(chosen):
            kind = ATTENTION_KINDS[turn % len(ATTENTION_KINDS)]
            if kind[0] == "transition":
                moving, goal = TRANSITIONS[turn // len(ATTENTION_KINDS) % len(TRANSITIONS)]
                kind = (moving, None, goal, None)
            kinds[index] = kind
        for index, record in enumerate(records):
            status, health, desired, error = kinds.get(index, ("running", "ok", None, None))
            record.update(status=status, healthStatus=health, desiredState=desired,
                          lastError=error,
                          endpointUrl=self.endpoint(record) if status == "running" else None)

    def _new_database(self, connection: dict[str, Any], index: int, now: float) -> dict[str, Any]:
        rng = self.rng
        upper = connection["id"].isupper()
        size = rng.choice(INSTANCE_SIZES[:4])
        cpu, memory = TASK_SIZES[size]
        status = rng.choices(("running", "registered", "paused", "building"), (8, 1, 1, 1))[0]
        mode = rng.choice(connection["allowedSyncModes"])
        created = now - rng.uniform(1, 200) * 86400
        schedule = None
        if rng.random() < 0.3:
            # Windows near the current hour, so the demo shows pauses and resumes live.
            start = (int(now // 60) + rng.randint(-90, 120)) % 1440
            length = rng.choice((30, 60, 600))
            schedule = {"pauseAt": _hhmm(start), "resumeAt": _hhmm(start + length),
                        "days": rng.choice(([], [1, 2, 3, 4, 5], [0, 6]))}
        name = f"{rng.choice(NAMES)}-{index}"
        record = {
            "id": _uuid(rng, upper), "customerId": connection["customerId"],
            "connectionId": connection["id"], "name": name,
            "mysqlDb": rng.choice(connection["availableSchemas"] or ["main"]),
            "syncMode": mode,
            "syncInterval": connection["minSyncInterval"] * rng.choice((1, 2, 4)),
            "taskCpu": cpu, "taskMemoryMb": memory,
            "logLevel": rng.choice(("info", "info", "debug", "warn")),
            "status": status, "lastError": None,
            "endpointUrl": None,
            "healthStatus": "ok" if status == "running" else None,
            "buildComputeOverride": rng.choice((None, None, "BUILD_GENERAL1_LARGE")),
            "instanceSize": size, "region": rng.choice(REGIONS),
            "binlogServerId": rng.randint(1000, 9999) if mode == "binlog" else None,
            "desiredState": None,
            "reflexdbCustomDomain": name if rng.random() < 0.2 else None,
            "pauseSchedule": schedule,
            "tags": [{"label": label, "color": color}
                     for label, color in rng.sample(TAGS, rng.randint(0, 2))],
            "createdAt": _iso(created), "updatedAt": _iso(created),
        }
        if status == "running":
            record["endpointUrl"] = self.endpoint(record)
        return record

    def endpoint(self, record: dict[str, Any]) -> str:
        """A database's endpointUrl: a reflexdb.cloud name, or one the simulator answers."""
        if self.endpoint_base is not None:
            return f"{self.endpoint_base}/_endpoints/{str(record['id']).lower()}"
        return f"https://{record['name']}.db.reflexdb.cloud"

    def serve_endpoints(self, base: str) -> None:
        """Give every database that has an endpoint one under ``base`` (the simulator's own
        URL, or the name other hosts reach it by), answered by ``endpoint_status``."""
        self.endpoint_base = base.rstrip("/")
        for connection in self.connections.values():
            for record in connection.databases:
                if isinstance(record, dict) and record.get("endpointUrl"):
                    record["endpointUrl"] = self.endpoint(record)

    def endpoint_status(self, database_id: str) -> int:
        """What a probe of the database's endpoint gets: 200 while it runs and answers,
        503 otherwise, 404 for a database the fleet does not have."""
        wanted = database_id.lower()
        for connection in self.connections.values():
            for record in connection.databases:
                if isinstance(record, dict) and str(record.get("id", "")).lower() == wanted:
                    running = record.get("status") == "running"
                    return 200 if running and wanted not in self.silent else 503
        return 404

    def find(self, connection_id: str) -> SimConnection | None:
        """A connection by ID, in any case."""
        return self.connections.get(connection_id.lower())

    def answer(self, connection_id: str) -> dict[str, Any] | None:
        """The API's JSON for a connection."""
        connection = self.find(connection_id)
        if connection is None:
            return None
        return {**connection.fields, "databases": connection.databases}

    def tick(self) -> None:
        """Move every unpinned database one step through its lifecycle."""
        now = time.time()
        self.ticks += 1
        for connection in self.connections.values():
            for record in list(connection.databases):
                if isinstance(record, dict) and record.get("id") not in connection.pinned:
                    self._step(connection, record, now)
                    if self.touch_all:
                        record["updatedAt"] = _iso(now)
            # Churn: a database goes away and a new one registers; now and then by default.
            for _ in range(self.churn or (1 if self.rng.random() < 0.02 else 0)):
                victims = [r for r in connection.databases
                           if isinstance(r, dict) and r.get("id") not in connection.pinned]
                if victims:
                    connection.databases.remove(self.rng.choice(victims))
                    connection.databases.append(
                        self._new_database(connection.fields, self.rng.randint(100, 999), now))

    def _step(self, connection: SimConnection, db: dict[str, Any], now: float) -> None:
        rng = self.rng
        before = (db["status"], db["healthStatus"], db["desiredState"], db["lastError"])
        status, health = db["status"], db["healthStatus"]
        schedule = parse_pause_schedule(db.get("pauseSchedule"))
        in_window = bool(schedule and schedule.active(now))
        if status == "registered" and rng.random() < 0.5:
            db.update(status="building", desiredState="running")
        elif status == "building" and rng.random() < 0.4:
            db.update(status="deploying")
        elif status in ("deploying", "resuming") and rng.random() < 0.4:
            db.update(status="running", healthStatus="ok", desiredState=None,
                      endpointUrl=db["endpointUrl"] or self.endpoint(db))
        elif status == "running" and in_window:
            db.update(status="pausing", desiredState="paused")
        elif status == "pausing":
            db.update(status="paused", healthStatus=None, desiredState=None)
        elif status == "paused" and schedule and not in_window:
            db.update(status="resuming", desiredState="running")
        elif status == "failed" and rng.random() < 0.15:
            db.update(status="deploying", lastError=None, desiredState="running")
        elif status == "running":
            roll = rng.random()
            if roll < 0.01:
                db.update(status="failed", healthStatus="unreachable",
                          lastError="task exited: OutOfMemoryError")
            elif roll < 0.02:
                db.update(healthStatus="cap_exceeded")
            elif roll < 0.06 and health == "ok":
                db.update(healthStatus=rng.choice(("degraded", "degraded", "unreachable")))
            elif roll < 0.3 and health != "ok":
                db.update(healthStatus="ok")
        if (db["status"], db["healthStatus"], db["desiredState"], db["lastError"]) != before:
            db["updatedAt"] = _iso(now)
