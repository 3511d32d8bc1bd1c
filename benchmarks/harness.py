"""Child processes, /proc readings and the HTTP client the benchmark measures with."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark itself could not run (a process died, a wait timed out)."""


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               alive: Callable[[], None] | None = None, every: float = 0.25) -> Any:
    """Call ``check`` until it returns something truthy, else raise BenchError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            result = check()
        except (httpx.HTTPError, OSError, ValueError, BenchError) as exc:
            last, result = exc, None
        if result:
            return result
        time.sleep(every)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what} (last error: {last!r})")


def sleep_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment``."""
    time.sleep(max(0.0, moment - time.monotonic()))


class Proc:
    """A child process (output to a log file) whose CPU time and memory we read from /proc."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str],
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, cwd=cwd)
        self.pid = self.popen.pid

    def check_alive(self) -> None:
        """Raise BenchError, with the end of its log, if the process has exited."""
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self.popen.returncode}:\n"
                             f"{self.log_tail()}")

    def log_text(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the process printed."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User plus system CPU time of every thread so far (utime + stime, /proc/PID/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) in bytes, from /proc/PID/status."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
        return out

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


class Periodic:
    """Calls ``step`` every ``every`` seconds in a background thread, inside a with block."""

    def __init__(self, every: float, step: Callable[[], None], first_at_once: bool) -> None:
        self.every = every
        self._step = step
        self._first = first_at_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._first:
            self._step()
        while not self._stop.wait(self.every):
            self._step()


class RssSampler(Periodic):
    """Samples a process's VmRSS in a background thread, for its mean and peak over a window.

    One reading is a poor measure for a process whose memory swings with every scrape (the
    naive exporter builds the whole body as one string); the mean over a steady-state window is
    what it holds resident on average, and the peak is what a memory limit must allow.
    """

    def __init__(self, proc: Proc, every: float = 0.2) -> None:
        self.samples: list[int] = []
        super().__init__(every, lambda: self.samples.append(proc.memory()["VmRSS"]),
                         first_at_once=True)

    @property
    def mean(self) -> float:
        """The mean of the samples, in bytes."""
        return sum(self.samples) / len(self.samples)


def snapshot_code(workdir: Path, source: Path = ROOT) -> tuple[Path, str]:
    """Copy exporter/ (from ``source``) and benchmarks/ aside; returns the copy and a fingerprint.

    Every process of one run imports this copy, so all phases measure the same code even while
    someone edits the working tree, and the fingerprint (of exporter/) says which code the
    numbers belong to.
    """
    code = workdir / "code"
    for package, origin in (("exporter", source), ("benchmarks", ROOT)):
        shutil.copytree(origin / package, code / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for path in sorted((code / "exporter").rglob("*.py")):
        digest.update(path.relative_to(code).as_posix().encode() + b"\0" + path.read_bytes())
    return code, digest.hexdigest()[:12]


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs a module with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class Scrape:
    """One timed GET: seconds from connect to the last body byte, bytes on the wire."""

    seconds: float
    size: int
    status: int
    encoding: str


class Client:
    """Times one GET at a time on a fresh connection, with curl or else httpx.

    A fresh TCP connection per scrape keeps every measurement independent; Prometheus keeps
    its connection alive, but a loopback connect costs about 0.1 ms, nothing beside these
    bodies. curl (C, no decompression: ``Accept-Encoding`` is sent by hand, so the gzipped
    bytes are timed as they arrive) adds the least client-side cost, so differences between
    servers show best; ``time_total`` excludes curl's own start-up.
    """

    def __init__(self, kind: str = "auto", timeout: float = 300.0) -> None:
        if kind == "auto":
            kind = "curl" if shutil.which("curl") else "httpx"
        self.kind = kind
        self.timeout = timeout

    def get(self, url: str, gzip: bool = False, save: Path | None = None,
            extra: list[str] | None = None) -> Scrape:
        """GET ``url`` asking for text/plain, gzipped if ``gzip``; the body goes to ``save``.

        ``extra`` are more curl arguments (TLS, credentials); only curl takes them.
        """
        if self.kind == "curl":
            return self._curl(url, gzip, save, extra or [])
        return self._httpx(url, gzip, save)

    def _curl(self, url: str, gzip: bool, save: Path | None, extra: list[str]) -> Scrape:
        args = ["curl", "--silent", "--show-error", "--max-time", str(self.timeout),
                "--output", str(save or os.devnull), "--dump-header", "-",
                "--write-out", "\n%{http_code} %{time_total} %{size_download}",
                "-H", "Accept: text/plain", *extra]
        if gzip:
            args += ["-H", "Accept-Encoding: gzip"]
        done = subprocess.run([*args, url], capture_output=True, text=True, check=False,
                              timeout=self.timeout + 10)
        if done.returncode != 0:
            raise BenchError(f"curl {url} failed: {done.stderr.strip()}")
        head, _, last = done.stdout.rstrip("\n").rpartition("\n")
        code, total, size = last.split()
        encoding = ""
        for line in head.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-encoding":
                encoding = value.strip().lower()
        return Scrape(float(total), int(size), int(code), encoding)

    def _httpx(self, url: str, gzip: bool, save: Path | None) -> Scrape:
        headers = {"Accept": "text/plain", "Accept-Encoding": "gzip" if gzip else "identity"}
        chunks: list[bytes] = []
        size = 0
        with httpx.Client(timeout=self.timeout) as client:
            started = time.perf_counter()
            with client.stream("GET", url, headers=headers) as response:
                for chunk in response.iter_raw(1 << 20):
                    size += len(chunk)
                    if save:
                        chunks.append(chunk)
            elapsed = time.perf_counter() - started
        if save:
            save.write_bytes(b"".join(chunks))
        return Scrape(elapsed, size, response.status_code,
                      response.headers.get("content-encoding", "").lower())
