"""Hostile clients against the real exporter: each attack is bounded, and it still serves."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from benchmarks import attacks
from tests.certs import make_certs
from tests.conftest import (
    Exporter,
    Scrape,
    Simulator,
    exporter_config,
    parse_exposition,
    wait_until,
)

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024

# Raw requests a strict HTTP/1.1 server must refuse, with the status each deserves.
MALFORMED = [
    ("a Unicode digit as Content-Length",
     "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n".encode(), 400),
    ("a Content-Length of 5,000 digits",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 400),
    ("two different Content-Lengths",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", 400),
    ("Content-Length with Transfer-Encoding",
     b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("whitespace before a colon",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n", 400),
    ("an obs-folded header line",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", 400),
    ("an unparseable target", b"GET http://[::1/metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("a garbage request line", b"HELLO THERE\r\n\r\n", 400),
    ("no Host header in HTTP/1.1", b"GET /metrics HTTP/1.1\r\n\r\n", 400),
    ("a head over the size limit",
     b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    ("a body over the limit",
     b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 413),
]


def _answer(port: int, raw: bytes) -> tuple[int | None, bool]:
    sock = attacks.connect(port, timeout=5)
    try:
        sock.sendall(raw)
        answer, closed = attacks.read_answer(sock)
    finally:
        sock.close()
    return attacks.status_of(answer), closed


def _scrapes(exporter: Exporter) -> None:
    """A normal scraper still gets a whole, parseable answer."""
    assert exporter.scrape().value("reflexdb_exporter_connections") is not None


def _polls_go_on(exporter: Exporter, client: httpx.Client | None = None) -> None:
    """Polls still succeed: the poll counter moves and every connection is up."""
    http = client or exporter.http

    def scrape() -> Scrape:
        return parse_exposition(http.get("/metrics").raise_for_status().text)

    def polls(s: Scrape) -> float:
        return sum(v for _, v in s.series("reflexdb_connection_polls_total"))

    before = polls(scrape())

    def moved() -> Scrape | None:
        now = scrape()
        return now if polls(now) > before + 2 else None

    after = wait_until(moved, what="polls to go on")
    assert all(v == 1 for _, v in after.series("reflexdb_connection_up"))


def test_malformed_requests_get_an_error_status_and_a_closed_connection(
        exporter: Exporter) -> None:
    """Every malformed request gets its 4xx and a closed connection, with nothing logged as
    an error, and the exporter answers the next client normally."""
    for what, raw, expected in MALFORMED:
        status, closed = _answer(exporter.port, raw)
        assert (status, closed) == (expected, True), what
    _scrapes(exporter)
    exporter.assert_calm()


def test_stalled_bodies_are_refused_or_dropped_and_cost_no_memory(
        exporter_with: Callable[..., Exporter]) -> None:
    """Declared bodies over 4 KiB get 413 unread; a small body that stalls is dropped after
    the read timeout; neither grows memory, and scrapes and polls go on meanwhile."""
    exporter = exporter_with("--web.read-timeout=1s")
    _scrapes(exporter)
    idle = attacks.rss_bytes(exporter.pid)
    big = [attacks.stalled_body(exporter.port, 1_000_000, 60_000) for _ in range(100)]
    small = [attacks.stalled_body(exporter.port, 4000, 3999) for _ in range(100)]
    with attacks.opened(big + small):
        for sock in big[:10]:
            answer, closed = attacks.read_answer(sock)
            assert (attacks.status_of(answer), closed) == (413, True)
        _scrapes(exporter)
        assert attacks.rss_bytes(exporter.pid) - idle < 16 * MIB
        for sock in small[:10]:
            answer, closed = attacks.read_answer(sock)
            assert (answer, closed) == (b"", True)  # dropped without an answer
        baseline = attacks.open_sockets(exporter.pid)
        wait_until(lambda: attacks.open_sockets(exporter.pid) < 20, timeout=10,
                   what=f"the exporter to close the stalled clients (from {baseline})")
        _polls_go_on(exporter)
    exporter.assert_calm()


def test_stalled_readers_pin_a_bounded_buffer_and_are_abandoned(
        tmp_path: Path, token: str, start_exporter: Callable[..., Exporter]) -> None:
    """Readers that never read hold at most a small write buffer each, not a copy of the
    exposition, and are dropped after the write timeout; a normal scraper is served."""
    sim = Simulator(tmp_path, token, connections=10, databases=100)
    try:
        exporter = start_exporter(exporter_config(sim, poll_interval="2s"),
                                  extra_args=["--web.write-timeout=3s"])
        body = exporter.http.get("/metrics").content
        assert len(body) > 5 * MIB  # far more than any one reader may pin
        exporter.http.get("/metrics", headers={"Accept-Encoding": "gzip"})
        idle = attacks.rss_bytes(exporter.pid)
        readers = [attacks.stalled_reader(exporter.port, gzip=i % 2 == 1) for i in range(40)]
        with attacks.opened(readers):
            time.sleep(1)
            _scrapes(exporter)
            growth = attacks.rss_bytes(exporter.pid) - idle
            # 20 plain readers would pin 20 x 6 MiB if each kept a private copy.
            assert growth < 24 * MIB, f"{growth / MIB:.1f} MiB for 40 stalled readers"
            # A gzip answer fits the sockets' buffers and leaves its client merely idle; a
            # plain one does not, and its client is reset after the write timeout.
            plain = readers[0::2]
            wait_until(lambda: all(attacks.dropped_by_server(s) for s in plain), timeout=20,
                       what="the exporter to reset the plain readers")
            _polls_go_on(exporter)
        exporter.assert_calm()
    finally:
        sim.close()


def test_connection_cap_sheds_the_idlest_client(
        exporter_with: Callable[..., Exporter]) -> None:
    """At --web.max-connections, each new client closes the idlest one: the exporter never
    holds more, a fresh scraper gets in, and the warning is logged at most once a second."""
    exporter = exporter_with("--web.max-connections=40")
    started = time.monotonic()
    idle = [attacks.connect(exporter.port) for _ in range(120)]
    with attacks.opened(idle):
        wait_until(lambda: attacks.open_sockets(exporter.pid) <= 40 + 8, timeout=10,
                   what="the exporter to keep to its cap")
        first = idle[0]
        first.settimeout(5)
        assert attacks.read_answer(first) == (b"", True)  # the oldest idle one was closed
        with httpx.Client(base_url=exporter.url, timeout=10) as fresh:
            assert fresh.get("/-/healthy").status_code == 200
        _scrapes(exporter)
        _polls_go_on(exporter)
    shed_lines = exporter.logs().count("too many client connections")
    assert 1 <= shed_lines <= time.monotonic() - started + 1
    exporter.assert_calm()


def test_descriptor_limit_leaves_room_for_polling(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Under a hard limit of 256 open files, 400 idle clients cannot starve polling: the
    connection cap stays below the limit, health answers, and polls keep succeeding."""
    exporter = start_exporter(exporter_config(simulator), nofile=(256, 256))
    assert attacks.open_files_limit(exporter.pid) == (256, 256)
    started = time.monotonic()
    idle = [attacks.connect(exporter.port) for _ in range(400)]
    with attacks.opened(idle):
        with httpx.Client(base_url=exporter.url, timeout=10) as fresh:
            assert fresh.get("/-/healthy").status_code == 200
        assert attacks.open_sockets(exporter.pid) < 256 - 100
        _polls_go_on(exporter)
    logs = exporter.logs()
    assert "open-files limit leaves room" in logs
    assert logs.count("cannot accept") <= time.monotonic() - started + 1
    exporter.assert_calm()


