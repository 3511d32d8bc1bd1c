"""The API client's rules, unit by unit: which failures are retried, the size cap, Retry-After,
concurrency, and how each failure is named. A scripted HTTP server on loopback runs in the
test's own event loop, so these tests are fast and see a mutant of exporter/client.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest

from exporter import __version__, client
from exporter.budget import Budget
from exporter.client import (
    ApiClient,
    PollFailure,
    connect_detail,
    parse_retry_after,
    tls_verification,
)
from tests.certs import make_certs

CID = "6f1c2a9e-0d4b-4a8e-9b1f-3c2d5e6f7a8b"
GOOD = json.dumps({"id": CID, "databases": []}).encode()


def response(status: int = 200, body: bytes = GOOD, *, headers: dict[str, str] | None = None,
             length: bool = True, chunked: bool = False) -> bytes:
    """Raw HTTP/1.1 answer bytes; without a length and not chunked, the close ends the body."""
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    else:
        if length:
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


Reply = Callable[[int], Awaitable[bytes | None]]


@dataclass
class Script:
    """A loopback HTTP server answering request n with ``reply(n)``; None hangs up."""

    reply: Reply
    requests: list[tuple[float, bytes]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Every connection, whatever ``handle`` does, is closed when the test ends."""
        self.writers.append(writer)
        await self.handle(reader, writer)

    async def shut(self) -> None:
        """Close every connection still open."""
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request head, answer it as scripted, close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        number = len(self.requests)
        self.requests.append((time.monotonic(), head))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            raw = await self.reply(number)
            if raw is not None:
                writer.write(raw)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.in_flight -= 1
            writer.close()


def always(raw: bytes, delay: float = 0.0) -> Reply:
    """Every request gets ``raw`` after ``delay`` seconds."""
    async def reply(_: int) -> bytes:
        await asyncio.sleep(delay)
        return raw
    return reply


def run(script: Script, body: Callable[[ApiClient, str], Awaitable[object]], *,
        timeout: float = 2.0, retries: int = 2, max_connections: int = 4,
        max_bytes: int = client.MAX_RESPONSE_BYTES) -> object:
    """Serve ``script`` on loopback and run ``body`` with a client pointed at it."""
    async def main() -> object:
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        api = ApiClient(f"http://127.0.0.1:{port}/v1/", timeout, max_connections,
                        retries=retries, max_response_bytes=max_bytes)
        try:
            return await body(api, CID)
        finally:
            await api.close()
            server.close()
            await script.shut()
            await server.wait_closed()
    return asyncio.run(main())


