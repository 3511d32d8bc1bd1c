"""README rules no other fast test pinned: the debug-only lastError, the 1 s scrape priority
and the one gate it needs, bursts of max_concurrency, the listen address and the loud
skip-verify warning."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporter import cli, logs, memory, runtime
from exporter.client import ApiClient
from exporter.config import Config
from exporter.models import read_connection
from exporter.poller import Poller
from exporter.priority import Gate
from exporter.runtime import Options, Runtime
from exporter.server import parse_listen_address
from exporter.state import ConnectionState
from exporter.store import Store
from exporter.tokens import TOKEN_ENV, TokenSource
from tests.test_client_rules import CID

UNRESOLVABLE = "http://no-such-host.invalid/v1"  # .invalid never resolves (RFC 6761)
REFUSED = "http://127.0.0.1:9/v1"  # never reached: these tests stop before any poll
LAST_ERROR = "replica lag: binlog position 4711 was purged"


def _tokens() -> dict[str, TokenSource]:
    return {CID: TokenSource(None, {TOKEN_ENV: "tok-rule-pins"})}


def _config(**api: Any) -> Config:
    return Config.model_validate({"api": {"url": REFUSED, **api}, "poll_interval": "60s",
                                  "connections": [{"id": CID}]})


def _answer(last_error: str | None) -> bytes:
    database = {"id": "db-1", "status": "failed", "lastError": last_error}
    return json.dumps({"id": CID, "databases": [database]}).encode()


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put back the root logger (and the httpx loggers logs.setup quiets) as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def _drive_last_error() -> None:
    """A connection answers without an error, then with a new lastError text; it goes stale."""
    state = ConnectionState(CID)
    state.record_success(read_connection(_answer(None)), 100.0, 0.1, 0)
    state.record_success(read_connection(_answer(LAST_ERROR)), 160.0, 0.1, 0)
    state.record_failure("timeout", 170.0, 0.1, 0, stale_after=0.0)
    assert state.expire(200.0)  # logs at info: proves the handler is writing


@pytest.mark.usefixtures("root_logging")
def test_last_error_is_not_logged_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """At --log.level=info a new lastError text appears nowhere on stderr."""
    logs.setup("info", "json")
    _drive_last_error()
    err = capsys.readouterr().err
    assert [line["msg"] for line in _json_lines(err)] == [
        "connection data is stale; dropping its database series"]
    assert LAST_ERROR not in err
    assert "database reports an error" not in err


@pytest.mark.usefixtures("root_logging")
def test_last_error_is_logged_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """At --log.level=debug a new lastError text is logged with its connection and database."""
    logs.setup("debug", "json")
    _drive_last_error()
    found = [line for line in _json_lines(capsys.readouterr().err)
             if line.get("error") == LAST_ERROR]
    assert len(found) == 1
    assert found[0]["level"] == "debug"
    assert found[0]["connection_id"] == CID
    assert found[0]["database_id"] == "db-1"


@pytest.mark.usefixtures("root_logging")
def test_a_failed_poll_is_a_json_warning_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """At info in json a failed poll is one JSON warning line naming the reason and detail."""
    logs.setup("info", "json")

    async def main() -> None:
        api = ApiClient(UNRESOLVABLE, 5.0, 2, retries=0)
        poller = Poller(Store([CID], stale_after=300), api, _tokens(), 60, 2)
        try:
            await poller.poll(CID)
        finally:
            await api.close()

    asyncio.run(main())
    lines = [line for line in _json_lines(capsys.readouterr().err) if line["msg"] == "poll failed"]
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "warn"
    assert line["connection_id"] == CID
    assert line["reason"] == "connect_error"
    assert line["detail"].startswith("cannot resolve no-such-host.invalid")
    assert {"ts", "logger"} <= line.keys()


def test_the_default_gate_holds_a_turn_about_a_second_while_serving() -> None:
    """A default Gate makes background work wait about 1 s for a request in flight, not longer."""
    async def main() -> float:
        gate = Gate()
        with gate.serving():
            started = time.monotonic()
            async with gate.turn():
                return time.monotonic() - started

    waited = asyncio.run(main())
    assert 0.9 < waited < 1.6


def test_the_default_gate_gives_a_turn_at_once_when_idle() -> None:
    """With no request in flight a default Gate hands out a turn without waiting."""
    async def main() -> float:
        gate = Gate()
        started = time.monotonic()
        async with gate.turn():
            return time.monotonic() - started

    assert asyncio.run(main()) < 0.1


def test_the_runtime_gives_server_and_poller_one_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running exporter's server and poller share one gate, so scrapes hold polls back."""
    monkeypatch.setattr(runtime, "raise_open_files_limit", lambda: 1 << 16)  # no rlimit change

    async def main() -> tuple[Gate, Gate]:
        exporter = Runtime(Options(listen_address="127.0.0.1:0"), _config(), _tokens())
        try:
            await exporter.start()
            assert exporter._server is not None
            assert exporter._poller is not None
            return exporter._server.gate, exporter._poller.gate
        finally:
            await exporter.close()

    served, polled = asyncio.run(main())
    assert served is polled


