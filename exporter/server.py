"""HTTP/1.1 on the poller's event loop: h11 parses, and every client is bounded in time and memory.

h11 (already installed as httpcore's dependency) is a strict HTTP/1.1 state machine with no
I/O of its own, so the scrape fast path stays ours: stored bytes handed to the transport in
slices, without a framework copying or re-encoding them. Everything a client can hold is
bounded here: connections (the idlest one goes when a new one arrives at the cap), the time
to send a request, the time an answer may make no progress, the bytes buffered for reading
and for writing, and TLS handshakes, which start only once the client has sent something.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
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
BACKLOG = 1024
# The kernel's send buffer per client (it doubles this): autotuned, a stalled reader would
# make the kernel hold up to 4 MiB for it and us copy them in, a stall of every other answer
# when a hundred arrive at once; measured, a plain scrape is no slower at this size.
SEND_BUFFER = 256 * 1024
# Handshakes cost OpenSSL state and a 256 KiB read buffer each (asyncio's sslproto); past
# this many at once, the oldest is shed (a real client's handshake takes milliseconds).
MAX_HANDSHAKES = 64
ACCEPT_RETRY_SECONDS = 0.1
SHED_GRACE = 1.0  # seconds
SLOW_CLIENT = 0.1  # seconds a write may wait for its client before it gives up priority
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends a reset


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


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``[HOST]:PORT`` as in the Go exporters; an empty host means every interface."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address {address!r} is not [HOST]:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port)


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


class _Client:
    """One open client connection, as the accept loop sees it."""

    __slots__ = ("handshaking", "progress", "silent", "sock", "task", "transport")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.progress = now  # when it last sent us bytes or took some of an answer
        self.silent = True  # it has sent nothing yet
        self.handshaking = False  # asyncio's TLS transport owns the socket, not yet given us
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None


class _Conversation:
    """Requests and answers on one connection, in order, under the limits."""

    def __init__(self, server: HTTPServer, client: _Client, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.limits = server.limits
        self.client = client
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
            with self.server.gate.serving():
                try:
                    response = await self.server.handler(request)
                except Exception:
                    self.server.errors.log(log, "handler failed", exc_info=True,
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
        async with asyncio.timeout(self.limits.idle_timeout) as timer:
            while True:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _Refused(exc.error_status_hint, str(exc)) from None
                if event is h11.NEED_DATA:
                    data = await self.reader.read(READ_CHUNK)
                    self.server.touch(self.client)
                    if data and not started:
                        started = True  # from the first byte, the whole request has read_timeout
                        timer.reschedule(loop.time() + self.limits.read_timeout)
                    if self.h11.their_state is h11.IDLE and (b"\n " in data or b"\n\t" in data):
                        raise _Refused(400, "obsolete line folding")
                    self.h11.receive_data(data)
                elif isinstance(event, h11.Request):
                    if not started:
                        started = True
                        timer.reschedule(loop.time() + self.limits.read_timeout)
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
            with self.server.gate.aside():
                async with asyncio.timeout(max(0.01, self.limits.write_timeout - SLOW_CLIENT)):
                    await self.writer.drain()
        self.server.touch(self.client)


async def _readable(sock: socket.socket) -> None:
    """Return once the socket has bytes (or an end) to read."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        if sock.fileno() != -1:  # a shed client's socket is closed (and unregistered) already
            loop.remove_reader(sock.fileno())


