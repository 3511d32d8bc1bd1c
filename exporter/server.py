"""HTTP/1.1 on the poller's event loop: accepting clients, each bounded in time and memory.

exchange.py runs each connection's requests and answers (h11 parses). Everything a client
can hold is bounded here or there: connections (the idlest one goes when a new one arrives
at the cap), the time to send a request, the time an answer may make no progress, the bytes
buffered for reading and for writing, and TLS handshakes, which start only once the client
has sent a whole first record (its ClientHello).
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

from exporter.exchange import (
    READ_CHUNK,
    WRITE_BUFFER,
    Conversation,
    Handler,
    Limits,
    spread,
)
from exporter.logs import Throttle
from exporter.priority import Gate

log = logging.getLogger(__name__)

BACKLOG = 1024
# The kernel's send buffer per client (it doubles this): autotuned, a stalled reader would
# make the kernel hold up to 4 MiB for it and us copy them in, a stall of every other answer
# when a hundred arrive at once; measured, a plain scrape is no slower at this size.
SEND_BUFFER = 256 * 1024
# Handshakes cost OpenSSL state and a 256 KiB read buffer each (asyncio's sslproto); past
# this many at once, the oldest is shed (a real client's handshake takes milliseconds).
MAX_HANDSHAKES = 64
# A TLS record: a 5-byte header (type, version, length) and at most 2^14 + 2048 bytes.
TLS_HEADER = 5
TLS_RECORD_MAX = TLS_HEADER + 2**14 + 2048
TLS_HANDSHAKE = 0x16
# How soon to look again at a ClientHello still coming: a hello over one segment (a
# post-quantum key share makes it ~1.8 KB) has its rest a moment behind, a stalled one never.
HELLO_RECHECK = (0.005, 0.5)  # seconds: first, then doubling up to this
ACCEPT_RETRY_SECONDS = 0.1
SHED_GRACE = 1.0  # seconds
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends a reset


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """``[HOST]:PORT`` as in the Go exporters; an empty host means every interface."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address {address!r} is not [HOST]:PORT")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port)


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


def _hello_complete(sock: socket.socket) -> bool:
    """Whether the first TLS record is all in the kernel's buffer (or it is no TLS at all,
    or the client has gone): nothing is read, only looked at."""
    try:
        head = sock.recv(TLS_RECORD_MAX, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    if len(head) < TLS_HEADER:
        return not head  # an end (b"") goes on, to be closed; a partial header waits
    return head[0] != TLS_HANDSHAKE or len(head) >= TLS_HEADER + int.from_bytes(head[3:5])


async def _hello(sock: socket.socket) -> None:
    """Return once the client's first TLS record has arrived whole: until then it costs a
    socket, not OpenSSL state and a handshake slot."""
    delay, longest = HELLO_RECHECK
    while not _hello_complete(sock):
        # The socket stays readable with a partial record in it, so look again later.
        await asyncio.sleep(delay)
        delay = min(2 * delay, longest)


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
            # Nothing but the socket until the client speaks (for TLS, until its ClientHello is
            # whole): a silent or stalled one costs no transport, buffers or TLS state, and
            # goes after read_timeout.
            deadline = loop.time() + spread(self.limits.read_timeout)
            async with asyncio.timeout_at(deadline):
                await _readable(sock)
                if self.ssl_context is not None:
                    await _hello(sock)
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
            await Conversation(self, lambda: self.touch(client), reader, writer).run()
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
