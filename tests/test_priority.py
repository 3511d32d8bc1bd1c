"""Requests come first: background work waits while one is answered, but never for long."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from exporter.client import ApiClient
from exporter.exchange import Request, Response
from exporter.fleet import Fleet
from exporter.poller import Poller
from exporter.priority import Gate
from exporter.server import serve
from exporter.simulator import SimulatorApp
from exporter.store import Store
from exporter.tokens import TOKEN_ENV, TokenSource

BIG = b"x" * (48 * 1024 * 1024)  # more than the transport and both sockets' buffers hold


async def _big(_: Request) -> Response:
    return Response(200, BIG)


def _stalled_scrape(port: int) -> socket.socket:
    """A client that sends a request and reads nothing until told to."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return client


def _read_all(client: socket.socket) -> int:
    total = 0
    while chunk := client.recv(1 << 20):
        total += len(chunk)
    client.close()
    return total


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _with_server(gate: Gate, body: Callable[[int], Awaitable[None]]) -> None:
    server = await serve(_big, "127.0.0.1", 0, gate=gate)
    try:
        await body(int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()


def _steady_reader(client: socket.socket, chunk: int, pause: float) -> int:
    """Read the whole answer in ``chunk``-byte reads with ``pause`` between them."""
    total = 0
    while data := client.recv(chunk):
        total += len(data)
        time.sleep(pause)
    client.close()
    return total


def test_background_turn_waits_for_the_answer_being_written() -> None:
    """A turn taken while a large answer is being written to a client that keeps reading
    starts once the client has it all."""
    gate = Gate(patience=30)

    async def scenario(port: int) -> None:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await _until(lambda: gate.in_flight == 1)
        turn_done = asyncio.Event()

        async def background() -> None:
            async with gate.turn():
                turn_done.set()

        reading = asyncio.create_task(asyncio.to_thread(_steady_reader, client, 1 << 16, 0.001))
        task = asyncio.create_task(background())
        await asyncio.sleep(0.3)
        assert not turn_done.is_set()
        assert not reading.done()
        received = await reading
        await asyncio.wait_for(task, 5)
        assert received > len(BIG)
        assert gate.in_flight == 0

    asyncio.run(_with_server(gate, scenario))


def test_a_stalled_client_gives_up_priority() -> None:
    """A client that stops reading stops counting as in flight after SLOW_CLIENT, so
    background work goes ahead at once rather than after the patience."""
    gate = Gate(patience=30)

    async def scenario(port: int) -> None:
        client = _stalled_scrape(port)
        try:
            await _until(lambda: gate.in_flight == 1, timeout=10)
            # SLOW_CLIENT is a second; 10 s leaves room for a loaded machine, and is still
            # a third of the patience this turn would otherwise wait.
            await _until(lambda: gate.in_flight == 0, timeout=10)
            started = time.monotonic()
            async with gate.turn():
                assert time.monotonic() - started < 2.0  # not the 30 s patience
            received = await asyncio.to_thread(_read_all, client)
            assert received > len(BIG)  # reading again, the client gets its answer whole
        finally:
            client.close()

    asyncio.run(_with_server(gate, scenario))


def test_busy_server_delays_background_work_only_by_patience() -> None:
    """Requests in flight back to back hold background work for ``patience``, then no more."""
    patience = 2.0  # long enough that a loaded machine's delays do not blur the two cases

    gate = Gate(patience=patience)

    async def scenario() -> None:
        with gate.serving():
            started = time.monotonic()
            async with gate.turn():
                waited = time.monotonic() - started
            assert patience - 0.1 < waited < patience + 4
            started = time.monotonic()
            async with gate.turn():  # busy past patience: no wait now
                assert time.monotonic() - started < patience / 2
            assert gate.in_flight == 1

    asyncio.run(scenario())


def test_poll_is_recorded_only_after_the_request_in_flight() -> None:
    """A poll neither asks the API nor records its answer while a request is in flight."""
    fleet = Fleet(connections=1, databases=3, seed=1, token="t0ken")  # noqa: S106 - test token
    connection_id = next(iter(fleet.connections))

    async def scenario() -> None:
        app = SimulatorApp(fleet)
        sim = await serve(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{sim.sockets[0].getsockname()[1]}/v1"
        client = ApiClient(url, timeout=5, max_connections=1)
        store = Store([connection_id], stale_after=300)
        gate = Gate(patience=30)
        tokens = {connection_id: TokenSource(None, {TOKEN_ENV: "t0ken"})}
        poller = Poller(store, client, tokens, interval=60, max_concurrency=1, gate=gate)
        try:
            with gate.serving():
                task = asyncio.create_task(poller.poll(connection_id))
                await asyncio.sleep(0.3)
                assert not store.states[connection_id].polled
                assert not app.requests
            await asyncio.wait_for(task, 5)
            assert store.states[connection_id].up
            assert len(app.requests) == 1
        finally:
            await client.close()
            sim.close()

    asyncio.run(scenario())