class HTTPServer:
    """Accepts on its listening sockets and serves each client under ``limits``."""

    def __init__(self, handler: Handler, listeners: list[socket.socket],
                 ssl_context: ssl.SSLContext | None, gate: Gate, limits: Limits) -> None:
        self.handler = handler
        self.sockets = listeners
        self.ssl_context = ssl_context
        self.gate = gate
        self.limits = limits
        self.errors = Throttle()
        # Ordered by progress, the idlest first, so shedding one costs nothing at the cap.
        self._clients: OrderedDict[int, _Client] = OrderedDict()
        self._handshaking: dict[int, _Client] = {}  # oldest first
        self._accepting = [asyncio.create_task(self._accept(s)) for s in listeners]

    def touch(self, client: _Client) -> None:
        """Note that the client just sent bytes or took some of its answer."""
        client.progress = asyncio.get_running_loop().time()
        client.silent = False
        if id(client) in self._clients:
            self._clients.move_to_end(id(client))

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._clients)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of descriptors or memory: shed the idlest client, retry shortly, and
                # say so once a second at most however fast accepts fail.
                self.errors.log(log, "cannot accept a connection", level=logging.WARNING,
                                err=errno.errorcode.get(exc.errno or 0, str(exc)))
                self._shed(loop.time())
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            if len(self._clients) >= self.limits.max_connections:
                self._shed(loop.time())
            client = _Client(sock, loop.time())
            self._clients[id(client)] = client
            client.task = asyncio.create_task(self._serve(sock, client))
            await asyncio.sleep(0)  # a flood of connections must not starve the answers

    def _shed(self, now: float) -> None:
        """Close the client that has gone longest without progress.

        When even that one moved within the last SHED_GRACE (a burst of new connections),
        a client that has sent nothing yet goes first: a scraper mid-handshake or mid-answer
        is worth more than a connection that may never speak.
        """
        if not self._clients:
            return
        victim = next(iter(self._clients.values()))
        if now - victim.progress < SHED_GRACE:
            victim = next((c for c in self._clients.values() if c.silent), victim)
        self._shed_one(victim, now, "too many client connections; closing the idlest")

    def _shed_one(self, victim: _Client, now: float, why: str) -> None:
        self.errors.log(log, why, level=logging.WARNING,
                        max_connections=self.limits.max_connections,
                        idle_seconds=round(now - victim.progress, 1))
        self._clients.pop(id(victim), None)
        if victim.transport is not None:
            victim.transport.abort()
        elif not victim.handshaking and victim.sock.fileno() != -1:
            # Its task may not have started, and then never will, so close the socket here,
            # unregistered first: a closed descriptor left in the selector would make its
            # number, reused by the next client, fail to register.
            asyncio.get_running_loop().remove_reader(victim.sock.fileno())
            victim.sock.close()
        if victim.task is not None:
            victim.task.cancel()

    async def _serve(self, sock: socket.socket, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        transport: asyncio.Transport | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            # Nothing but the socket until the client speaks: a silent connection costs no
            # transport, buffers or TLS state, and goes after read_timeout.
            deadline = loop.time() + self.limits.read_timeout
            async with asyncio.timeout_at(deadline):
                await _readable(sock)
            self.touch(client)
            reader = asyncio.StreamReader(limit=READ_CHUNK)
            protocol = asyncio.StreamReaderProtocol(reader)
            if self.ssl_context is None:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
            else:
                transport = await self._handshake(sock, client, protocol, deadline)
            client.transport = transport
            transport.set_write_buffer_limits(high=WRITE_BUFFER)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await _Conversation(self, client, reader, writer).run()
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError,
                asyncio.CancelledError):
            # Stalled, gone, rude or shed: drop it now with a reset, so neither our transport
            # nor the kernel keeps what was still queued for it.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            if transport is not None:
                transport.abort()
        except Exception:
            self.errors.log(log, "client connection failed", exc_info=True)
        finally:
            self._clients.pop(id(client), None)
            if transport is None:
                sock.close()
            else:
                transport.close()

    async def _handshake(self, sock: socket.socket, client: _Client,
                         protocol: asyncio.StreamReaderProtocol,
                         deadline: float) -> asyncio.Transport:
        """TLS, to be done by ``deadline``; past MAX_HANDSHAKES the one that has taken
        longest is shed, so stalled handshakes cannot keep a real client waiting."""
        loop = asyncio.get_running_loop()
        if len(self._handshaking) >= MAX_HANDSHAKES:
            oldest = next(iter(self._handshaking))
            self._shed_one(self._handshaking.pop(oldest), loop.time(),
                           "too many TLS handshakes in progress; closing the oldest")
        self._handshaking[id(client)] = client
        client.handshaking = True  # shedding it now is cancelling it: asyncio closes the socket
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self.ssl_context,
                ssl_handshake_timeout=max(0.1, deadline - loop.time()))
        finally:
            client.handshaking = False
            self._handshaking.pop(id(client), None)
        return transport

    def close(self) -> None:
        """Stop accepting, close the listening sockets and every client connection."""
        for task in self._accepting:
            task.cancel()
        for listener in self.sockets:
            listener.close()
        for client in list(self._clients.values()):
            if client.task is not None:
                client.task.cancel()

    async def wait_closed(self) -> None:
        """Wait until every client connection has ended."""
        tasks = [c.task for c in self._clients.values() if c.task is not None]
        await asyncio.gather(*self._accepting, *tasks, return_exceptions=True)


def _listeners(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names (every interface when None)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if host is None and exc.errno == errno.EADDRNOTAVAIL:
                    made.pop().close()  # no IPv6 here: every interface means IPv4's
                    continue
                raise
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made


async def serve(handler: Handler, host: str | None, port: int, *,
                ssl_context: ssl.SSLContext | None = None, gate: Gate | None = None,
                limits: Limits | None = None) -> HTTPServer:
    """Start serving on ``host:port``; raises OSError when it cannot listen.

    ``gate`` learns when a request is being answered, so background work can wait.
    """
    return HTTPServer(handler, _listeners(host, port), ssl_context, gate or Gate(),
                      limits or Limits())
