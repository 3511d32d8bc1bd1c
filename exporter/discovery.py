"""Prometheus HTTP service discovery of the databases' endpoints: GET /sd/databases.

The list comes from the same snapshots as /metrics, never from the API at request time: a
database whose series have gone (removed from the API, or its connection stale) has left the
list too. Filters are the repeatable query parameters ``status`` and ``health_status``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from exporter.logs import SECRETS
from exporter.models import Database
from exporter.store import Store

PATH = "/sd/databases"
FILTERS = ("status", "health_status")
CUSTOM_DOMAIN = ".reflexdb.cloud"
META = "__meta_reflexdb_"
_CACHED = 16  # answers kept per store generation (one per filter combination asked for)


class BadQuery(ValueError):
    """A query parameter the endpoint does not know."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which databases to list; an empty set means any."""

    status: frozenset[str] = frozenset()
    health_status: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, query: Mapping[str, list[str]]) -> Filters:
        """From the request's query; each parameter repeatable or comma-separated."""
        unknown = sorted(set(query) - set(FILTERS))
        if unknown:
            raise BadQuery(f"unknown query parameter {unknown[0]!r}; "
                           f"filter with {' or '.join(FILTERS)}")

        def values(name: str) -> frozenset[str]:
            return frozenset(v.strip() for item in query.get(name, ())
                             for v in item.split(",") if v.strip())

        return cls(values("status"), values("health_status"))

    def admits(self, db: Database) -> bool:
        """Whether a database passes both filters (no health reported counts as unknown)."""
        return ((not self.status or (db.status or "unknown") in self.status)
                and (not self.health_status
                     or (db.health_status or "unknown") in self.health_status))


def _groups(store: Store, filters: Filters) -> Iterator[dict[str, object]]:
    for cid, _, data in store.served():
        for db in data.databases:
            if not db.endpoint_url or not filters.admits(db):
                continue
            domain = f"{db.custom_domain}{CUSTOM_DOMAIN}" if db.custom_domain else ""
            tags = "," + ",".join(tag.label for tag in db.tags) + ","
            yield {"targets": [db.endpoint_url], "labels": {
                f"{META}connection_id": cid,
                f"{META}connection_name": data.name or "",
                f"{META}database_id": db.id,
                f"{META}database_name": db.name or "",
                f"{META}status": db.status or "",
                f"{META}health_status": db.health_status or "unknown",
                f"{META}region": db.region or "",
                f"{META}instance_size": db.instance_size or "",
                f"{META}custom_domain": domain,
                f"{META}tags": tags,
            }}


class Discovery:
    """Answers /sd/databases, each answer kept until the store changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._generation = -1
        self._answers: dict[Filters, bytes] = {}

    def answer(self, filters: Filters) -> bytes:
        """The target groups as JSON bytes."""
        if self._generation != self.store.data_generation:
            self._generation, self._answers = self.store.data_generation, {}
        body = self._answers.get(filters)
        if body is None:
            text = json.dumps(list(_groups(self.store, filters)), ensure_ascii=False,
                              separators=(",", ":"))
            # A name or tag quoting a token must not hand it to whoever reads the list.
            body = SECRETS.redact(text).encode("utf-8", "replace")
            if len(self._answers) < _CACHED:
                self._answers[filters] = body
        return body
