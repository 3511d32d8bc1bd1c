"""Fixtures that run the real simulator and exporter processes on loopback."""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


# Ports free_port() picks from: below Linux's ephemeral range (32768-60999 by default), so
# the kernel never hands one to another process's bind to port 0 or outgoing connection
# between our check and the child's bind, which is the race a port from bind(("", 0)) has.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and that the kernel will not hand out meanwhile, for
    a process that cannot report the port it bound (the exporter and simulator fixtures bind
    port 0 and read theirs back instead)."""
    low, high = _PORT_RANGE
    for _ in range(1000):
        port = low + secrets.randbelow(high - low)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError("no free loopback port found")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` is listening on, read from /proc."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Call ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last_error, result = exc, None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last error: {last_error!r}")


Labels = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """One parsed /metrics answer."""

    text: str
    samples: dict[tuple[str, Labels], float]
    types: dict[str, str]
    helps: dict[str, str]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series with exactly these labels, or None."""
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """Every series of ``name`` whose labels include ``match``."""
        out = []
        for (sample_name, labels), number in self.samples.items():
            as_dict = dict(labels)
            if sample_name == name and all(as_dict.get(k) == v for k, v in match.items()):
                out.append((as_dict, number))
        return out

    def names(self) -> set[str]:
        """Every sample name present."""
        return {name for name, _ in self.samples}


def parse_exposition(text: str) -> Scrape:
    """Parse with prometheus_client's own parser; a duplicate series fails the test."""
    samples: dict[tuple[str, Labels], float] = {}
    types, helps = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        helps[family.name] = family.documentation
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return Scrape(text, samples, types, helps)


class Process:
    """A child process whose output goes to a file and which is stopped with SIGTERM."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str],
                 nofile: tuple[int, int] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=ROOT, preexec_fn=limit if nofile else None)  # noqa: PLW1509 - only setrlimit, which is async-signal-safe

    def logs(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REFLEXDB_", "COVERAGE"))}
    env.update(extra)
    return env


class Simulator:
    """The simulator process and its control API."""

    def __init__(self, tmp: Path, token: str, *, connections: int = 3, databases: int = 4,
                 seed: int = 11, static: bool = True, tick: str = "1s",
                 extra_args: list[str] | None = None) -> None:
        self.token = token
        self.config_path = tmp / "sim-config.yaml"
        # Port 0: the simulator binds a free port itself and writes it into the config.
        args = [sys.executable, "-m", "exporter.simulator",
                "--web.listen-address", "127.0.0.1:0",
                "--connections", str(connections), "--databases", str(databases),
                "--seed", str(seed), "--tick", tick, "--write-config", str(self.config_path)]
        if static:
            args.append("--static")
        args.extend(extra_args or [])
        self.config_path.unlink(missing_ok=True)
        self.process = Process(args, tmp / "simulator.log", _env(REFLEXDB_SIMULATOR_TOKEN=token))
        self.config: dict[str, Any] = wait_until(self._written_config, timeout=30,
                                                 what="the simulator to listen")
        self.url = self.config["api"]["url"].removesuffix("/v1")
        self.port = int(httpx.URL(self.url).port or 0)
        self.http = httpx.Client(base_url=self.url, timeout=10, verify=False)  # noqa: S501 - our own test server's control API

    def _written_config(self) -> dict[str, Any] | None:
        """The exporter config the simulator wrote once listening, when whole."""
        assert self.process.proc.poll() is None, self.process.logs()[-2000:]
        if not self.config_path.exists():
            return None
        try:
            config = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError:
            return None  # still being written
        if isinstance(config, dict) and "connections" in config:
            return config
        return None

    @property
    def connection_ids(self) -> list[str]:
        """Connection IDs as the simulator answers them (some in uppercase)."""
        return [c["id"] for c in self.config["connections"]]

    def fleet(self) -> dict[str, Any]:
        """Every connection's current answer, keyed by lowercase ID."""
        return dict(self.http.get("/_sim/fleet").raise_for_status().json())

    def databases(self, connection_id: str) -> list[Any]:
        """The raw database records of one connection."""
        return list(self.fleet()[connection_id.lower()]["databases"])

    def control(self, method: str, path: str, payload: Any = None) -> None:
        """Call a control endpoint and insist it worked."""
        self.http.request(method, f"/_sim/{path}", json=payload).raise_for_status()

    def patch_database(self, connection_id: str, database_id: str, **fields: Any) -> None:
        """Merge fields into one database record."""
        self.control("PATCH", f"connections/{connection_id}/databases/{database_id}", fields)

    def fault(self, connection_id: str, **fault: Any) -> None:
        """Make the API answer this connection with an injected fault."""
        self.control("PUT", f"connections/{connection_id}/fault", fault)

    def hang(self) -> None:
        """Make every API request of every connection hang for an hour."""
        for connection_id in self.connection_ids:
            self.fault(connection_id, status=200, body="{}", delay=3600)

    def clear_fault(self, connection_id: str) -> None:
        """Let the API answer this connection normally again."""
        self.control("DELETE", f"connections/{connection_id}/fault")

    def requests(self) -> list[dict[str, Any]]:
        """The API requests received, oldest first."""
        return list(self.http.get("/_sim/requests").raise_for_status().json())

    def close(self) -> None:
        """Stop the process."""
        self.http.close()
        self.process.stop()


