"""``python -m benchmarks``: our exporter beside a static file server and a naive exporter.

Everything runs on loopback, on this machine, in one run, so the three servers share its
noise. Processes: two simulators (same seed, so the same fleet), our exporter, the naive
prometheus_client exporter (benchmarks/naive.py) and a static server (benchmarks/static_server.py)
holding a copy of our body. Scrapes are made one at a time by curl (or httpx without curl) on
a fresh connection each; see ``harness.Client``. The phases:

0. Parse cost. ``benchmarks.parse_cost``, run on the measured code: reading 20-database
   answers from their bytes, per database, beside ``json.loads`` alone on the same bytes.
1. Idle scrapes. Ours and the naive exporter poll a static simulator once (poll_interval 1h,
   so no poll runs while we measure); once every database has landed in both, one body of ours
   is saved with a gzip -9 copy for the static server. Then rounds of scrapes, plain and with
   ``Accept-Encoding: gzip``, rotate over the three servers (the naive one only in the first
   ``--naive-scrapes`` rounds: it takes seconds per scrape at full size). Medians compared.
2. CPU per scrape. A fresh exporter polls every P seconds while we scrape (gzip, as Prometheus
   does) every P/8 seconds for K cycles: the proportion of a 60 s poll scraped every 15 s by an
   HA pair. The simulator ticks once per P, so answers change at a realistic pace. CPU is
   utime+stime of the process (/proc/PID/stat) over exactly K*P seconds, after whole cycles
   of the same load, unmeasured, lasting at least ``--cpu-warmup`` seconds (60: ours' memory
   settles within a minute) and one cycle; as polling is periodic,
   such a window holds K cycles' worth of polls wherever it starts. Ours and the naive one run
   one after the other, each with its own P (the naive one needs seconds per scrape, so a
   longer P); the proportion, which is all that matters, is the same. Resident memory is
   VmRSS (/proc/PID/status) sampled every 0.2 s over this steady-state window: its mean is
   compared, its peak and VmHWM are reported.
3. Worst case. Ours polls (every 60 s, the real deployment's poll interval) a
   simulator started with ``--touch-all`` that we tick twice per poll interval, so every
   answer differs at every poll. Scrapes, plain and gzip in turn, come every 0.625 s
   (``--worst-scrape-every``, 0 for back to back): twelve times the deployment's pace, for
   enough samples; their p99 is compared with the idle median. ``--worst-poll-interval 5
   --worst-tick 2.5 --worst-duration 60`` is a harsher stress: 100 changed answers a second.
   Then, still under that load, one database's status is patched through the control API at
   a random moment and /metrics is scraped until it shows; the delay is compared with
   poll_interval + 2 s. The details say whether ours kept up with its poll interval.

Every process runs a copy of exporter/ taken when the run starts (``--source`` picks another
checkout), so all phases measure one version even while the working tree is being edited;
the report names it by a fingerprint of its files.

The table goes to stdout and, as Markdown with details, to bench-results/latest.md. The exit
code is 0 whether or not targets are met; 1 only if the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import math
import os
import platform
import random
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from tempfile import mkdtemp

import httpx
import yaml

from benchmarks.harness import (
    ROOT,
    BenchError,
    Client,
    Periodic,
    Proc,
    RssSampler,
    Scrape,
    free_port,
    python_module,
    sleep_until,
    snapshot_code,
    wait_until,
)
from benchmarks.report import (
    Row,
    markdown_table,
    median,
    mib,
    ms,
    percentile,
    summary,
    text_table,
    times,
)

SCRAPES_PER_CYCLE = 8  # a 60 s poll interval, an HA pair of Prometheus scraping every 15 s
PAGE_VIEWS = 40
PAGE_CPU_TARGET = 0.020  # seconds of exporter CPU per view at 10,000 databases
IDLE_POLL_INTERVAL = "1h"  # long enough that no poll runs during the idle measurements
VISIBLE_SLACK = 2.0  # a change must show within poll_interval + this many seconds
CHANGED_STATUS = "stopped"  # a status the simulator never moves a database into on its own


@dataclass(frozen=True)
class Settings:
    """What to run; ``FULL`` is the 10,000-database benchmark, ``QUICK`` a smoke run."""

    connections: int
    databases: int
    seed: int
    scrapes: int
    naive_scrapes: int
    cpu_poll_interval: float
    cpu_cycles: int
    cpu_warmup: float
    naive_cpu_poll_interval: float
    naive_cpu_cycles: int
    worst_poll_interval: float
    worst_tick: float
    worst_duration: float
    worst_scrape_every: float
    visibility_trials: int
    startup_timeout: float


FULL = Settings(connections=500, databases=20, seed=1, scrapes=21, naive_scrapes=3,
                cpu_poll_interval=20.0, cpu_cycles=3, cpu_warmup=60.0,
                naive_cpu_poll_interval=120.0,
                naive_cpu_cycles=1, worst_poll_interval=60.0, worst_tick=30.0,
                worst_duration=130.0, worst_scrape_every=0.625, visibility_trials=3,
                startup_timeout=300.0)
QUICK = Settings(connections=4, databases=3, seed=1, scrapes=5, naive_scrapes=3,
                 cpu_poll_interval=2.0, cpu_cycles=1, cpu_warmup=0.0,
                 naive_cpu_poll_interval=2.0,
                 naive_cpu_cycles=1, worst_poll_interval=1.0, worst_tick=0.5,
                 worst_duration=3.0, worst_scrape_every=0.125, visibility_trials=1,
                 startup_timeout=60.0)


@dataclass
class Server:
    """A server under test: its process and its metrics URL."""

    name: str
    proc: Proc
    url: str


@dataclass
class CpuWindow:
    """The CPU of one server over K poll cycles with 8 scrapes each."""

    poll_interval: float
    cycles: int
    scrapes: int
    wall: float
    cpu: float
    poll_cycles_seen: float
    scrape_median: float
    memory: dict[str, int]
    rss_mean: float
    rss_max: int

    @property
    def per_scrape(self) -> float:
        """CPU seconds per scrape, the polls of the window included."""
        return self.cpu / self.scrapes


@dataclass
class Results:
    """Everything measured, for the table and the details."""

    settings: Settings
    client: str
    code: str
    body_size: int = 0
    series: int = 0
    idle: dict[tuple[str, bool], list[Scrape]] = field(default_factory=dict)
    idle_memory: dict[str, dict[str, int]] = field(default_factory=dict)
    cpu: dict[str, CpuWindow] = field(default_factory=dict)
    worst: dict[bool, list[float]] = field(default_factory=dict)
    worst_cpu: float = 0.0
    worst_wall: float = 0.0
    worst_polls: float = 0.0
    page_cpu: float = 0.0  # exporter CPU seconds per landing-page view
    visibility: list[float] = field(default_factory=list)
    parse: dict[str, float] = field(default_factory=dict)
    load: list[tuple[float, float, float]] = field(default_factory=list)


class Ticker(Periodic):
    """Advances a simulator's fleet every ``period`` seconds in a background thread."""

    def __init__(self, url: str, period: float) -> None:
        self.ticks = 0
        self._http = httpx.Client(base_url=url, timeout=60)
        super().__init__(period, self._tick, first_at_once=False)

    def _tick(self) -> None:
        self._http.post("/_sim/tick").raise_for_status()
        self.ticks += 1

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._http.close()


