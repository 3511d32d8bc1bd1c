"""The exporter's HTTP endpoints: metrics, landing page, health and readiness."""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable

from exporter import __version__
from exporter.exchange import Request, Response
from exporter.render import negotiate
from exporter.store import Store

# Paths the exporter serves itself; the telemetry path may not take one of them.
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")


def accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding allows gzip (a ``q=0`` refuses it)."""
    for item in (header or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            try:
                return not quality or float(quality) > 0
            except ValueError:
                return False
    return False


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


class ExporterApp:
    """Routes requests; a scrape only joins bytes the poller already rendered."""

    def __init__(self, store: Store, telemetry_path: str = "/metrics",
                 reload: Callable[[], Awaitable[tuple[bool, str]]] | None = None) -> None:
        self.store = store
        self.telemetry_path = telemetry_path
        self.reload = reload

    async def __call__(self, request: Request) -> Response:
        """Answer one request."""
        if request.path == "/-/reload":
            if request.method not in ("POST", "PUT"):
                return Response(405, b"use POST\n", headers=[("Allow", "POST, PUT")])
            if self.reload is None:
                return Response(403, b"Lifecycle API is not enabled.\n")
            ok, message = await self.reload()
            return Response(200 if ok else 500, (message + "\n").encode())
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
        if request.path == self.telemetry_path:
            return self.metrics(request)
        if request.path == "/":
            return self.landing()
        if request.path == "/-/healthy":
            return Response(200, b"Healthy.\n")
        if request.path == "/-/ready":
            if self.store.ready:
                return Response(200, b"Ready.\n")
            return Response(503, b"Not ready: some connections have not been polled yet.\n")
        return Response(404, b"not found\n")

    def metrics(self, request: Request) -> Response:
        """The exposition in the negotiated format, gzipped when the scraper allows."""
        fmt = negotiate(request.headers.get("accept"))
        headers = [("Vary", "Accept, Accept-Encoding")]
        if accepts_gzip(request.headers.get("accept-encoding")):
            headers.append(("Content-Encoding", "gzip"))
            return Response(200, self.store.gzip(fmt, fmt.process_metrics()), fmt.content_type,
                            headers)
        return Response(200, [*self.store.parts(fmt), fmt.process_metrics()], fmt.content_type,
                        headers)

    def landing(self) -> Response:
        """A page with the version, the metrics link and every connection's state."""
        rows = []
        for state in self.store.states.values():
            name = state.data.name if state.data and state.data.name else ""
            databases = str(len(state.data.databases)) if state.data else ""
            status = ("up" if state.up else "down") if state.polled else "not polled yet"
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in (
                    state.id, name, status, databases, _when(state.last_success),
                    state.last_failure_reason or "")) + "</tr>")
        budgets = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in (
                api.token_source, "none" if api.limit is None else f"{api.limit:g}/s",
                f"{api.recent_rate:.2f}/s", str(sum(n for _, n in api.requests)),
                _when(api.paused_until) if api.paused_until else "")) + "</tr>"
            for api in self.store.api)
        path = html.escape(self.telemetry_path)
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ReflexDB Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head>
<body><h1>ReflexDB Exporter</h1>
<p>Version {html.escape(__version__)}. Metrics: <a href="{path}">{path}</a>.
Health: <a href="/-/healthy">/-/healthy</a>, readiness: <a href="/-/ready">/-/ready</a>.</p>
<p>Metrics come from the latest background poll of each connection, not from the API at
scrape time.</p>
<table><thead><tr><th>Connection</th><th>Name</th><th>State</th><th>Databases</th>
<th>Last success</th><th>Last failure reason</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>API budget per token</h2>
<table><thead><tr><th>Token source</th><th>Budget</th><th>Rate (last minute)</th>
<th>Requests</th><th>Paused until</th></tr></thead>
<tbody>{budgets}</tbody></table>
</body></html>
"""
        return Response(200, page.encode(), "text/html; charset=utf-8")