def failure_of(script: Script, **kwargs: object) -> PollFailure:
    """The PollFailure one poll ends with."""
    async def poll(api: ApiClient, cid: str) -> object:
        try:
            await api.get_connection(cid, "tok-secret")
        except PollFailure as failure:
            return failure
        raise AssertionError("the poll succeeded")
    result = run(script, poll, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, PollFailure)
    return result


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff of milliseconds: what is retried matters here, not how long it waits."""
    monkeypatch.setattr(client, "RETRY_BASE_SECONDS", 0.01)


@pytest.mark.parametrize(("status", "reason"), [
    (500, "server_error"), (502, "server_error"), (503, "server_error"), (599, "server_error"),
])
def test_server_errors_are_retried_up_to_the_limit(status: int, reason: str) -> None:
    """A 5xx costs 1 + api.retries requests in one poll, then fails with its reason."""
    script = Script(always(response(status, b"<html>down</html>")))
    failure = failure_of(script, retries=2)
    assert (failure.reason, failure.status) == (reason, status)
    assert len(script.requests) == 3
    assert failure.retries == 2


def test_a_server_error_that_clears_succeeds_within_the_poll() -> None:
    """Two 500s then a good answer: the poll succeeds and says it took two retries."""
    async def reply(number: int) -> bytes:
        return response(500, b"boom") if number < 2 else response()
    script = Script(reply)
    answer = run(script, lambda api, cid: api.get_connection(cid, "tok"))
    assert isinstance(answer, client.Answer)
    assert answer.retries == 2
    assert answer.connection is not None
    assert len(script.requests) == 3


def test_retries_follow_the_configured_count() -> None:
    """api.retries=0 sends one request; api.retries=4 sends five."""
    for retries in (0, 4):
        script = Script(always(response(500, b"x")))
        failure = failure_of(script, retries=retries)
        assert len(script.requests) == retries + 1
        assert failure.retries == retries


@pytest.mark.parametrize(("status", "reason"), [
    (400, "client_error"), (401, "unauthorized"), (403, "forbidden"), (404, "not_found"),
    (409, "client_error"), (418, "client_error"), (429, "rate_limited"), (499, "client_error"),
    (302, "invalid_response"), (204, "invalid_response"),
])
def test_other_answers_are_never_retried(status: int, reason: str) -> None:
    """4xx, 429 and odd statuses cost exactly one request and keep their status."""
    script = Script(always(response(status, b'{"error": "no"}')))
    failure = failure_of(script)
    assert (failure.reason, failure.status, failure.retries) == (reason, status, 0)
    assert len(script.requests) == 1


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"id": 1}', b"{\"databases\": 5}"])
def test_invalid_answers_are_never_retried(body: bytes) -> None:
    """A 200 that is not JSON or not a connection is invalid_response after one request."""
    script = Script(always(response(200, body)))
    failure = failure_of(script)
    assert (failure.reason, failure.status, failure.retries) == ("invalid_response", 200, 0)
    assert len(script.requests) == 1


def test_a_timeout_is_never_retried() -> None:
    """An answer slower than api.timeout is a timeout after one request, not three."""
    script = Script(always(response(), delay=5))
    started = time.monotonic()
    failure = failure_of(script, timeout=0.3)
    assert failure.reason == "timeout"
    assert failure.status is None
    assert "0.3s" in failure.detail
    assert len(script.requests) == 1
    assert time.monotonic() - started < 3


def test_a_slowly_dripping_answer_times_out_as_a_whole() -> None:
    """api.timeout bounds the whole answer, not each read: a byte every 0.1 s still fails."""
    async def drip(_: int) -> bytes | None:
        raise AssertionError("replaced below")
    script = Script(drip)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        script.requests.append((time.monotonic(), b""))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        try:
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        writer.close()
    script.handle = handle  # type: ignore[method-assign]
    failure = failure_of(script, timeout=0.6)
    assert failure.reason == "timeout"
    assert len(script.requests) == 1


def test_only_api_timeout_bounds_an_answer() -> None:
    """No shorter timeout hides under api.timeout: a 5.5 s pause inside an answer (longer than
    httpx's own 5 s default) is waited out when api.timeout is 9 s."""
    async def unused(_: int) -> bytes | None:
        raise AssertionError("replaced below")
    script = Script(unused)
    head, body = response().split(b"\r\n\r\n", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        script.requests.append((time.monotonic(), b""))
        writer.write(head + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5.5)
        writer.write(body)
        await writer.drain()
        writer.close()
    script.handle = handle  # type: ignore[method-assign]

    async def poll(api: ApiClient, cid: str) -> object:
        return await api.get_connection(cid, "tok-secret")
    answer = run(script, poll, timeout=9.0)
    assert isinstance(answer, client.Answer)
    assert answer.connection is not None
    assert answer.connection.databases == ()
    assert len(script.requests) == 1


def test_connection_errors_are_retried() -> None:
    """A refused connection is connect_error, retried api.retries times, naming the host."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused

        async def main() -> PollFailure:
            api = ApiClient(f"http://127.0.0.1:{port}/v1", 2.0, 2, retries=2)
            try:
                await api.get_connection(CID, "tok")
            except PollFailure as failure:
                return failure
            finally:
                await api.close()
            raise AssertionError("the poll succeeded")
        failure = asyncio.run(main())
    assert failure.reason == "connect_error"
    assert failure.status is None
    assert failure.retries == 2
    assert failure.detail == f"127.0.0.1:{port} refused the connection"


def test_a_dropped_connection_is_retried() -> None:
    """A server that hangs up without answering costs 1 + retries attempts."""
    async def hang_up(_: int) -> None:
        return None
    script = Script(hang_up)
    failure = failure_of(script, retries=2)
    assert failure.reason == "connect_error"
    assert len(script.requests) == 3


def test_a_dns_failure_is_retried_api_retries_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name that does not resolve is connect_error, saying it cannot resolve, and is
    retried as one: 1 + api.retries attempts."""
    monkeypatch.setattr(client, "RETRY_BASE_SECONDS", 0.01)
    attempts: list[str] = []
    attempt = ApiClient._attempt

    async def counted(self: ApiClient, connection_id: str, token: str,
                      previous: bytes | None) -> client.Answer:
        attempts.append(connection_id)
        return await attempt(self, connection_id, token, previous)

    monkeypatch.setattr(ApiClient, "_attempt", counted)

    async def main() -> PollFailure:
        api = ApiClient("http://no-such-host.invalid/v1", 5.0, 2, retries=2)
        try:
            await api.get_connection(CID, "tok")
        except PollFailure as failure:
            return failure
        finally:
            await api.close()
        raise AssertionError("the poll succeeded")

    failure = asyncio.run(main())
    assert failure.reason == "connect_error"
    assert failure.detail.startswith("cannot resolve no-such-host.invalid")
    assert failure.retries == 2
    assert len(attempts) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_stops_retries_and_is_reported(status: int) -> None:
    """A 429 or 503 with Retry-After is not retried; the failure carries the wait."""
    script = Script(always(response(status, b"{}", headers={"Retry-After": "7"})))
    failure = failure_of(script)
    assert failure.retry_after == 7
    assert len(script.requests) == 1


def test_retry_after_counts_only_on_429_and_503() -> None:
    """A 500 with Retry-After is retried as any 500, and carries no wait."""
    script = Script(always(response(500, b"{}", headers={"Retry-After": "7"})))
    failure = failure_of(script)
    assert failure.retry_after is None
    assert len(script.requests) == 3


def test_a_429_pauses_or_cuts_the_token_budget() -> None:
    """429 with Retry-After pauses the budget that long; without it, halves its rate."""
    async def with_budget(budget: Budget) -> Callable[[ApiClient, str], Awaitable[object]]:
        async def poll(api: ApiClient, cid: str) -> object:
            with pytest.raises(PollFailure):
                await api.get_connection(cid, "tok", budget=budget)
            return None
        return poll

    paused = Budget(10.0, 1, 0.1)
    script = Script(always(response(429, b"{}", headers={"Retry-After": "30"})))
    run(script, asyncio.run(with_budget(paused)))
    assert paused.paused_until - time.monotonic() == pytest.approx(30, abs=2)
    assert paused.limit == 10.0
    assert paused.codes["429"] == 1

    cut = Budget(10.0, 1, 0.1)
    script = Script(always(response(429, b"{}")))
    run(script, asyncio.run(with_budget(cut)))
    assert cut.limit == 5.0
    assert cut.paused_until == 0.0

    # A 503 with Retry-After holds back its own connection (tests/test_faults.py), not the
    # token: the budget is neither paused nor cut.
    unavailable = Budget(10.0, 1, 0.1)
    script = Script(always(response(503, b"{}", headers={"Retry-After": "30"})))
    run(script, asyncio.run(with_budget(unavailable)))
    assert unavailable.limit == 10.0
    assert unavailable.paused_until == 0.0


def test_the_budget_counts_every_attempt_and_recovers_on_success() -> None:
    """Each attempt is counted by code (errors as "error"); a good answer lifts a cut."""
    budget = Budget(10.0, 4, 0.1)
    budget.cut()
    assert budget.limit == 5.0

    async def reply(number: int) -> bytes | None:
        return [response(500, b"x"), None, response()][number]
    script = Script(reply)
    run(script, lambda api, cid: api.get_connection(cid, "tok", budget=budget))
    assert budget.codes == {"500": 1, "error": 1, "200": 1}
    assert budget.limit is not None
    assert budget.limit > 5.0


@pytest.mark.parametrize("chunked", [True, False])
def test_an_undeclared_answer_over_the_cap_is_refused_while_streaming(chunked: bool) -> None:
    """With no Content-Length (chunked or close-delimited), the cap stops the read."""
    big = b'{"databases": [], "pad": "' + b"x" * 20_000 + b'"}'
    script = Script(always(response(200, big, length=False, chunked=chunked)))
    failure = failure_of(script, max_bytes=4096)
    assert (failure.reason, failure.status) == ("invalid_response", 200)
    assert failure.detail == "answer is over the size cap"
    assert len(script.requests) == 1


def test_a_declared_answer_over_the_cap_is_refused_unread() -> None:
    """A Content-Length over the cap is refused before the body is read."""
    big = b" " * 5000
    script = Script(always(response(200, big)))
    failure = failure_of(script, max_bytes=4096)
    assert failure.reason == "invalid_response"
    assert failure.detail == "answer of 5000 bytes is over the size cap"
    assert len(script.requests) == 1


@pytest.mark.parametrize("chunked", [True, False])
def test_an_answer_at_the_cap_is_read(chunked: bool) -> None:
    """An answer of exactly max_response_size bytes is a good answer, declared or not."""
    body = GOOD[:-1] + b" " * (4096 - len(GOOD)) + b"}"
    assert len(body) == 4096
    script = Script(always(response(200, body, length=not chunked, chunked=chunked)))
    answer = run(script, lambda api, cid: api.get_connection(cid, "tok"), max_bytes=4096)
    assert isinstance(answer, client.Answer)
    assert answer.connection is not None


def test_an_answer_cut_short_is_invalid() -> None:
    """Fewer bytes than Content-Length promised, then a close: invalid_response, no retry."""
    raw = response(200, GOOD).replace(b"Content-Length: %d" % len(GOOD), b"Content-Length: 9999")
    script = Script(always(raw))
    failure = failure_of(script)
    assert (failure.reason, failure.detail) == ("invalid_response", "answer was cut short")
    assert failure.status == 200
    assert len(script.requests) == 1


def test_at_most_max_connections_requests_are_in_flight() -> None:
    """Ten polls at once with a cap of 3 never have more than 3 requests open, and do use 3."""
    script = Script(always(response(), delay=0.2))

    async def many(api: ApiClient, cid: str) -> object:
        return await asyncio.gather(*(api.get_connection(cid, "tok") for _ in range(10)))
    run(script, many, max_connections=3)
    assert len(script.requests) == 10
    assert script.most_in_flight == 3


def test_the_request_carries_the_token_and_names_the_exporter() -> None:
    """GET /v1/connections/{id} with Authorization: Bearer, User-Agent and Accept."""
    script = Script(always(response()))
    run(script, lambda api, cid: api.get_connection(cid, "tok-abc"))
    head = script.requests[0][1].decode().lower()
    assert head.startswith(f"get /v1/connections/{CID} http/1.1\r\n")
    assert "authorization: bearer tok-abc\r\n" in head
    assert f"user-agent: reflexdb-exporter/{__version__}\r\n" in head
    assert "accept: application/json\r\n" in head


def test_an_unchanged_answer_is_not_parsed_again() -> None:
    """An answer byte-identical to ``previous`` comes back without a connection."""
    script = Script(always(response()))

    async def twice(api: ApiClient, cid: str) -> object:
        first = await api.get_connection(cid, "tok")
        second = await api.get_connection(cid, "tok", previous=first.digest)
        third = await api.get_connection(cid, "tok", previous=b"other")
        return first, second, third
    first, second, third = run(script, twice)  # type: ignore[misc]
    assert first.connection is not None
    assert second.connection is None
    assert second.digest == first.digest
    assert third.connection is not None
    assert len(first.digest) == 16


def test_backoff_is_full_jitter_doubling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry n waits a random share of 0.5 s * 2^(n-1): the bounds passed are 0.5, 1, 2."""
    monkeypatch.setattr(client, "RETRY_BASE_SECONDS", 0.5)
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return 0.0
    monkeypatch.setattr(client.random, "uniform", uniform)
    script = Script(always(response(500, b"x")))
    failure_of(script, retries=3)
    assert bounds == [(0, 0.5), (0, 1.0), (0, 2.0)]


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"error": "not_found", "message": "connection not found"}',
     "HTTP 404: not_found: connection not found"),
    (b'{"error": "not_found"}', "HTTP 404: not_found"),
    (b'{"error": "not_found", "message": 5}', "HTTP 404: not_found"),
    (b'{"error": 5, "message": "x"}', "HTTP 404"),
    (b"<html>nope</html>", "HTTP 404"),
    (b'["error"]', "HTTP 404"),
    (b"\xff\xfe", "HTTP 404"),
    (json.dumps({"error": "e" * 300, "message": "m" * 300}).encode(),
     "HTTP 404: " + "e" * 100 + ": " + "m" * 200),
])
def test_error_details_come_from_the_error_body(body: bytes, detail: str) -> None:
    """The detail reads {error, message} from the body, trimmed; anything else is the status."""
    assert client._error_detail(404, body) == detail


def test_error_detail_reads_only_the_start_of_the_body() -> None:
    """A huge error body is not parsed past its first 4 KiB."""
    body = b'{"error": "x", "pad": "' + b"p" * 5000 + b'"}'
    assert client._error_detail(500, body) == "HTTP 500"


def test_retry_after_parsing_edges() -> None:
    """Retry-After: spaces trimmed, 0 kept, exactly the cap kept, empty and junk ignored."""
    now = 1_800_000_000.0
    assert parse_retry_after(" 5 ", now) == 5
    assert parse_retry_after("0", now) == 0
    assert parse_retry_after("3600", now) == 3600
    assert parse_retry_after("3601", now) == client.MAX_RETRY_AFTER_SECONDS == 3600
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("1.5", now) is None
    date = formatdate(now + 10_000, usegmt=True)
    assert parse_retry_after(date, now) == 3600
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90)


def test_connect_details_name_what_failed() -> None:
    """Each kind of connection failure gets its own words, naming the host."""
    host = "api.example:443"
    gai = socket.gaierror(-2, "Name or service not known")
    assert connect_detail(gai, host) == f"cannot resolve {host}: Name or service not known"
    assert connect_detail(socket.gaierror(), host) == f"cannot resolve {host}: " \
        "name resolution failed"
    verify = ssl.SSLCertVerificationError(1, "bad")
    verify.verify_message = "self-signed certificate"
    assert connect_detail(verify, host) == \
        f"TLS verification of {host} failed: self-signed certificate"
    tls = ssl.SSLError(1, "x")
    tls.reason = "WRONG_VERSION_NUMBER"
    assert connect_detail(tls, host) == f"TLS with {host} failed: WRONG_VERSION_NUMBER"
    bare = ssl.SSLError()
    bare.reason = None  # as the ssl module leaves it when OpenSSL names no reason
    assert connect_detail(bare, host) == f"TLS with {host} failed: handshake error"
    assert connect_detail(ConnectionRefusedError(), host) == f"{host} refused the connection"
    assert connect_detail(ConnectionResetError(), host) == f"{host} reset the connection"
    unreachable = OSError(101, "Network is unreachable")
    assert connect_detail(unreachable, host) == \
        f"cannot connect to {host}: Network is unreachable"
    assert connect_detail(RuntimeError("x"), host) == f"cannot connect to {host}: RuntimeError"


def test_connect_details_look_through_causes_and_groups() -> None:
    """The cause is found behind __cause__, __context__ and exception groups."""
    host = "h:1"
    outer = RuntimeError("wrapped")
    outer.__cause__ = ConnectionRefusedError()
    assert connect_detail(outer, host) == f"{host} refused the connection"
    context = RuntimeError("during")
    context.__context__ = ConnectionResetError()
    assert connect_detail(context, host) == f"{host} reset the connection"
    group = ExceptionGroup("many", [ValueError("a"), socket.gaierror(-2, "nope")])
    assert connect_detail(group, host) == f"cannot resolve {host}: nope"
    # a named cause wins over a plain OSError met earlier
    plain = OSError(5, "Input/output error")
    plain.__cause__ = ConnectionResetError()
    assert connect_detail(plain, host) == f"{host} reset the connection"
    looped = RuntimeError("a")
    looped.__context__ = looped
    assert connect_detail(looped, host) == f"cannot connect to {host}: RuntimeError"


def test_tls_verification_choices(tmp_path: Path) -> None:
    """Skip-verify wins over a CA file; a CA file gives a context; neither is True."""
    assert tls_verification(None, insecure=False) is True
    assert tls_verification(tmp_path / "absent.pem", insecure=True) is False
    context = tls_verification(None, insecure=True)
    assert context is False
    certs = make_certs(tmp_path / "pki")
    made = tls_verification(certs.ca, insecure=False)
    assert isinstance(made, ssl.SSLContext)
    assert made.verify_mode == ssl.CERT_REQUIRED
    assert len(made.get_ca_certs()) == 1


def test_failures_carry_their_detail() -> None:
    """The detail names what went wrong: the error body, not JSON, or the wrong shape."""
    script = Script(always(response(404, b'{"error": "not_found", "message": "gone"}')))
    assert failure_of(script).detail == "HTTP 404: not_found: gone"
    script = Script(always(response(200, b"<html>")))
    assert failure_of(script).detail == "answer is not JSON"
    script = Script(always(response(200, b"[1]")))
    assert failure_of(script).detail == "answer is not a JSON object"
    script = Script(always(response(200, b'{"id": "x"}')))
    assert failure_of(script).detail == "answer has no databases list"


def test_a_poll_failure_reads_as_reason_and_detail() -> None:
    """str() of a failure is "reason: detail"; it starts with no retries and no wait."""
    failure = PollFailure("timeout", "no complete answer within 2s")
    assert str(failure) == "timeout: no complete answer within 2s"
    assert (failure.retries, failure.waited, failure.retry_after, failure.status) == (
        0, 0.0, None, None)


def test_a_429_with_an_http_date_is_honoured() -> None:
    """Retry-After as an HTTP date on a 429 is read against the current time."""
    header = formatdate(time.time() + 120, usegmt=True)
    script = Script(always(response(429, b"{}", headers={"Retry-After": header})))
    failure = failure_of(script)
    assert failure.retry_after is not None
    assert 110 < failure.retry_after <= 120


def test_a_declared_oversize_keeps_its_status() -> None:
    """A refused oversized answer still says which status it came with."""
    script = Script(always(response(500, b" " * 5000)))
    failure = failure_of(script, max_bytes=4096)
    assert (failure.reason, failure.status) == ("invalid_response", 500)


def test_an_error_body_of_exactly_4097_bytes_is_not_parsed() -> None:
    """Only the first 4096 bytes of an error body are read for its detail."""
    body = b'{"error": "x", "pad": "' + b"p" * (4097 - 25) + b'"}'
    assert len(body) == 4097
    assert client._error_detail(500, body) == "HTTP 500"


def test_redirects_are_not_followed() -> None:
    """A 302 to a good answer on the same server is an invalid_response: the bearer token is
    never sent after a redirect."""
    async def reply(number: int) -> bytes:
        if number == 0:
            return response(302, b"", headers={"Location": f"/v1/connections/{CID}?again"})
        return response()
    script = Script(reply)
    failure = failure_of(script)
    assert (failure.reason, failure.status) == ("invalid_response", 302)
    assert len(script.requests) == 1


def test_different_answers_have_different_digests() -> None:
    """The digest is of the body: a changed answer is parsed even after an unchanged one."""
    other = json.dumps({"id": CID, "databases": [], "name": "renamed"}).encode()

    async def reply(number: int) -> bytes:
        return response(200, GOOD if number == 0 else other)
    script = Script(reply)

    async def twice(api: ApiClient, cid: str) -> object:
        first = await api.get_connection(cid, "tok")
        return first, await api.get_connection(cid, "tok", previous=first.digest)
    first, second = run(script, twice)  # type: ignore[misc]
    assert first.digest != second.digest
    assert second.connection is not None
    assert second.connection.name == "renamed"


def test_the_default_is_two_retries() -> None:
    """ApiClient retries twice unless told otherwise."""
    script = Script(always(response(500, b"x")))

    async def main(port: int) -> int:
        api = ApiClient(f"http://127.0.0.1:{port}/v1", 2.0, 2)
        try:
            with pytest.raises(PollFailure) as caught:
                await api.get_connection(CID, "tok")
            return caught.value.retries
        finally:
            await api.close()

    async def serve() -> int:
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        try:
            return await main(server.sockets[0].getsockname()[1])
        finally:
            server.close()
            await script.shut()
            await server.wait_closed()
    assert asyncio.run(serve()) == 2
    assert len(script.requests) == 3


def test_time_waiting_for_a_slot_is_not_the_apis_time() -> None:
    """With one slot and two polls at once, the second reports the time it waited for the
    slot as waited; the budget records each answer's own duration, not the clock."""
    script = Script(always(response(), delay=0.3))
    budget = Budget(None, 4, 0.1)

    async def both(api: ApiClient, cid: str) -> object:
        return await asyncio.gather(api.get_connection(cid, "tok", budget=budget),
                                    api.get_connection(cid, "tok", budget=budget))
    first, second = run(script, both, max_connections=1)  # type: ignore[misc]
    waits = sorted([first.waited, second.waited])
    assert waits[0] < 0.15
    assert 0.2 < waits[1] < 2.0
    assert 0.4 < budget.duration_sum < 3.0
    assert budget.codes == {"200": 2}


def test_time_waiting_for_the_budget_is_counted_as_waited() -> None:
    """A request held back by the token's rate reports that wait in ``waited``."""
    script = Script(always(response()))
    budget = Budget(2.0, 1, 0.1)  # one request every half second, no burst

    async def three(api: ApiClient, cid: str) -> object:
        return [await api.get_connection(cid, "tok", budget=budget) for _ in range(3)]
    answers = run(script, three)
    waited = [a.waited for a in answers]  # type: ignore[attr-defined]
    assert waited[0] < 0.2
    assert 0.3 < waited[1] < 1.5
    assert 0.3 < waited[2] < 1.5
    assert budget.waited == pytest.approx(sum(waited), abs=0.1)


def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    """Against an HTTPS server with a private CA, the default client refuses the
    certificate (connect_error naming verification); given the CA, it reads the answer."""
    certs = make_certs(tmp_path / "pki")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    script = Script(always(response()))

    async def main() -> tuple[PollFailure, object]:
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0, ssl=served)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        default = ApiClient(url, 5.0, 2, retries=0)
        trusting = ApiClient(url, 5.0, 2, retries=0,
                             verify=tls_verification(certs.ca, insecure=False))
        try:
            with pytest.raises(PollFailure) as caught:
                await default.get_connection(CID, "tok")
            return caught.value, await trusting.get_connection(CID, "tok")
        finally:
            await default.close()
            await trusting.close()
            server.close()
            await script.shut()
            await server.wait_closed()
    refused, answer = asyncio.run(main())
    assert refused.reason == "connect_error"
    assert refused.detail.startswith("TLS verification of 127.0.0.1:"), refused.detail
    assert isinstance(answer, client.Answer)


def test_budget_waits_add_up_over_retries() -> None:
    """Each attempt waits for the budget; the poll's waited is the sum over its attempts,
    and each failed attempt's duration is its own, not the clock."""
    async def reply(number: int) -> bytes:
        return response(500, b"x") if number < 3 else response()
    script = Script(reply)
    budget = Budget(2.0, 1, 0.1)  # one request every half second

    async def poll(api: ApiClient, cid: str) -> object:
        await budget.acquire()  # the budget's first moment is spent: every attempt waits
        return await api.get_connection(cid, "tok", budget=budget)
    answer = run(script, poll, retries=3)
    assert isinstance(answer, client.Answer)
    assert answer.retries == 3
    assert answer.waited > 1.2  # four attempts, each about half a second after the last
    assert 0 < budget.duration_sum < 5