class Exporter:
    """The exporter process, configured from a dict, and helpers to scrape it."""

    def __init__(self, tmp: Path, config: dict[str, Any], token: str | None,
                 extra_args: list[str] | None = None, wait_ready: bool = True, *,
                 nofile: tuple[int, int] | None = None) -> None:
        number = next(_exporters)
        self.config_path = tmp / f"exporter-{number}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        # Port 0: the exporter binds a free port itself; ``port`` reads it back from /proc.
        args = [sys.executable, "-m", "exporter", "--config.file", str(self.config_path),
                "--web.listen-address", "127.0.0.1:0", "--log.level", "debug",
                *(extra_args or [])]
        env = _env(REFLEXDB_API_TOKEN=token) if token else _env()
        self.process = Process(args, tmp / f"exporter-{number}.log", env, nofile)
        self._port: int | None = None
        self._url: str | None = None
        self._http: httpx.Client | None = None
        if wait_ready:
            wait_until(lambda: self.http.get("/-/ready").status_code == 200, timeout=20,
                       what="the exporter to be ready")

    @property
    def port(self) -> int:
        """The port the exporter listens on, once it does."""
        if self._port is None:
            def bound() -> int | None:
                assert self.process.proc.poll() is None, (
                    "the exporter exited: " + self.logs()[-2000:])
                ports = listening_ports(self.pid)
                return min(ports) if ports else None
            self._port = int(wait_until(bound, timeout=30, what="the exporter to listen"))
        return self._port

    @property
    def url(self) -> str:
        """The exporter's base URL: plain HTTP unless a test set another."""
        return self._url or f"http://127.0.0.1:{self.port}"

    @url.setter
    def url(self, value: str) -> None:
        self._url = value

    @property
    def http(self) -> httpx.Client:
        """A plain HTTP client for the exporter."""
        if self._http is None:
            self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self._http

    def scrape(self, path: str = "/metrics") -> Scrape:
        """GET the metrics and parse them."""
        response = self.http.get(path)
        response.raise_for_status()
        return parse_exposition(response.text)

    def wait_for(self, check: Callable[[Scrape], Any], timeout: float = 15.0,
                 what: str = "metrics") -> Scrape:
        """Scrape until ``check`` holds for a scrape, and return that scrape."""
        found: list[Scrape] = []

        def attempt() -> bool:
            scrape = self.scrape()
            if check(scrape):
                found.append(scrape)
                return True
            return False

        wait_until(attempt, timeout, what)
        return found[-1]

    def logs(self) -> str:
        """Everything the exporter logged so far."""
        return self.process.logs()

    @property
    def pid(self) -> int:
        """The exporter's process ID, for /proc probes."""
        return self.process.proc.pid

    def assert_calm(self) -> None:
        """No error line and no traceback in the log so far."""
        text = self.logs()
        assert "level=error" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]

    def close(self) -> int:
        """Stop the process; returns its exit code."""
        if self._http is not None:
            self._http.close()
        return self.process.stop()


_exporters = itertools.count(1)  # names each exporter's config and log apart


@pytest.fixture
def token() -> str:
    """A distinctive API token, easy to find if it ever leaked."""
    return "tok-" + secrets.token_hex(16)


@pytest.fixture
def simulator(tmp_path: Path, token: str) -> Iterator[Simulator]:
    """A static simulator with 3 connections of 4 databases."""
    sim = Simulator(tmp_path, token)
    yield sim
    sim.close()


def exporter_config(sim: Simulator, **overrides: Any) -> dict[str, Any]:
    """A config polling every simulated connection quickly."""
    config: dict[str, Any] = {
        "api": {"url": sim.config["api"]["url"], "timeout": "2s"},
        "poll_interval": "0.5s",
        "stale_after": "1m",
        "connections": [{"id": cid} for cid in sim.connection_ids],
    }
    config.update(overrides)
    return config


def patient_config(sim: Simulator) -> dict[str, Any]:
    """A config whose requests wait 60 s, so a hanging API keeps polls in flight."""
    return exporter_config(sim, api={"url": sim.config["api"]["url"], "timeout": "60s"})


@pytest.fixture
def start_exporter(tmp_path: Path, token: str) -> Iterator[Callable[..., Exporter]]:
    """Start exporters on demand; all are stopped at the end of the test."""
    started: list[Exporter] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Exporter:
        kwargs.setdefault("token", token)
        exporter = Exporter(tmp_path, config, **kwargs)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.close()


@pytest.fixture
def exporter(simulator: Simulator, start_exporter: Callable[..., Exporter]) -> Exporter:
    """An exporter polling the simulator every half second."""
    return start_exporter(exporter_config(simulator))
