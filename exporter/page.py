"""The landing page: a status page of what needs attention, server-rendered, no JavaScript.

It reads the store's snapshots as a scrape does (no API call), so a page view costs a pass
over the databases' parsed records and a few hundred short rows of HTML.
"""

from __future__ import annotations

import heapq
import html
import time
from collections.abc import Iterator
from dataclasses import dataclass

from exporter import __version__
from exporter.logs import SECRETS
from exporter.models import Database
from exporter.store import Store

ATTENTION_ROWS = 100  # the worst ones; the count above the table says how many in all
ERROR_CHARS = 300  # of a lastError text on the page
TRANSITIONAL = frozenset(("registered", "building", "deploying", "pausing", "resuming",
                          "terminating"))


def needs_attention(db: Database) -> int | None:
    """How bad a database looks (0 worst), or None while it runs and is healthy.

    Anything but running and ok needs a look, as on the overview dashboard.
    """
    status, health = db.status, db.health_status
    if status == "running" and health == "ok":
        return None
    if status == "failed":
        return 0
    if health == "cap_exceeded":
        return 1
    if health == "unreachable":
        return 2
    if health == "degraded":
        return 3
    return 4 if status in TRANSITIONAL else 5


def colour(value: str | None) -> str:
    """The CSS class of a status or health: red, amber, green or grey."""
    if value in ("failed", "cap_exceeded", "down"):
        return "red"
    if value in ("degraded", "unreachable") or value in TRANSITIONAL:
        return "amber"
    if value in ("running", "ok", "up"):
        return "green"
    return "grey"


def ago(seconds: float) -> str:
    """A short relative time: 12 s, 5 min, 3 h, 2 d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    absolute = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    return f"{absolute} ({ago(now - timestamp)} ago)"


@dataclass(frozen=True, slots=True)
class _Row:
    """A database that needs attention, as its row shows it."""

    rank: int
    since: float
    connection: str
    database: str
    status: str
    health: str
    error: str


@dataclass
class Summary:
    """The counts at the top of the page and the databases needing attention."""

    databases: int = 0
    running: int = 0
    failed: int = 0
    cap_exceeded: int = 0
    unhealthy: int = 0  # degraded or unreachable, and not failed
    attention: int = 0
    connections_down: int = 0
    rows: tuple[_Row, ...] = ()


def _attention(store: Store, summary: Summary, now: float) -> Iterator[_Row]:
    """Count every served database into ``summary``; yield those needing attention."""
    summary.connections_down = sum(s.polled and not s.up for s in store.states.values())
    for cid, state, data in store.served():
        name = data.name or cid
        for db in data.databases:
            summary.databases += 1
            status, health = db.status, db.health_status
            summary.running += status == "running"
            summary.failed += status == "failed"
            summary.cap_exceeded += health == "cap_exceeded"
            summary.unhealthy += health in ("degraded", "unreachable") and status != "failed"
            rank = needs_attention(db)
            if rank is not None:
                summary.attention += 1
                since = state.status_since.get(db.id, (None, now))[1]
                yield _Row(rank, since, name, db.name or db.id, status or "unknown",
                           health or "unknown", (db.last_error or "")[:ERROR_CHARS])


def summarize(store: Store, now: float) -> Summary:
    """What the page shows: counts over every database, the worst ATTENTION_ROWS."""
    summary = Summary()
    rows = heapq.nsmallest(ATTENTION_ROWS, _attention(store, summary, now),
                           key=lambda r: (r.rank, r.since))
    summary.rows = tuple(rows)
    return summary


def _cell(text: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{html.escape(text)}</td>"


_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.red{background:#f8d7da;color:#842029}.amber{background:#fff3cd;color:#664d03}
.green{background:#d1e7dd;color:#0f5132}.grey{background:#eee;color:#555}
.counts td{font-size:1.4em;text-align:center;min-width:6em}
.banner{background:#cfe2ff;border:1px solid #9ec5fe;padding:.6em 1em;margin-bottom:1em}
.error{font-family:monospace;white-space:pre-wrap;max-width:40em}"""


