"""A stand-in for the ReflexDB API: the HTTP face of a simulated fleet (``fleet.py``).

``GET /v1/connections/{id}`` answers as the API reference describes (camelCase fields, nulls
where nullable, bearer-token check, ``{error, message}`` bodies). Under ``/_sim/`` tests patch
records, inject faults and read the requests the simulator received. With
``--serve-endpoints``, ``/_endpoints/{database id}`` stands in for each running database's
endpoint, so blackbox_exporter has something real to probe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from exporter import logs
from exporter.config import parse_duration
from exporter.exchange import Limits, Request, Response
from exporter.fleet import JSON, Fault, Fleet, SimConnection
from exporter.server import parse_listen_address, serve

log = logging.getLogger(__name__)

SIMULATOR_TOKEN_ENV = "REFLEXDB_SIMULATOR_TOKEN"  # noqa: S105 - a variable name
DEFAULT_TOKEN = "demo-token"  # noqa: S105 - the simulator's public default
# The control API takes JSON bodies (records, faults); the exporter itself takes none.
CONTROL_LIMITS = Limits(max_body_bytes=1024 * 1024, keep_body=True)


def _json(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload).encode(), JSON)


def _error(status: int, error: str, message: str) -> Response:
    return _json(status, {"error": error, "message": message})


class SimulatorApp:
    """The HTTP face of a Fleet: the API itself and the ``/_sim/`` control endpoints."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.requests: list[dict[str, Any]] = []
        # Faults by the bearer token they answer, on every connection: an account's limit.
        self.token_faults: dict[str, Fault] = {}

    async def __call__(self, request: Request) -> Response:
        """Answer one request."""
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] == ["v1", "connections"] and len(parts) == 3 and request.method == "GET":
            self.requests = [*self.requests[-1999:], {
                "method": request.method, "path": request.path, "query": request.query,
                "headers": request.headers, "time": time.time()}]
            return await self._get_connection(parts[2], request)
        if parts[:1] == ["_endpoints"] and len(parts) == 2 and request.method in ("GET", "HEAD"):
            status = self.fleet.endpoint_status(parts[1])  # a probe sends no token
            return Response(status, b"ok\n" if status == 200 else b"unavailable\n")
        if parts[:1] == ["_sim"]:
            try:
                return self._control(request.method, parts[1:], request.body)
            except (ValueError, KeyError, TypeError) as exc:
                return _error(400, "bad_request", str(exc))
        return _error(404, "not_found", "no such route")

    async def _get_connection(self, connection_id: str, request: Request) -> Response:
        connection = self.fleet.find(connection_id)
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if presented in self.token_faults:
            return await self._fault(self.token_faults[presented],
                                     lambda: self.token_faults.pop(presented, None))
        if connection and connection.fault:
            return await self._fault(connection.fault, lambda: setattr(connection, "fault", None))
        expected = connection.token if connection else self.fleet.token
        if request.headers.get("authorization") != f"Bearer {expected}":
            return _error(401, "unauthorized", "missing or invalid bearer token")
        answer = self.fleet.answer(connection_id)
        if answer is None:
            return _error(404, "not_found", "connection not found")
        return _json(200, answer)

    @staticmethod
    async def _fault(fault: Fault, spent: Callable[[], object]) -> Response:
        """The injected answer; ``spent`` removes the fault once its count runs out."""
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                spent()
        if fault.delay:
            await asyncio.sleep(fault.delay)
        body = fault.body.encode()
        if fault.truncate:
            head = (f"HTTP/1.1 {fault.status} X\r\nContent-Type: {fault.content_type}\r\n"
                    f"Content-Length: {len(body) + 1000}\r\n\r\n").encode()
            return Response(raw=head + body)
        if fault.chunked:  # no Content-Length: the client cannot know the size in advance
            head = (f"HTTP/1.1 {fault.status} X\r\nContent-Type: {fault.content_type}\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n").encode()
            chunks = b"".join(f"{len(body[i:i + 8192]):x}\r\n".encode() + body[i:i + 8192]
                              + b"\r\n" for i in range(0, len(body), 8192))
            return Response(raw=head + chunks + b"0\r\n\r\n")
        return Response(fault.status, body, fault.content_type, list(fault.headers.items()))

    def _control(self, method: str, parts: list[str], body: bytes) -> Response:
        payload: Any = json.loads(body) if body else None
        if parts == ["fleet"] and method == "GET":
            return _json(200, {cid: self.fleet.answer(cid) for cid in self.fleet.connections})
        if parts == ["requests"] and method == "GET":
            return _json(200, self.requests)
        if parts == ["requests"] and method == "DELETE":
            self.requests = []
            return _json(200, {})
        if parts == ["tick"] and method == "POST":
            self.fleet.tick()
            return _json(200, {})
        if parts == ["token-fault"] and method == "PUT":
            token = payload.pop("token")
            self.token_faults[token] = Fault(**payload)
            return _json(200, {})
        if parts == ["token-fault"] and method == "DELETE":
            self.token_faults.pop(payload["token"], None)
            return _json(200, {})
        if len(parts) < 2 or parts[0] != "connections":
            return _error(404, "not_found", "no such control route")
        connection = self.fleet.find(parts[1])
        if connection is None:
            return _error(404, "not_found", "connection not found")
        rest = parts[2:]
        if rest == [] and method == "PATCH":
            connection.fields.update(payload)
        elif rest == ["fault"] and method == "PUT":
            connection.fault = Fault(**payload)
        elif rest == ["fault"] and method == "DELETE":
            connection.fault = None
        elif rest == ["token"] and method == "PUT":
            connection.token = payload["token"]
        elif rest == ["databases"] and method == "PUT":
            connection.databases = list(payload)
            connection.pinned.update(r["id"] for r in payload if isinstance(r, dict) and "id" in r)
        elif rest == ["databases"] and method == "POST":
            connection.databases.append(payload)
            if isinstance(payload, dict) and "id" in payload:
                connection.pinned.add(payload["id"])
        elif len(rest) == 2 and rest[0] == "databases":
            return self._database(connection, rest[1], method, payload)
        elif len(rest) == 3 and rest[::2] == ["databases", "endpoint"] and method == "PUT":
            # {"answering": false}: the database's endpoint stops answering (503).
            (self.fleet.silent.discard if payload["answering"] else self.fleet.silent.add)(
                rest[1].lower())
        else:
            return _error(404, "not_found", "no such control route")
        return _json(200, {})

    def _database(self, connection: SimConnection, database_id: str, method: str,
                  payload: Any) -> Response:
        wanted = database_id.lower()
        for index, record in enumerate(connection.databases):
            if isinstance(record, dict) and str(record.get("id", "")).lower() == wanted:
                if method == "DELETE":
                    del connection.databases[index]
                elif method == "PATCH":
                    for key in payload.pop("__delete__", []):
                        record.pop(key, None)
                    record.update(payload)
                    connection.pinned.add(record["id"])
                else:
                    return _error(405, "method_not_allowed", "PATCH or DELETE")
                return _json(200, {})
        return _error(404, "not_found", "database not found")


