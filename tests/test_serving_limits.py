"""The README's limits on one client, pinned in process on loopback with small settings."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exporter import page, webconfig
from exporter.config import parse_duration, parse_size
from exporter.exchange import WRITE_BUFFER, WRITE_SLICE, Handler, Limits, Request, Response
from exporter.server import serve

README = Path(__file__).resolve().parent.parent / "README.md"
BIG = b"x" * (4 * 1024 * 1024)  # read 64 KiB every 50 ms, this takes over 3 s
TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info
WAIT_LIMIT = 10.0  # no single wait in this file may last longer

_P = TypeVar("_P", bound=asyncio.BaseProtocol)

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"),
                                reason="reads a connection's state from Linux's TCP_INFO")


class _RecordingLoop(asyncio.SelectorEventLoop):
    """An event loop that keeps every transport the server makes for an accepted client."""

    def __init__(self) -> None:
        super().__init__()
        self.transports: list[asyncio.Transport] = []

    async def connect_accepted_socket(
            self, protocol_factory: Callable[[], _P], sock: socket.socket,
            **kwargs: Any) -> tuple[asyncio.Transport, _P]:
        transport, protocol = await super().connect_accepted_socket(
            protocol_factory, sock, **kwargs)
        self.transports.append(transport)
        return transport, protocol


async def _answer(request: Request) -> Response:
    """Name the request and the body it came with."""
    return Response(200, f"{request.method} {request.path} {len(request.body)}\n".encode())


async def _big(_: Request) -> Response:
    return Response(200, BIG)


@contextlib.contextmanager
def _serving(limits: Limits, handler: Handler = _answer) -> Iterator[tuple[int, _RecordingLoop]]:
    """The real server on a loopback port, its event loop in a thread of its own."""
    loop = _RecordingLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(
            serve(handler, "127.0.0.1", 0, limits=limits), loop).result(WAIT_LIMIT)

        async def stop() -> None:
            server.close()
            await asyncio.wait_for(server.wait_closed(), WAIT_LIMIT)

        try:
            yield int(server.sockets[0].getsockname()[1]), loop
        finally:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT_LIMIT + 1)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_LIMIT)
        loop.close()


def _connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # set before connecting, so the window starts that small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(WAIT_LIMIT)
    sock.connect(("127.0.0.1", port))
    return sock


def _open(sock: socket.socket) -> bool:
    """Whether the connection is still established, looked at without reading from it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_ESTABLISHED


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection, or None if it was open throughout."""
    started = time.monotonic()
    while (waited := time.monotonic() - started) < seconds:
        if not _open(sock):
            return waited
        time.sleep(0.02)
    return None


class _Answers:
    """The answers on one connection, read one at a time (pipelined ones may share a read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _more(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed {what}: {self.data!r}"
        self.data += chunk

    def next(self) -> tuple[int, bytes]:
        """The next whole answer's status and body (framed by Content-Length)."""
        while b"\r\n\r\n" not in self.data:
            self._more("before a whole head")
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        while len(self.data) < length:
            self._more("mid-body")
        body, self.data = self.data[:length], self.data[length:]
        return int(lines[0].split()[1]), body


def _ends(sock: socket.socket) -> bool:
    """Whether the server closes the connection (an end or a reset) within WAIT_LIMIT."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_timeout_closes_a_silent_kept_alive_connection() -> None:
    """A kept-alive connection silent after its answer lasts the idle timeout, not the read
    timeout, and is closed once the idle timeout has passed."""
    with _serving(Limits(read_timeout=1, idle_timeout=2)) as (port, _), \
            contextlib.closing(_connect(port)) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _Answers(sock).next() == (200, b"GET /a 0\n")
        answered = time.monotonic()
        time.sleep(1.3)
        assert _open(sock), "closed after the read timeout, before the idle timeout"
        closed = _closed_within(sock, 3.5 - (time.monotonic() - answered))
        assert closed is not None, "still open 3.5 s after the answer, idle timeout 2 s"


def test_read_timeout_counts_from_a_requests_first_byte() -> None:
    """A request head dripped a byte every 0.2 s is cut off a read timeout after its first
    byte, however often bytes arrive."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60 + b"\r\n\r\n"
    with _serving(Limits(read_timeout=1, idle_timeout=30)) as (port, _), \
            contextlib.closing(_connect(port)) as sock:
        started = time.monotonic()
        closed_after: float | None = None
        for byte in head:
            if not _open(sock):
                closed_after = time.monotonic() - started
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > 5:
                break
            time.sleep(0.2)
        assert closed_after is not None, "a dripping request outlived 5 read timeouts"
        assert 0.9 < closed_after < 3.0


def _body(size: int, chunked: bool) -> bytes:
    """A POST whose body is ``size`` bytes, declared up front or sent in two chunks."""
    if not chunked:
        return (f"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
                + b"b" * size)
    return (f"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{4000:x}\r\n{'b' * 4000}\r\n{size - 4000:x}\r\n{'b' * (size - 4000)}\r\n"
            "0\r\n\r\n").encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize("keep_body", [False, True], ids=["exporter", "control-api"])
def test_a_body_of_4_kib_is_read_and_one_byte_more_is_refused(keep_body: bool,
                                                              chunked: bool) -> None:
    """A 4096-byte body is read whole and the connection serves on; 4097 bytes get 413 and
    a closed connection, and the request sent after it is never answered."""
    kept = b"4096" if keep_body else b"0"
    with _serving(Limits(keep_body=keep_body)) as (port, _):
        with contextlib.closing(_connect(port)) as sock:
            sock.sendall(_body(4096, chunked) + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = _Answers(sock)
            assert answers.next() == (200, b"POST /in " + kept + b"\n")
            assert answers.next() == (200, b"GET /next 0\n")
        with contextlib.closing(_connect(port)) as sock:
            sock.sendall(_body(4097, chunked) + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = _Answers(sock)
            status, _ = answers.next()
            assert status == 413
            assert answers.data == b""  # nothing after the refusal, the GET not answered
            assert _ends(sock)


def _scrape(port: int) -> socket.socket:
    """A client with a small receive window that has asked for the big answer."""
    sock = _connect(port, receive_buffer=64 * 1024)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return sock


def test_write_timeout_spares_a_slow_reader_that_keeps_reading() -> None:
    """An answer that takes longer than the write timeout to read, 64 KiB every 50 ms, is
    delivered whole: the timeout bounds a stall, not the whole answer."""
    with _serving(Limits(write_timeout=1.5), _big) as (port, _), \
            contextlib.closing(_scrape(port)) as sock:
        started = time.monotonic()
        received = bytearray()
        while chunk := sock.recv(64 * 1024):
            received += chunk
            assert time.monotonic() - started < 15, "the slow read never ended"
            time.sleep(0.05)
        took = time.monotonic() - started
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert len(body) == len(BIG)
        assert took > 2.0, "the answer was read faster than the test means to"


def test_write_timeout_resets_a_reader_that_stops() -> None:
    """A client that stops reading mid-answer is reset a write timeout after it stopped,
    not sooner and not much later."""
    with _serving(Limits(write_timeout=1.5), _big) as (port, _), \
            contextlib.closing(_scrape(port)) as sock:
        received = 0
        while received < 256 * 1024:
            chunk = sock.recv(64 * 1024)
            assert chunk
            received += len(chunk)
        closed = _closed_within(sock, 8.0)
        assert closed is not None, "a stalled reader was kept 8 s, write timeout 1.5 s"
        assert 1.2 < closed < 6.0


def test_a_stalled_reader_has_at_most_128_kib_and_one_slice_buffered() -> None:
    """While a client reads nothing, the server's transport, sampled every few milliseconds,
    holds at least WRITE_BUFFER of its answer and at most WRITE_BUFFER plus one WRITE_SLICE."""
    with _serving(Limits(write_timeout=10), _big) as (port, loop), \
            contextlib.closing(_connect(port, receive_buffer=4096)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

        async def sizes() -> list[int]:
            seen: list[int] = []
            started = loop.time()
            while loop.time() - started < 1.5:
                seen.extend(t.get_write_buffer_size() for t in loop.transports)
                await asyncio.sleep(0.002)
            return seen

        seen = asyncio.run_coroutine_threadsafe(sizes(), loop).result(WAIT_LIMIT)
        assert len(loop.transports) == 1
        assert max(seen) >= WRITE_BUFFER, "the stalled answer never filled the buffer"
        assert max(seen) <= WRITE_BUFFER + WRITE_SLICE


def _readme_value(pattern: str) -> str:
    found = re.findall(pattern, README.read_text(encoding="utf-8"))
    assert len(found) == 1, f"the README states {pattern!r} {len(found)} times"
    return str(found[0])


def _flag_default(flag: str) -> str:
    return _readme_value(rf"\| `--{re.escape(flag)}=[A-Z]+` \| `([^`]+)` \|")


def test_the_documented_limits_are_the_codes_defaults() -> None:
    """Every number the README gives for serving limits is the one the code uses."""
    limits = Limits()
    assert parse_duration(_flag_default("web.read-timeout")) == limits.read_timeout
    assert parse_duration(_flag_default("web.write-timeout")) == limits.write_timeout
    assert parse_duration(_flag_default("web.idle-timeout")) == limits.idle_timeout
    assert int(_flag_default("web.max-connections")) == limits.max_connections
    assert parse_size(_readme_value(r"no\s+body\s+over\s+(\d+ ?[KM]iB)")) == limits.max_body_bytes
    assert parse_size(_readme_value(r"(\d+ ?[KM]iB)\s+of\s+answer\s+buffered\s+per\s+client")) \
        == WRITE_BUFFER
    assert int(_readme_value(r"past\s+(\d+)\s+waiting\s+a\s+503")) == webconfig.MAX_WAITING_CHECKS
    assert int(_readme_value(r"the\s+(\d+)\s+worst\s+databases")) == page.ATTENTION_ROWS