def test_soft_open_files_limit_is_raised_to_the_hard_one(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Started with a soft limit of 512 under a hard 4096, the exporter runs with 4096."""
    exporter = start_exporter(exporter_config(simulator), nofile=(512, 4096))
    assert attacks.open_files_limit(exporter.pid) == (4096, 4096)


def _tls_exporter(tmp_path: Path, simulator: Simulator, start_exporter: Callable[..., Exporter],
                  read_timeout: str) -> tuple[Exporter, httpx.Client, Path]:
    """An exporter serving TLS with this read timeout, ready; a client that trusts it; the CA."""
    certs = make_certs(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs.server_cert}\n"
                   f"  key_file: {certs.server_key}\n")
    exporter = start_exporter(exporter_config(simulator), wait_ready=False, extra_args=[
        f"--web.config.file={web}", f"--web.read-timeout={read_timeout}"])
    tls = httpx.Client(base_url=f"https://127.0.0.1:{exporter.port}", timeout=10,
                       verify=ssl.create_default_context(cafile=str(certs.ca)))
    wait_until(lambda: tls.get("/-/ready").status_code == 200, what="readiness over TLS")
    return exporter, tls, certs.ca


def test_idle_and_stalled_tls_handshakes_are_cheap_and_dropped(
        tmp_path: Path, simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Silent TLS clients cost no handshake state and, like clients stalled mid-handshake,
    are dropped after the read timeout; a real TLS client is served meanwhile."""
    exporter, tls, _ = _tls_exporter(tmp_path, simulator, start_exporter, "2s")
    idle = attacks.rss_bytes(exporter.pid)
    hello = attacks.client_hello()
    silent = [attacks.connect(exporter.port) for _ in range(300)]
    stalled = [attacks.partial_handshake(exporter.port, hello) for _ in range(100)]
    with attacks.opened(silent + stalled):
        time.sleep(0.5)
        assert tls.get("/-/healthy").status_code == 200
        growth = attacks.rss_bytes(exporter.pid) - idle
        assert growth < 32 * MIB, f"{growth / MIB:.1f} MiB for 400 pending handshakes"
        started = time.monotonic()
        for sock in (silent[0], stalled[0]):
            assert attacks.read_answer(sock)[1]
        assert time.monotonic() - started < 10
        wait_until(lambda: attacks.open_sockets(exporter.pid) < 20, timeout=10,
                   what="every pending handshake to be dropped")
        assert tls.get("/metrics").status_code == 200
        _polls_go_on(exporter, tls)
    tls.close()
    exporter.assert_calm()


def _still_open(sock: socket.socket) -> bool:
    """Whether the server has neither closed nor reset this connection (nothing is read)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _split_hello_handshake(port: int, ca: Path, pause: float) -> bytes:
    """A TLS client whose ClientHello arrives in two parts ``pause`` apart (as a hello over
    one segment can); returns the answer to a GET /-/healthy over it."""
    context = ssl.create_default_context(cafile=str(ca))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    sock = attacks.connect(port)
    try:
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        sock.sendall(hello[: len(hello) // 2])
        time.sleep(pause)
        sock.sendall(hello[len(hello) // 2:])
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.sendall(outgoing.read())
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            incoming.write(chunk)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                answer += tls.read(65536)
        return answer
    finally:
        sock.close()


def test_a_client_stalled_mid_hello_costs_no_handshake_slot(
        tmp_path: Path, simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """TLS starts only once a whole ClientHello is in: 100 clients stalled mid-hello (more
    than the 64 handshakes allowed at once) are none of them shed before the read timeout,
    and a hello that arrives in two parts is still answered."""
    exporter, tls, ca = _tls_exporter(tmp_path, simulator, start_exporter, "8s")
    hello = attacks.client_hello()
    stalled = [attacks.partial_handshake(exporter.port, hello) for _ in range(100)]
    with attacks.opened(stalled):
        time.sleep(1.5)
        assert all(_still_open(sock) for sock in stalled)
        assert tls.get("/-/healthy").status_code == 200
        answer = _split_hello_handshake(exporter.port, ca, pause=0.3)
        assert answer.startswith(b"HTTP/1.1 200")
    tls.close()
    exporter.assert_calm()


@pytest.fixture
def exporter_with(simulator: Simulator,
                  start_exporter: Callable[..., Exporter]) -> Callable[..., Exporter]:
    """Start an exporter on the default simulator with extra flags."""
    def start(*flags: str) -> Exporter:
        return start_exporter(exporter_config(simulator), extra_args=list(flags))
    return start


def test_listener_closes_sockets_it_refuses(exporter: Exporter) -> None:
    """A client that connects and leaves at once costs the exporter no lingering socket."""
    baseline = attacks.open_sockets(exporter.pid)
    for _ in range(50):
        socket.create_connection(("127.0.0.1", exporter.port)).close()
    wait_until(lambda: attacks.open_sockets(exporter.pid) <= baseline, timeout=5,
               what="the sockets to be closed")