def exporter_config(url: str, fleet: Fleet, poll_interval: str = "60s") -> dict[str, Any]:
    """An exporter config that polls every connection of this simulator."""
    return {
        "api": {"url": url},
        "poll_interval": poll_interval,
        "connections": [{"id": c.fields["id"]} for c in fleet.connections.values()],
    }


async def run_fleet(fleet: Fleet, tick: float) -> None:
    """Advance the fleet every ``tick`` seconds, forever."""
    while True:
        await asyncio.sleep(tick)
        fleet.tick()


async def _main(args: argparse.Namespace, token: str) -> None:
    fleet = Fleet(args.connections, args.databases, args.seed, token, churn=args.churn,
                  touch_all=args.touch_all, attention=args.attention)
    host, port = parse_listen_address(args.listen_address)
    context = None
    if args.tls_cert_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    server = await serve(SimulatorApp(fleet), host, port, ssl_context=context,
                         limits=CONTROL_LIMITS)
    bound = server.sockets[0].getsockname()
    shown = host or "127.0.0.1"
    scheme = "https" if context else "http"
    url = f"{scheme}://{'[' + shown + ']' if ':' in shown else shown}:{bound[1]}/v1"
    if args.serve_endpoints:
        fleet.serve_endpoints(args.endpoint_base_url or url.removesuffix("/v1"))
    if args.write_config:
        args.write_config.write_text(yaml.safe_dump(exporter_config(url, fleet), sort_keys=False))
    log.info("simulator listening", extra={"url": url, "connections": args.connections,
                                            "databases_per_connection": args.databases})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = None if args.static else asyncio.create_task(run_fleet(fleet, args.tick))
    await stop.wait()
    if ticker:
        ticker.cancel()
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()


def _fraction(text: str) -> float:
    """A number from 0 to 1, for --attention."""
    number = float(text)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1")
    return number


def main(argv: list[str] | None = None) -> int:
    """Run the simulator on its own, e.g. as a docker-compose service."""
    parser = argparse.ArgumentParser(prog="reflexdb-simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--web.listen-address", dest="listen_address", default="127.0.0.1:10511")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--databases", type=int, default=8, help="per connection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick", type=parse_duration, default=5.0,
                        help="how often the fleet changes (default 5s)")
    parser.add_argument("--static", action="store_true", help="never change on its own")
    parser.add_argument("--churn", type=int, default=0, metavar="N",
                        help="replace N databases per connection at every tick (soak tests)")
    parser.add_argument("--touch-all", action="store_true",
                        help="move every record's updatedAt at every tick, so every answer "
                             "changes (benchmarks' worst case)")
    parser.add_argument("--attention", type=_fraction, metavar="FRACTION",
                        help="start with exactly this fraction of the databases needing "
                             "attention (failed, degraded, cap_exceeded or in transition, "
                             "with a lastError where failed or unhealthy) and every other one "
                             "running with health ok; add --static to keep it so")
    parser.add_argument("--serve-endpoints", action="store_true",
                        help="answer each running database's endpointUrl itself, at "
                             "/_endpoints/<database id> (200, or 503 once told to stop)")
    parser.add_argument("--endpoint-base-url", metavar="URL",
                        help="the simulator's URL as probers reach it, for those endpointUrls "
                             "(default: the URL it listens on)")
    parser.add_argument("--token-file", type=Path,
                        help=f"the accepted token (default: ${SIMULATOR_TOKEN_ENV} or "
                             f"{DEFAULT_TOKEN!r})")
    parser.add_argument("--write-config", type=Path, metavar="PATH",
                        help="write an exporter config for this fleet to PATH once listening")
    parser.add_argument("--tls-cert-file", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key-file", help="the certificate's private key")
    parser.add_argument("--log.level", dest="log_level", default="info", choices=logs.LEVELS)
    args = parser.parse_args(argv)
    logs.setup(args.log_level, "logfmt")
    if args.token_file:
        token = args.token_file.read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get(SIMULATOR_TOKEN_ENV, DEFAULT_TOKEN)
    logs.SECRETS.add(token)
    asyncio.run(_main(args, token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
