"""A small asyncio HTTP/1.1 server: keep-alive, bounded requests, large bodies sent in slices.

The standard library's servers block a thread per connection and run TLS handshakes in the
accept loop; serving from the poller's event loop needs neither threads nor a new dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from exporter.priority import Gate

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# A client must send its request head within this long, idle keep-alive included.
HEAD_TIMEOUT = 30.0
WRITE_SLICE = 256 * 1024
BUFFER_HIGH = 16 * 1024 * 1024


@dataclass(slots=True)
class Request:
    """An HTTP request as the handlers see it; header names are lowercase."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class Response:
    """An HTTP response; ``body`` may be several parts sent back to back."""

    status: int = 200
    body: bytes | Sequence[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes | None = None  # sent as-is, then the connection closes (fault injection)


Handler = Callable[[Request], Awaitable[Response]]


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``[HOST]:PORT`` as in the Go exporters; an empty host means every interface."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address {address!r} is not [HOST]:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port)


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; None when the client closed the connection cleanly."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest(400) from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431) from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400)
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400)
        headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _BadRequest(411)
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise _BadRequest(400)
    if int(length) > MAX_BODY_BYTES:
        raise _BadRequest(413)
    body = await reader.readexactly(int(length)) if int(length) else b""
    url = urlsplit(target)
    return Request(method=method.upper(), path=url.path or "/", query=parse_qs(url.query),
                   headers=headers, body=body)


async def _drain_if_full(writer: asyncio.StreamWriter) -> None:
    if writer.transport.get_write_buffer_size() >= BUFFER_HIGH:
        await writer.drain()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool,
                 keep_alive: bool) -> None:
    if response.raw is not None:
        writer.write(response.raw)
        await writer.drain()
        return
    parts = [response.body] if isinstance(response.body, bytes) else list(response.body)
    length = sum(len(p) for p in parts)
    lines = [f"HTTP/1.1 {response.status} {_phrase(response.status)}",
             f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {length}",
             f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        # Small parts go out joined into slices of about WRITE_SLICE, large ones in slices.
        # The transport may buffer up to BUFFER_HIGH before we wait for the client: a
        # scrape then hands its whole answer over in a few steps instead of waiting its
        # turn in the event loop after every slice while polls are being processed.
        batch: list[bytes] = []
        size = 0
        for part in parts:
            if len(part) >= WRITE_SLICE:
                if batch:
                    writer.write(b"".join(batch))
                    batch, size = [], 0
                view = memoryview(part)
                for start in range(0, len(view), WRITE_SLICE):
                    writer.write(view[start:start + WRITE_SLICE])
                    await _drain_if_full(writer)
                continue
            batch.append(part)
            size += len(part)
            if size >= WRITE_SLICE:
                writer.write(b"".join(batch))
                batch, size = [], 0
                await _drain_if_full(writer)
        if batch:
            writer.write(b"".join(batch))
    await writer.drain()


async def _serve_connection(handler: Handler, gate: Gate, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    writer.transport.set_write_buffer_limits(high=BUFFER_HIGH)
    try:
        while True:
            try:
                request = await _read_request(reader)
            except _BadRequest as bad:
                await _write(writer, Response(bad.status, _phrase(bad.status).encode()),
                             head_only=False, keep_alive=False)
                return
            if request is None:
                return
            with gate.serving():
                try:
                    response = await handler(request)
                except Exception:
                    log.exception("handler failed", extra={"path": request.path})
                    response = Response(500, b"internal server error\n")
                keep_alive = (request.headers.get("connection", "").lower() != "close"
                              and response.raw is None)
                await _write(writer, response, request.method == "HEAD", keep_alive)
            if not keep_alive:
                return
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # the client went away or stalled; nothing to tell it
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(handler: Handler, host: str | None, port: int,
                ssl_context: ssl.SSLContext | None = None,
                gate: Gate | None = None) -> asyncio.Server:
    """Start serving; the TLS handshake runs per connection, never in the accept loop.

    ``gate`` learns when a request is being answered, so background work can wait.
    """
    busy = gate or Gate()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Shutdown cancels open keep-alive connections; ending quietly stops asyncio (3.11)
        # from logging each one as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await _serve_connection(handler, busy, reader, writer)

    return await asyncio.start_server(
        on_connect, host, port, ssl=ssl_context, limit=MAX_HEAD_BYTES,
        ssl_handshake_timeout=10.0 if ssl_context else None, reuse_address=True,
    )
