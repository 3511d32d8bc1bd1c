"""One client connection's requests and answers, in order, parsed by h11 under the limits.

h11 (already installed as httpcore's dependency) is a strict HTTP/1.1 state machine with no
I/O of its own, so the write path stays ours: stored bytes handed to the transport in slices,
without a framework copying or re-encoding them. server.py accepts the connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import parse_qs, urlsplit

import h11

from exporter.logs import Throttle
from exporter.priority import Gate

log = logging.getLogger(__name__)

READ_CHUNK = 16 * 1024
# A slice written at a time, and what the transport may hold before the answer waits for the
# client: a stalled reader pins at most about both, never a private copy of the exposition.
WRITE_SLICE = 64 * 1024
WRITE_BUFFER = 128 * 1024
TIMEOUT_SPREAD = 0.1  # timeouts last their setting plus up to a tenth
SLOW_CLIENT = 0.1  # seconds a write may wait for its client before it gives up priority


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost; the defaults suit Prometheus on a hostile network."""

    # From accept to the first request's first byte (TLS handshake included), and for each
    # request's head and body from its first byte.
    read_timeout: float = 10.0
    idle_timeout: float = 120.0  # between requests on a kept-alive connection
    write_timeout: float = 30.0  # an answer that makes no progress this long is abandoned
    max_connections: int = 512
    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 4 * 1024
    keep_body: bool = False  # the exporter reads no body; the simulator's control API does


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


def spread(seconds: float) -> float:
    """A timeout stretched by up to TIMEOUT_SPREAD: connections an attacker opened together
    must not all expire in the same instant, stalling every answer while they are freed."""
    return seconds * (1 + random.uniform(0, TIMEOUT_SPREAD))  # noqa: S311 - jitter, not crypto


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _Refused(Exception):
    """A request answered with an error status, after which the connection closes."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _error_bytes(status: int) -> bytes:
    body = f"{_phrase(status)}\n".encode()
    return (f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: text/plain; charset=utf-8"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _slices(parts: Sequence[bytes]) -> Iterator[bytes | memoryview]:
    """Small parts joined and large ones cut, so each write is about WRITE_SLICE."""
    batch: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= WRITE_SLICE:
            if batch:
                yield b"".join(batch)
                batch, size = [], 0
            view = memoryview(part)
            for start in range(0, len(view), WRITE_SLICE):
                yield view[start:start + WRITE_SLICE]
            continue
        batch.append(part)
        size += len(part)
        if size >= WRITE_SLICE:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _to_request(event: h11.Request) -> Request:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if "content-length" in headers and "transfer-encoding" in headers:
        raise _Refused(400, "Content-Length with Transfer-Encoding")
    try:
        url = urlsplit(event.target.decode("ascii"))
        query = parse_qs(url.query)
    except ValueError:
        raise _Refused(400, "unparseable request target") from None
    return Request(method=event.method.decode("ascii").upper(), path=url.path or "/",
                   query=query, headers=headers)


class Host(Protocol):
    """What a conversation needs of the server that accepted its connection."""

    handler: Handler
    gate: Gate
    limits: Limits
    errors: Throttle


class Conversation:
    """Requests and answers on one connection, in order, under the limits."""

    def __init__(self, host: Host, touch: Callable[[], None], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.limits = host.limits
        self.touch = touch  # tells the host this client made progress
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)

    async def run(self) -> None:
        """Answer requests until the client leaves, errs, stalls, or asks to close."""
        while True:
            try:
                request = await self._read_request()
            except _Refused as refused:
                log.debug("request refused", extra={"status": refused.status, "why": str(refused)})
                self.writer.write(_error_bytes(refused.status))
                await self._drain()
                return
            if request is None:
                return
            with self.host.gate.serving():
                try:
                    response = await self.host.handler(request)
                except Exception:
                    self.host.errors.log(log, "handler failed", exc_info=True,
                                           path=request.path)
                    response = Response(500, b"internal server error\n")
                if response.raw is not None:
                    self.writer.write(response.raw)
                    await self._drain()
                    return
                await self._respond(response, head_only=request.method == "HEAD")
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _read_request(self) -> Request | None:
        """The next request, its body read within the limit; None when the client is done."""
        loop = asyncio.get_running_loop()
        request: Request | None = None
        body: list[bytes] = []
        size = 0
        started = False
        async with asyncio.timeout(spread(self.limits.idle_timeout)) as timer:
            while True:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _Refused(exc.error_status_hint, str(exc)) from None
                if event is h11.NEED_DATA:
                    data = await self.reader.read(READ_CHUNK)
                    self.touch()
                    if data and not started:
                        started = True  # from the first byte, the whole request has read_timeout
                        timer.reschedule(loop.time() + spread(self.limits.read_timeout))
                    if self.h11.their_state is h11.IDLE and (b"\n " in data or b"\n\t" in data):
                        raise _Refused(400, "obsolete line folding")
                    self.h11.receive_data(data)
                elif isinstance(event, h11.Request):
                    if not started:
                        started = True
                        timer.reschedule(loop.time() + spread(self.limits.read_timeout))
                    request = _to_request(event)
                    declared = request.headers.get("content-length", "0")
                    if int(declared) > self.limits.max_body_bytes:
                        raise _Refused(413, "body over the limit")
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self.limits.max_body_bytes:
                        raise _Refused(413, "body over the limit")
                    if self.limits.keep_body:
                        body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    request.body = b"".join(body)
                    return request
                else:  # ConnectionClosed, or PAUSED after a client that asked to close
                    if started and request is None:
                        raise _Refused(400, "request cut short")
                    return None

    async def _respond(self, response: Response, head_only: bool) -> None:
        parts = [response.body] if isinstance(response.body, bytes) else list(response.body)
        headers = [("Date", formatdate(usegmt=True)), ("Content-Type", response.content_type),
                   ("Content-Length", str(sum(len(p) for p in parts))), *response.headers]
        self.writer.write(self.h11.send(h11.Response(
            status_code=response.status, headers=headers, reason=_phrase(response.status))))
        if not head_only:
            for piece in _slices(parts):
                # h11 checks the length and passes memoryviews through uncopied; its stub
                # says bytes only.
                data = h11.Data(data=cast("bytes", piece))
                for out in self.h11.send_with_data_passthrough(data) or ():
                    self.writer.write(out)
                await self._drain()
        self.h11.send(h11.EndOfMessage())
        await self._drain()

    async def _drain(self) -> None:
        """Wait while the transport holds more than WRITE_BUFFER, at most write_timeout.

        A client that keeps us waiting over SLOW_CLIENT steps aside from scrape priority
        until it catches up: it is a stalled or distant reader, and polls need not wait for it.
        """
        try:
            async with asyncio.timeout(SLOW_CLIENT):
                await self.writer.drain()
        except TimeoutError:
            rest = spread(max(0.01, self.limits.write_timeout - SLOW_CLIENT))
            with self.host.gate.aside():
                async with asyncio.timeout(rest):
                    await self.writer.drain()
        self.touch()