def render(store: Store, *, telemetry_path: str, refresh: float, demo: bool,
           now: float | None = None) -> bytes:
    """The whole page as UTF-8 bytes."""
    now = time.time() if now is None else now
    s = summarize(store, now)
    connections = len(store.states)
    counts = [("Databases", s.databases, "grey"), ("Running", s.running, "green"),
              ("Failed", s.failed, "red" if s.failed else "green"),
              ("Cap exceeded", s.cap_exceeded, "red" if s.cap_exceeded else "green"),
              ("Other unhealthy", s.unhealthy, "amber" if s.unhealthy else "green"),
              ("Connections down", s.connections_down,
               "red" if s.connections_down else "green")]
    head = "".join(f"<th>{label}</th>" for label, _, _ in counts)
    values = "".join(_cell(str(n), css) for _, n, css in counts)
    attention = "".join(
        "<tr>" + _cell(r.connection) + _cell(r.database) + _cell(r.status, colour(r.status))
        + _cell(r.health, colour(r.health)) + _cell(ago(now - r.since))
        + _cell(r.error, "error") + "</tr>" for r in s.rows)
    more = (f"<p>The {len(s.rows)} worst of {s.attention} are shown.</p>"
            if s.attention > len(s.rows) else "")
    polled = []
    for cid, state in store.states.items():
        up = ("up" if state.up else "down") if state.polled else "not polled yet"
        data = state.data
        polled.append("<tr>" + _cell(data.name if data and data.name else "") + _cell(cid)
                      + _cell(up, colour(up)) + _cell(str(len(data.databases)) if data else "")
                      + _cell(_when(state.last_success, now))
                      + _cell(_when(state.last_failure, now) if state.last_failure else "")
                      + _cell(state.last_failure_reason or "") + "</tr>")
    budgets = "".join(
        "<tr>" + _cell(api.token_source) + _cell("none" if api.limit is None
                                                  else f"{api.limit:g}/s")
        + _cell(f"{api.recent_rate:.2f}/s") + _cell(str(sum(n for _, n in api.requests)))
        + _cell(_when(api.paused_until, now) if api.paused_until else "") + "</tr>"
        for api in store.api)
    banner = ('<p class="banner">Demo mode: this exporter polls a built-in simulated fleet, '
              "not a ReflexDB account.</p>" if demo else "")
    path = html.escape(telemetry_path)
    every = max(5, round(refresh))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{every}">
<title>ReflexDB Exporter</title><style>{_STYLE}</style></head>
<body><h1>ReflexDB Exporter</h1>{banner}
<table class="counts"><thead><tr>{head}</tr></thead><tbody><tr>{values}</tr></tbody></table>
<h2>Databases needing attention ({s.attention})</h2>{more}
<table><thead><tr><th>Connection</th><th>Database</th><th>Status</th><th>Health</th>
<th>In this status</th><th>Last error</th></tr></thead><tbody>{attention}</tbody></table>
<h2>Connections ({connections})</h2>
<table><thead><tr><th>Name</th><th>Connection</th><th>State</th><th>Databases</th>
<th>Last success</th><th>Last failure</th><th>Last failure reason</th></tr></thead>
<tbody>{"".join(polled)}</tbody></table>
<h2>API budget per token</h2>
<table><thead><tr><th>Token source</th><th>Budget</th><th>Rate (last minute)</th>
<th>Requests</th><th>Paused until</th></tr></thead><tbody>{budgets}</tbody></table>
<p>Version {html.escape(__version__)}. Metrics: <a href="{path}">{path}</a>. Endpoints for
Prometheus HTTP service discovery: <a href="/sd/databases">/sd/databases</a>
(<a href="/sd/databases?status=running">running only</a>). Health:
<a href="/-/healthy">/-/healthy</a>, readiness: <a href="/-/ready">/-/ready</a>. Everything
here comes from the latest background poll of each connection, not from the API now; the
page reloads itself every {every} s.</p>
</body></html>
"""
    # The API's texts (lastError above all) could quote a token: none reaches the page.
    return SECRETS.redact(page).encode("utf-8", "replace")