def test_budgets_burst_max_concurrency() -> None:
    """A token's budget lets max_concurrency requests go at once, then paces the rest."""
    async def main() -> None:
        api = ApiClient(REFUSED, 5.0, 3)
        try:
            poller = Poller(Store([CID], stale_after=300), api, _tokens(), 60, 3,
                            requests_per_second=2.0)
            budgets = list(poller.budgets.values())
            assert len(budgets) == 1
            assert budgets[0].burst == 3
            now = time.monotonic()
            moments = [budgets[0].reserve() - now for _ in range(4)]
            assert max(moments[:3]) < 0.1
            assert moments[3] > 0.4  # 1 / 2 per second after the burst
        finally:
            await api.close()

    asyncio.run(main())


@pytest.mark.parametrize(("address", "expected"), [
    (":10510", (None, 10510)),  # an empty host: every interface
    ("[::1]:9", ("::1", 9)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_listen_addresses_parse(address: str, expected: tuple[str | None, int]) -> None:
    """[HOST]:PORT parses to host and port, an empty host to None (every interface)."""
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["abc", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000",
                                     ":65536", "[::1]", ":-1", ""])
def test_bad_listen_addresses_are_refused(address: str) -> None:
    """A listen address without a port, or with one past 65535, is refused by name."""
    with pytest.raises(ValueError, match=r"is not \[HOST\]:PORT") as raised:
        parse_listen_address(address)
    assert repr(address) in str(raised.value)


def _quiet_main(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Let cli.main run without touching malloc or the root logger; the logs.setup calls."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(memory, "one_arena", lambda: None)
    monkeypatch.setattr(logs, "setup", lambda level, fmt: calls.append((level, fmt)))
    return calls


@pytest.mark.parametrize(("argv", "default"), [
    ([], ":10510"), (["--demo"], "127.0.0.1:10510"),
])
def test_the_default_listen_address_is_the_readmes(
        monkeypatch: pytest.MonkeyPatch, argv: list[str], default: str) -> None:
    """Without --web.listen-address the exporter listens on :10510 (127.0.0.1 with --demo)."""
    calls = _quiet_main(monkeypatch)
    seen: list[str] = []

    def stop(args: Any) -> list[str]:
        seen.append(args.listen_address)
        return ["stopped here by the test"]

    monkeypatch.setattr(cli, "_flag_problems", stop)
    assert cli.main(argv) == 1
    assert seen == [default]
    assert calls == [("info", "logfmt")]  # README: --log.level info, --log.format logfmt


def test_a_bad_listen_address_flag_is_named(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--web.listen-address without a port exits 1 with a line naming the flag and value."""
    _quiet_main(monkeypatch)
    assert cli.main(["--web.listen-address=127.0.0.1"]) == 1
    assert ("--web.listen-address: listen address '127.0.0.1' is not [HOST]:PORT"
            in capsys.readouterr().err)


def test_insecure_skip_verify_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Starting to poll with api.insecure_skip_verify logs it at warning level or above."""
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        exporter = Runtime(Options(listen_address="127.0.0.1:0"),
                           _config(insecure_skip_verify=True), _tokens())
        config = exporter.config
        try:
            exporter._apply(config, _tokens())  # what start() and a reload do, without a socket
        finally:
            await exporter.close()

    asyncio.run(main())
    said = [r for r in caplog.records if "insecure_skip_verify" in r.getMessage()]
    assert said, "api.insecure_skip_verify was not logged"
    assert min(r.levelno for r in said) >= logging.WARNING


def test_verified_tls_logs_no_skip_verify_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Without api.insecure_skip_verify nothing about it is logged (the warning means it)."""
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        exporter = Runtime(Options(listen_address="127.0.0.1:0"), _config(), _tokens())
        try:
            exporter._apply(exporter.config, _tokens())
        finally:
            await exporter.close()

    asyncio.run(main())
    assert not [r for r in caplog.records if "insecure_skip_verify" in r.getMessage()]
