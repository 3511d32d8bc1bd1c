"""Hostile clients, each opened on loopback against our own exporter, and /proc probes.

Shared by the tests (small counts, proving each bound) and the adversarial benchmark (the
issue's counts at 10,000 databases).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

HEAD = "GET {path} HTTP/1.1\r\nHost: exporter\r\n{extra}\r\n"


def rss_bytes(pid: int) -> int:
    """The process's resident memory (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_sockets(pid: int) -> int:
    """How many sockets the process holds open (listeners and API connections included)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def open_files_limit(pid: int) -> tuple[int, int]:
    """The process's soft and hard limits on open files."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError("no open-files limit")


def connect(port: int, *, rcvbuf: int | None = None, host: str = "127.0.0.1",
            timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the exporter; ``rcvbuf`` shrinks what the kernel reads for us."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def stalled_body(port: int, declared: int, sent: int) -> socket.socket:
    """A request that declares a ``declared``-byte body, sends ``sent`` bytes of it and stops."""
    sock = connect(port)
    head = HEAD.format(path="/metrics", extra=f"Content-Length: {declared}\r\n")
    with contextlib.suppress(OSError):  # the server may refuse and close before it all goes
        sock.sendall(head.encode() + b"x" * sent)
    return sock


def stalled_reader(port: int, path: str = "/metrics", gzip: bool = False) -> socket.socket:
    """A scrape whose client never reads the answer."""
    sock = connect(port, rcvbuf=4096)
    extra = "Accept-Encoding: gzip\r\n" if gzip else ""
    sock.sendall(HEAD.format(path=path, extra=extra).encode())
    return sock


def client_hello(server_name: str = "exporter") -> bytes:
    """The bytes a TLS client sends first, made by Python's own TLS stack."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def partial_handshake(port: int, hello: bytes) -> socket.socket:
    """A TLS client that sends half its ClientHello and stalls mid-handshake."""
    sock = connect(port)
    sock.sendall(hello[: len(hello) // 2])
    return sock


def read_answer(sock: socket.socket, limit: int = 1 << 20) -> tuple[bytes, bool]:
    """What the server sends until it closes (or ``limit``), and whether it closed."""
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except TimeoutError:
        return data, False
    return data, False


TCP_CLOSE = 7  # tcpi_state once a reset has arrived (include/net/tcp_states.h)
TCP_CLOSE_WAIT = 8  # the server closed its side with a FIN


def dropped_by_server(sock: socket.socket) -> bool:
    """Whether the server has reset or closed this connection, without reading from it."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (TCP_CLOSE, TCP_CLOSE_WAIT)


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP/1.1 answer's first line."""
    first = answer.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


def close_all(sockets: list[socket.socket]) -> None:
    """Close every client socket, quietly."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
    sockets.clear()


@contextlib.contextmanager
def opened(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """Close the attack's sockets however the block ends."""
    try:
        yield sockets
    finally:
        close_all(sockets)