class Bench:
    """Starts and stops the processes and runs the three phases."""

    def __init__(self, settings: Settings, client: Client, workdir: Path,
                 stack: contextlib.ExitStack, source: Path = ROOT) -> None:
        self.s = settings
        self.client = client
        self.workdir = workdir
        self.stack = stack
        self.code, fingerprint = snapshot_code(workdir, source)
        self.api_token = "bench-" + secrets.token_hex(12)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REFLEXDB_", "PYTHON"))}
        self.env = {**env, "REFLEXDB_API_TOKEN": self.api_token,
                    "REFLEXDB_SIMULATOR_TOKEN": self.api_token, "PYTHONPATH": str(self.code)}
        self.results = Results(settings, client.kind, fingerprint)
        self.connection_ids: list[str] = []

    # Processes

    def start(self, name: str, args: list[str]) -> Proc:
        """Start a process that is stopped when the benchmark ends, if not before."""
        proc = Proc(name, args, self.workdir, self.env, cwd=self.code)
        self.stack.callback(proc.stop)
        return proc

    def start_simulator(self, name: str, touch_all: bool) -> tuple[Proc, str]:
        """A simulator that changes only when ticked through its control API."""
        port = free_port()
        config = self.workdir / f"{name}.yaml"
        args = python_module(
            "exporter.simulator", "--web.listen-address", f"127.0.0.1:{port}",
            "--connections", str(self.s.connections), "--databases", str(self.s.databases),
            "--seed", str(self.s.seed), "--static", "--write-config", str(config),
            "--log.level", "warn", *(["--touch-all"] if touch_all else []))
        proc = self.start(name, args)
        wait_until(config.exists, self.s.startup_timeout, f"{name} to listen", proc.check_alive)
        written = yaml.safe_load(config.read_text(encoding="utf-8"))
        self.connection_ids = [str(c["id"]) for c in written["connections"]]
        return proc, f"http://127.0.0.1:{port}"

    def write_config(self, name: str, sim_url: str, poll_interval: str) -> Path:
        """One config file, read by both ours and the naive exporter."""
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "api": {"url": f"{sim_url}/v1", "timeout": "60s"},
            "poll_interval": poll_interval,
            "stale_after": "24h",
            "connections": [{"id": cid} for cid in self.connection_ids],
        }, sort_keys=False), encoding="utf-8")
        return path

    def start_ours(self, name: str, config: Path) -> Server:
        """Our exporter."""
        port = free_port()
        proc = self.start(name, python_module(
            "exporter", f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn"))
        return Server(name, proc, f"http://127.0.0.1:{port}/metrics")

    def start_naive(self, name: str, config: Path) -> Server:
        """The naive prometheus_client exporter."""
        port = free_port()
        proc = self.start(name, python_module(
            "benchmarks.naive", f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}"))
        return Server(name, proc, f"http://127.0.0.1:{port}/metrics")

    def wait_ours_loaded(self, server: Server) -> None:
        """Until /-/ready and every database of the fleet is in the body."""
        base = server.url.rsplit("/", 1)[0]
        expected = self.s.connections * self.s.databases
        body = self.workdir / "loaded.txt"

        def loaded() -> bool:
            if httpx.get(f"{base}/-/ready", timeout=10).status_code != 200:
                return False
            self.client.get(server.url, save=body)
            return body.read_bytes().count(b"\nreflexdb_database_info{") >= expected

        wait_until(loaded, self.s.startup_timeout, f"{server.name} to load every database",
                   server.proc.check_alive, every=0.5)

    def wait_naive_cycles(self, server: Server, cycles: int) -> None:
        """Until the naive exporter logged ``cycles`` complete poll cycles."""
        line = f"poll cycle {cycles} done: {self.s.connections}/{self.s.connections}"
        wait_until(lambda: line in server.proc.log_text(), self.s.startup_timeout,
                   f"{server.name} to finish poll cycle {cycles}", server.proc.check_alive)

    def scrape(self, server: Server, gzipped: bool, save: Path | None = None) -> Scrape:
        """One scrape that must succeed."""
        result = self.client.get(server.url, gzipped, save)
        if result.status != 200:
            raise BenchError(f"{server.name} answered HTTP {result.status}")
        return result

    def polls_total(self, server: Server) -> float:
        """The sum of reflexdb_connection_polls_total over every connection."""
        path = self.workdir / f"{server.name}-polls.txt"
        self.scrape(server, False, path)
        body = path.read_bytes()
        total, start = 0.0, 0
        needle = b"\nreflexdb_connection_polls_total{"
        while (index := body.find(needle, start)) >= 0:
            end = body.find(b"\n", index + 1)
            total += float(body[index:end].rsplit(b" ", 1)[1])
            start = end
        return total

    # Phase 1: idle scrapes

    def idle(self, sim_url: str) -> None:
        """Medians of plain and gzip scrapes of static, ours and naive; memory after."""
        config = self.write_config("idle", sim_url, IDLE_POLL_INTERVAL)
        ours = self.start_ours("ours-idle", config)
        naive = self.start_naive("naive-idle", config)
        self.wait_ours_loaded(ours)
        self.wait_naive_cycles(naive, 1)
        plain_path, gzip_path = self.workdir / "body.txt", self.workdir / "body.txt.gz"
        self.scrape(ours, False, plain_path)
        body = plain_path.read_bytes()
        gzip_path.write_bytes(gzip.compress(body, 9))
        self.results.body_size = len(body)
        self.results.series = sum(1 for line in body.split(b"\n")
                                  if line and not line.startswith(b"#"))
        port = free_port()
        static = Server("static", self.start("static", python_module(
            "benchmarks.static_server", "--plain", str(plain_path), "--gzip", str(gzip_path),
            "--web.listen-address", f"127.0.0.1:{port}")), f"http://127.0.0.1:{port}/metrics")
        wait_until(lambda: self.client.get(static.url).status == 200, 30, "the static server",
                   static.proc.check_alive)

        servers = [static, ours, naive]
        samples: dict[tuple[str, bool], list[Scrape]] = {
            (s.name, z): [] for s in servers for z in (False, True)}
        for server in servers:  # warm-up, not counted: first-scrape caches, page faults
            for gzipped in (False, True):
                self.scrape(server, gzipped)
        for round_ in range(self.s.scrapes):
            order = servers[round_ % 3:] + servers[:round_ % 3]
            for gzipped in (False, True):
                for server in order:
                    if server is naive and round_ >= self.s.naive_scrapes:
                        continue
                    samples[server.name, gzipped].append(self.scrape(server, gzipped))
        self.results.idle = {(name.removesuffix("-idle"), z): v
                             for (name, z), v in samples.items()}
        self.results.idle_memory = {"ours": ours.proc.memory(), "naive": naive.proc.memory()}
        naive.proc.stop()
        static.proc.stop()
        self.page_cost(ours)
        ours.proc.stop()

    def page_cost(self, ours: Server) -> None:
        """The exporter's CPU per landing-page view: views back to back, less what the
        process spends on its own (no poll runs at this interval) over as long again."""
        url = ours.url.rsplit("/", 1)[0] + "/"
        for _ in range(3):  # warm-up, not counted
            self.client.get(url)
        began, before = time.monotonic(), ours.proc.cpu_seconds()
        for _ in range(PAGE_VIEWS):
            if (status := self.client.get(url).status) != 200:
                raise BenchError(f"the landing page answered {status}")
        wall, spent = time.monotonic() - began, ours.proc.cpu_seconds() - before
        time.sleep(wall)
        background = ours.proc.cpu_seconds() - before - spent
        self.results.page_cpu = max(0.0, spent - background) / PAGE_VIEWS

    # Phase 2: CPU per scrape

    def cpu_window(self, who: str, sim_url: str, interval: float, cycles: int) -> None:
        """CPU over ``cycles`` poll cycles with 8 gzip scrapes per cycle; memory at the end."""
        config = self.write_config(f"cpu-{who}", sim_url, f"{interval:g}s")
        if who == "ours":
            server = self.start_ours("ours-cpu", config)
            self.wait_ours_loaded(server)
        else:
            server = self.start_naive("naive-cpu", config)
            self.wait_naive_cycles(server, 1)
        slot = interval / SCRAPES_PER_CYCLE
        scrapes = SCRAPES_PER_CYCLE * cycles
        with Ticker(sim_url, interval):
            # Warm-up under the same load, not measured: ours reaches its steady memory only
            # after each connection has been polled a few times since the first load.
            warmup_cycles = max(1, math.ceil(self.s.cpu_warmup / interval))
            warmup = time.monotonic()
            for index in range(SCRAPES_PER_CYCLE * warmup_cycles):
                sleep_until(warmup + index * slot)
                self.scrape(server, True)
            sleep_until(warmup + warmup_cycles * interval)
            polls_before = self.polls_total(server)
            durations = []
            with RssSampler(server.proc) as rss:
                cpu_start, started = server.proc.cpu_seconds(), time.monotonic()
                for index in range(scrapes):
                    sleep_until(started + index * slot)
                    durations.append(self.scrape(server, True).seconds)
                sleep_until(started + cycles * interval)
                cpu, wall = server.proc.cpu_seconds() - cpu_start, time.monotonic() - started
            memory = server.proc.memory()
            polls_after = self.polls_total(server)
        self.results.cpu[who] = CpuWindow(
            poll_interval=interval, cycles=cycles, scrapes=scrapes, wall=wall, cpu=cpu,
            poll_cycles_seen=(polls_after - polls_before) / self.s.connections,
            scrape_median=median(durations), memory=memory, rss_mean=rss.mean,
            rss_max=max(rss.samples))
        server.proc.stop()

    # Phase 3: worst case and change visibility

    def worst_case(self, sim_url: str) -> None:
        """p99 while every answer changes at every poll, then change-to-visibility delays."""
        interval = self.s.worst_poll_interval
        config = self.write_config("worst", sim_url, f"{interval:g}s")
        ours = self.start_ours("ours-worst", config)
        self.wait_ours_loaded(ours)
        every = self.s.worst_scrape_every
        with Ticker(sim_url, self.s.worst_tick):
            time.sleep(interval * 1.1)  # every connection has now polled a changed answer
            polls_before = self.polls_total(ours)
            samples: dict[bool, list[float]] = {False: [], True: []}
            cpu_start, started = ours.proc.cpu_seconds(), time.monotonic()
            end = started + self.s.worst_duration
            for index in itertools.count():
                if max(time.monotonic(), started + index * every) >= end:
                    break
                sleep_until(started + index * every)
                samples[index % 2 == 1].append(self.scrape(ours, index % 2 == 1).seconds)
            self.results.worst_cpu = ours.proc.cpu_seconds() - cpu_start
            self.results.worst_wall = time.monotonic() - started
            self.results.worst_polls = (self.polls_total(ours) - polls_before) / self.s.connections
            self.results.worst = samples
            self.results.visibility = [self.visibility_trial(ours, sim_url, interval, trial)
                                       for trial in range(self.s.visibility_trials)]
        ours.proc.stop()

    def visibility_trial(self, ours: Server, sim_url: str, interval: float, trial: int) -> float:
        """Seconds from a status patch in the API until /metrics shows it."""
        rng = random.Random(self.s.seed * 1000 + trial)  # noqa: S311 - a reproducible pick
        with httpx.Client(base_url=sim_url, timeout=60) as http:
            fleet = http.get("/_sim/fleet").raise_for_status().json()
            connection_id = rng.choice(sorted(fleet))
            record = rng.choice(fleet[connection_id]["databases"])
            time.sleep(rng.uniform(0, interval))  # a random moment in the poll schedule
            http.patch(f"/_sim/connections/{connection_id}/databases/{record['id']}",
                       json={"status": CHANGED_STATUS}).raise_for_status()
        changed = time.monotonic()
        path = self.workdir / "visibility.txt"
        while time.monotonic() < changed + interval + 30:
            self.scrape(ours, False, path)
            if shows_status(path.read_bytes(), str(record["id"]).lower(), CHANGED_STATUS):
                return time.monotonic() - changed
        raise BenchError(f"the patched status of database {record['id']} never showed")

    def parse_cost(self) -> None:
        """Ours and json.loads on the same answers, in a process of the measured code."""
        runs = "20" if self.s.connections < 100 else "200"
        done = subprocess.run(python_module("benchmarks.parse_cost", "--runs", runs),
                              cwd=self.code, env=self.env, capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            raise BenchError(f"parse cost: {done.stderr.strip()[-300:]}")
        self.results.parse = json.loads(done.stdout)

    def run(self) -> Results:
        """All three phases, after the parse cost."""
        self.results.load.append(os.getloadavg())
        main_sim, main_url = self.start_simulator("simulator", touch_all=False)
        touch_sim, touch_url = self.start_simulator("simulator-touch-all", touch_all=True)
        print(f"fleet: {self.s.connections} connections x {self.s.databases} databases; "
              f"client: {self.client.kind}; exporter code {self.results.code}; "
              f"logs in {self.workdir}", flush=True)
        print("phase 0/3: parse cost of one answer ...", flush=True)
        self.parse_cost()
        print("phase 1/3: idle scrapes of static, ours and naive ...", flush=True)
        self.idle(main_url)
        print("phase 2/3: CPU per scrape, ours ...", flush=True)
        self.cpu_window("ours", main_url, self.s.cpu_poll_interval, self.s.cpu_cycles)
        print("phase 2/3: CPU per scrape, naive ...", flush=True)
        self.cpu_window("naive", main_url, self.s.naive_cpu_poll_interval,
                        self.s.naive_cpu_cycles)
        print("phase 3/3: worst case (every answer changes at every poll) ...", flush=True)
        self.worst_case(touch_url)
        main_sim.stop()
        touch_sim.stop()
        self.results.load.append(os.getloadavg())
        return self.results


def shows_status(body: bytes, database_id: str, status: str) -> bool:
    """Whether the exposition has the database's status series for ``status`` at 1."""
    needle = f'database_id="{database_id}"'.encode()
    wanted = f'status="{status}"}}'.encode()
    start = 0
    while (index := body.find(needle, start)) >= 0:
        line_start = body.rfind(b"\n", 0, index) + 1
        line_end = body.find(b"\n", index)
        line = body[line_start:line_end if line_end >= 0 else len(body)]
        if line.startswith(b"reflexdb_database_status{") and wanted in line:
            return float(line.rsplit(b" ", 1)[1]) == 1
        start = index + len(needle)
    return False


def rows(r: Results) -> list[Row]:
    """The table: every target, then information rows."""
    s = r.settings

    def idle(server: str, gzipped: bool) -> float:
        return median([x.seconds for x in r.idle[server, gzipped]])

    ours_parse, json_parse = r.parse["ours_us"], r.parse["json_loads_us"]
    out = [Row(f"Parse cost per database, {r.parse['databases']:g}-database answer (median)",
               f"{ours_parse:.2f} us", f"json.loads alone {json_parse:.2f} us",
               times(ours_parse / json_parse), "<= 2x json.loads", ours_parse <= 2 * json_parse)]
    for gzipped, label, limit in ((False, "plain text", 2.0), (True, "gzip", 3.0)):
        ours, static = idle("ours", gzipped), idle("static", gzipped)
        honoured = all(x.encoding == "gzip" for x in r.idle["ours", True])
        note = "" if not gzipped or honoured else " (gzip NOT honoured)"
        out.append(Row(
            f"Scrape, {label} (median)", ms(ours) + note,
            f"static{' pre-gzipped' if gzipped else ''} {ms(static)}",
            times(ours / static), f"<= {limit:g}x static" + (", gzip" if gzipped else ""),
            ours / static <= limit and (honoured or not gzipped)))
    for gzipped, label in ((False, "plain text"), (True, "gzip")):
        ours, naive = idle("ours", gzipped), idle("naive", gzipped)
        out.append(Row(f"Speed-up vs naive, {label} (median)", ms(ours), f"naive {ms(naive)}",
                       times(naive / ours) + " faster", ">= 20x faster", naive / ours >= 20))
    ours_rss, naive_rss = r.cpu["ours"].rss_mean, r.cpu["naive"].rss_mean
    out.append(Row("Resident memory (VmRSS, steady-state mean)", mib(ours_rss),
                   f"naive {mib(naive_rss)}", times(ours_rss / naive_rss), "<= 0.5x naive",
                   ours_rss / naive_rss <= 0.5))
    ours_cpu, naive_cpu = r.cpu["ours"].per_scrape, r.cpu["naive"].per_scrape
    out.append(Row(f"CPU per scrape, polls included ({SCRAPES_PER_CYCLE} scrapes/poll)",
                   ms(ours_cpu), f"naive {ms(naive_cpu)}", times(ours_cpu / naive_cpu),
                   "<= 0.05x naive", ours_cpu / naive_cpu <= 0.05))
    for gzipped, label in ((False, "plain text"), (True, "gzip")):
        base = idle("ours", gzipped)
        limit = max(3 * base, base + 0.050)
        p99 = percentile(r.worst[gzipped], 99)
        out.append(Row(f"p99 scrape, every answer changing, {label}", ms(p99),
                       f"idle median {ms(base)}", times(p99 / base),
                       f"<= {ms(limit)} (3x or +50 ms)", p99 <= limit))
    worst_delay = max(r.visibility)
    allowed = s.worst_poll_interval + VISIBLE_SLACK
    out.append(Row(f"Change visible on /metrics (worst of {len(r.visibility)})",
                   f"{worst_delay:.2f} s", f"poll_interval {s.worst_poll_interval:g} s",
                   times(worst_delay / allowed), f"<= {allowed:g} s", worst_delay <= allowed))
    out.append(Row(f"Landing page, exporter CPU per view ({PAGE_VIEWS} views)",
                   ms(r.page_cpu), "", "", f"<= {ms(PAGE_CPU_TARGET)}",
                   r.page_cpu <= PAGE_CPU_TARGET))
    out.append(Row("Peak resident memory (VmHWM)", mib(r.cpu["ours"].memory["VmHWM"]),
                   f"naive {mib(r.cpu['naive'].memory['VmHWM'])}",
                   times(r.cpu["ours"].memory["VmHWM"] / r.cpu["naive"].memory["VmHWM"]),
                   "(information)", None))
    return out


def details(r: Results) -> str:
    """Markdown paragraphs with what the table summarises."""
    s = r.settings
    lines = ["## Details", "",
             f"- Fleet: {s.connections} connections x {s.databases} databases = "
             f"{s.connections * s.databases} databases; our body {r.body_size:,} bytes, "
             f"{r.series:,} series (process metrics included).",
             f"- Machine: {os.cpu_count()} CPUs, load average {r.load[0][0]:.2f} at start and "
             f"{r.load[-1][0]:.2f} at the end; Python {platform.python_version()}; "
             f"scrape client: {r.client}, a fresh connection per scrape.",
             f"- Exporter code: fingerprint {r.code} (SHA-256 of exporter/*.py, copied aside "
             "when the run started; every process of the run used that copy).",
             "", "### Idle scrapes (seconds)", "",
             "| server | encoding | scrapes | median | min | max | bytes on the wire |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (server, gzipped), samples in sorted(r.idle.items()):
        secs = [x.seconds for x in samples]
        lines.append(f"| {server} | {'gzip' if gzipped else 'plain'} | {len(secs)} | "
                     f"{median(secs):.4f} | {min(secs):.4f} | {max(secs):.4f} | "
                     f"{samples[0].size:,} ({samples[0].encoding or 'identity'}) |")
    lines += ["", "### CPU windows", "",
              "| server | poll interval | cycles | scrapes (gzip) | window | CPU | CPU/scrape | "
              "poll cycles seen | scrape median | VmRSS mean | VmRSS max | VmRSS at end "
              "| VmHWM |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for who, w in r.cpu.items():
        lines.append(f"| {who} | {w.poll_interval:g} s | {w.cycles} | {w.scrapes} | "
                     f"{w.wall:.1f} s | {w.cpu:.2f} s | {ms(w.per_scrape)} | "
                     f"{w.poll_cycles_seen:.2f} | {ms(w.scrape_median)} | {mib(w.rss_mean)} | "
                     f"{mib(w.rss_max)} | {mib(w.memory['VmRSS'])} | "
                     f"{mib(w.memory['VmHWM'])} |")
    lines += ["", f"Memory after the idle phase (one poll, {s.scrapes} rounds of scrapes): "
              + "; ".join(f"{who} VmRSS {mib(m['VmRSS'])}, VmHWM {mib(m['VmHWM'])}"
                          for who, m in r.idle_memory.items()) + "."]
    pacing = (f"one scrape every {s.worst_scrape_every:g} s, plain and gzip in turn"
              if s.worst_scrape_every > 0 else "scrapes back to back, plain and gzip in turn")
    expected = r.worst_wall / s.worst_poll_interval
    behind = (" Our exporter fell behind its poll interval."
              if r.worst_polls < 0.9 * expected else "")
    lines += ["", "### Worst case", "",
              f"Poll interval {s.worst_poll_interval:g} s, simulator ticked every "
              f"{s.worst_tick:g} s with --touch-all, {pacing}, for {r.worst_wall:.1f} s; "
              f"{r.worst_polls:.1f} poll cycles seen of {expected:.1f} due.{behind} Our process "
              f"used {r.worst_cpu:.1f} s of CPU ({100 * r.worst_cpu / r.worst_wall:.0f}% of a "
              "core). Percentiles are nearest-rank: under 100 scrapes, p99 is the maximum.",
              "", "| encoding | scrapes | median | p90 | p99 | max |",
              "| --- | --- | --- | --- | --- | --- |"]
    for gzipped, secs in r.worst.items():
        lines.append(f"| {'gzip' if gzipped else 'plain'} | {len(secs)} | {ms(median(secs))} | "
                     f"{ms(percentile(secs, 90))} | {ms(percentile(secs, 99))} | "
                     f"{ms(max(secs))} |")
    lines += ["", "Change-to-visibility delays: "
              + ", ".join(f"{d:.2f} s" for d in r.visibility) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the defaults (or --quick) and any overrides."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK.connections}x{QUICK.databases} databases, "
                             "short windows")
    for name, value in vars(FULL).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"(default {value}, --quick {getattr(QUICK, name)})")
    parser.add_argument("--client", choices=("auto", "curl", "httpx"), default="auto",
                        help="what scrapes: curl if installed (default), else httpx")
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results" / "latest.md",
                        help="where to write the Markdown table (default bench-results/latest.md)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="directory whose exporter/ package to measure (default: this "
                             "checkout); e.g. a git worktree of another commit, for before and "
                             "after numbers")
    parser.add_argument("--keep", action="store_true", help="keep the logs and bodies")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    overrides = {k: v for k in vars(FULL) if (v := getattr(args, k)) is not None}
    settings = replace(settings, **overrides)
    if settings.worst_tick > settings.worst_poll_interval:
        parser.error("--worst-tick must not exceed --worst-poll-interval")
    if not (args.source / "exporter" / "__init__.py").is_file():
        parser.error(f"--source {args.source} has no exporter package")
    return settings, args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write it as Markdown."""
    settings, args = parse_args(argv)
    client = Client(args.client)
    with contextlib.ExitStack() as stack:
        workdir = Path(mkdtemp(prefix="reflexdb-bench-"))
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            results = Bench(settings, client, workdir, stack, args.source).run()
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    table = rows(results)
    print()
    print(text_table(table))
    print()
    print(summary(table))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        f"# Benchmark: {settings.connections * settings.databases} databases\n\n"
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} with `python -m benchmarks"
        f"{' ' + ' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
        f"{markdown_table(table)}\n\n{summary(table)}\n\n{details(results)}\n",
        encoding="utf-8")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
