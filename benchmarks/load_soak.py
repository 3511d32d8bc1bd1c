"""Load and soak runs for the hardening work: `python -m benchmarks.load_soak load|soak`.

load: 20 concurrent scrapers against a 1,000-database fleet for 60 s; errors and latency
spread. soak: 1,000 poll cycles with databases added and removed at every cycle; resident
memory and open file descriptors over time, and whether the series always equal the API.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.harness import Proc, free_port, python_module, wait_until

TOKEN = "load-soak-token"  # noqa: S105 - the simulator's throwaway token


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXDB_")}
    env.update(REFLEXDB_API_TOKEN=TOKEN, REFLEXDB_SIMULATOR_TOKEN=TOKEN)
    return env


def _start(workdir: Path, connections: int, databases: int, poll_interval: str,
           churn: int) -> tuple[Proc, Proc, str, str]:
    sim_port, port = free_port(), free_port()
    sim_config = workdir / "sim.yaml"
    simulator = Proc("simulator", python_module(
        "exporter.simulator", "--web.listen-address", f"127.0.0.1:{sim_port}",
        "--connections", str(connections), "--databases", str(databases), "--static",
        "--churn", str(churn), "--write-config", str(sim_config), "--log.level", "warn"),
        workdir, _env())
    wait_until(sim_config.exists, 60, "the simulator", simulator.check_alive)
    config = yaml.safe_load(sim_config.read_text())
    config.update(poll_interval=poll_interval, stale_after="10m")
    (workdir / "exporter.yaml").write_text(yaml.safe_dump(config))
    exporter = Proc("exporter", python_module(
        "exporter", "--config.file", str(workdir / "exporter.yaml"),
        "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"), workdir, _env())
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, 120, "readiness",
               exporter.check_alive)
    return simulator, exporter, url, f"http://127.0.0.1:{sim_port}"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load(workdir: Path, scrapers: int, seconds: float) -> int:
    """Concurrent scrapers against a 1,000-database fleet; prints errors and latencies."""
    simulator, exporter, url, _ = _start(workdir, 50, 20, "5s", 0)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def scraper(gzipped: bool) -> None:
        headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    response = client.get(f"{url}/metrics", headers=headers)
                    ok = response.status_code == 200 and b"reflexdb_database_status{" in (
                        response.content)
                except httpx.HTTPError as exc:
                    ok, response = False, exc  # type: ignore[assignment]
                elapsed = time.monotonic() - started
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(repr(response))

    threads = [threading.Thread(target=scraper, args=(n % 2 == 0,)) for n in range(scrapers)]
    cpu_before = exporter.cpu_seconds()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = exporter.cpu_seconds() - cpu_before
    rss = exporter.memory()["VmRSS"] / 2**20
    simulator.stop()
    exporter.stop()
    print(f"load: {scrapers} scrapers (half gzip) x {seconds:g}s against 1,000 databases "
          f"(50 connections x 20), polls every 5s")
    print(f"  scrapes {len(latencies)}, errors {len(errors)}, "
          f"{len(latencies) / seconds:.0f} scrapes/s")
    print(f"  latency ms: min {min(latencies) * 1e3:.1f}  p50 "
          f"{statistics.median(latencies) * 1e3:.1f}  p90 {_percentile(latencies, 0.9) * 1e3:.1f}"
          f"  p99 {_percentile(latencies, 0.99) * 1e3:.1f}  max {max(latencies) * 1e3:.1f}")
    print(f"  exporter CPU {cpu:.1f}s over {seconds:g}s, RSS {rss:.0f} MiB")
    for error in errors[:5]:
        print(f"  error: {error}")
    return 1 if errors else 0


def _series_ids(text: str) -> set[str]:
    return set(re.findall(r'^reflexdb_database_info\{[^}]*database_id="([^"]+)"', text,
                          re.MULTILINE))


def soak(workdir: Path, cycles: int) -> int:
    """Poll cycles with churn; prints RSS and descriptors over time and any mismatch."""
    simulator, exporter, url, sim_url = _start(workdir, 5, 20, "0.1s", 2)
    sim = httpx.Client(base_url=sim_url, timeout=10)
    client = httpx.Client(base_url=url, timeout=10)

    def polls() -> float:
        text = client.get("/metrics").text
        return min(float(v) for v in re.findall(
            r"^reflexdb_connection_polls_total\{[^}]*\} (\S+)", text, re.MULTILINE))

    samples: list[tuple[int, float, int]] = []
    mismatches = 0
    started = time.monotonic()
    for cycle in range(1, cycles + 1):
        sim.post("/_sim/tick").raise_for_status()
        fleet = sim.get("/_sim/fleet").json()
        expected = {str(db["id"]).lower() for answer in fleet.values()
                    for db in answer["databases"]}
        after = polls() + 2  # one poll may have been in flight during the tick
        wait_until(lambda after=after: polls() >= after, 30, "a poll after the tick",
                   exporter.check_alive, every=0.02)
        if _series_ids(client.get("/metrics").text) != expected:
            mismatches += 1
        if cycle == 1 or cycle % (cycles // 10 or 1) == 0:
            fds = len(os.listdir(f"/proc/{exporter.pid}/fd"))
            samples.append((cycle, exporter.memory()["VmRSS"] / 2**20, fds))
    elapsed = time.monotonic() - started
    simulator.stop()
    exporter.stop()
    print(f"soak: {cycles} poll cycles in {elapsed:.0f}s; 5 connections x 20 databases, "
          "2 databases replaced per connection every cycle, poll interval 0.1s")
    print("  cycle   RSS MiB   open fds")
    for cycle, rss, fds in samples:
        print(f"  {cycle:>5}   {rss:7.1f}   {fds:8}")
    print(f"  cycles whose database series differed from the API's answer: {mismatches}")
    grew = samples[-1][1] - samples[1][1] if len(samples) > 2 else 0.0
    print(f"  RSS change from cycle {samples[1][0]} to {samples[-1][0]}: {grew:+.1f} MiB; "
          f"fds {samples[1][2]} -> {samples[-1][2]}")
    return 1 if mismatches else 0


def main(argv: list[str] | None = None) -> int:
    """Run the load or the soak."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_soak")
    parser.add_argument("what", choices=("load", "soak"))
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cycles", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reflexdb-load-soak-") as tmp:
        if args.what == "load":
            return load(Path(tmp), args.scrapers, args.seconds)
        return soak(Path(tmp), args.cycles)


if __name__ == "__main__":
    sys.exit(main())
