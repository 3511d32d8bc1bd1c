"""The exporter's HTTP endpoints: metrics, landing page, health and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from exporter import discovery, page
from exporter.exchange import Request, Response
from exporter.render import negotiate
from exporter.store import Store

# Paths the exporter serves itself; the telemetry path may not take one of them.
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload", discovery.PATH)


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


class ExporterApp:
    """Routes requests; a scrape only joins bytes the poller already rendered."""

    def __init__(self, store: Store, telemetry_path: str = "/metrics",
                 reload: Callable[[], Awaitable[tuple[bool, str]]] | None = None, *,
                 refresh: Callable[[], float] = lambda: 60.0, demo: bool = False) -> None:
        self.store = store
        self.telemetry_path = telemetry_path
        self.reload = reload
        self.refresh = refresh  # the poll interval now: how often the page reloads itself
        self.demo = demo
        self.discovery = discovery.Discovery(store)

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
        if request.path == discovery.PATH:
            return self.targets(request)
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

    def targets(self, request: Request) -> Response:
        """Prometheus HTTP service discovery: every database endpoint, filtered."""
        try:
            filters = discovery.Filters.parse(request.query)
        except discovery.BadQuery as exc:
            return Response(400, f"{exc}\n".encode())
        return Response(200, self.discovery.answer(filters), "application/json")

    def landing(self) -> Response:
        """The status page (page.py)."""
        body = page.render(self.store, telemetry_path=self.telemetry_path,
                           refresh=self.refresh(), demo=self.demo)
        return Response(200, body, "text/html; charset=utf-8")
