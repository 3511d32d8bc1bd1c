"""The landing page as a status page, loaded in a real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter import page
from exporter.layout import FULL
from exporter.models import read_connection
from exporter.store import Store
from tests.conftest import (
    ROOT,
    Exporter,
    Process,
    Simulator,
    _env,
    exporter_config,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

# Where the screenshot goes; CI keeps this folder as the run's artefacts.
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
ERROR_TEXT = 'task exited: OutOfMemoryError <script>alert("x")</script> & restart'
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


class Tables(HTMLParser):
    """Every table of a document as rows of (text, class) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._cell: list[str] | None = None
        self._class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._class = [], dict(attrs).get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._class))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's headless Chromium with a fresh profile and no background traffic."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium package is needed (make test installs it)"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}",
                           *args], capture_output=True, text=True, timeout=120, check=True)


def loaded(tmp: Path, url: str) -> list[list[list[tuple[str, str]]]]:
    """The page's tables as Chromium built its DOM."""
    parser = Tables()
    parser.feed(chromium(tmp, "--dump-dom", url).stdout)
    return parser.tables


def attention(record: dict[str, Any]) -> bool:
    """The page's rule, written out again: anything but running and ok needs a look."""
    return not (record["status"] == "running" and record["healthStatus"] == "ok")


def test_status_page_shows_the_fleet_as_it_is(simulator: Simulator,
                                              start_exporter: Callable[..., Exporter],
                                              tmp_path: Path) -> None:
    """Loaded in Chromium, the page's counts, the databases needing attention (with their
    lastError text, escaped) and each connection's state match the simulator's fleet; it
    has no script, reloads every poll interval and is kept as a screenshot."""
    first, second, third = simulator.connection_ids
    records = simulator.databases(first)
    failed, capped, degraded = (r["id"] for r in records[:3])
    simulator.patch_database(first, failed, status="failed", healthStatus="unreachable",
                             lastError=ERROR_TEXT)
    simulator.patch_database(first, capped, status="running", healthStatus="cap_exceeded")
    simulator.patch_database(first, degraded, status="running", healthStatus="degraded")
    exporter = start_exporter(exporter_config(simulator, poll_interval="7s"))
    simulator.fault(third, status=404, body='{"error": "not_found"}')
    fleet = simulator.fleet()
    wait_until(lambda: "not_found" in exporter.http.get("/").text, 30, "the failed poll")

    raw = exporter.http.get("/").text
    assert "<script" not in raw
    assert html.escape(ERROR_TEXT) in raw
    assert '<meta http-equiv="refresh" content="7">' in raw
    assert "Demo mode" not in raw
    counts, needing, connections, _budget = loaded(tmp_path, exporter.url + "/")

    everything = [db for answer in fleet.values() for db in answer["databases"]]
    expected = {"Databases": len(everything),
                "Running": sum(db["status"] == "running" for db in everything),
                "Failed": sum(db["status"] == "failed" for db in everything),
                "Cap exceeded": sum(db["healthStatus"] == "cap_exceeded" for db in everything),
                "Other unhealthy": sum(db["healthStatus"] in ("degraded", "unreachable")
                                       and db["status"] != "failed" for db in everything),
                "Connections down": 1}
    assert dict(zip((h for h, _ in counts[0]), (int(v) for v, _ in counts[1]), strict=True)) \
        == expected
    assert expected["Failed"] == 1
    assert expected["Cap exceeded"] == 1

    names = {cid: answer["name"] for cid, answer in fleet.items()}
    wanted = {(names[cid], db["name"]) for cid, answer in fleet.items()
              for db in answer["databases"] if attention(db)}
    rows = needing[1:]
    assert {(row[0][0], row[1][0]) for row in rows} == wanted
    worst = rows[0]
    assert [text for text, _ in worst[:4]] == [names[first.lower()],
                                              records[0]["name"], "failed", "unreachable"]
    assert worst[2][1] == "red"
    assert worst[5][0] == ERROR_TEXT
    assert rows[1][3] == ("cap_exceeded", "red")
    assert re.fullmatch(r"\d+ (s|min|h|d)", worst[4][0])

    by_id = {row[1][0]: row for row in connections[1:]}
    down = by_id[third.lower()]
    assert down[2] == ("down", "red")
    assert down[6][0] == "not_found"
    assert re.search(r"UTC \(\d+ (s|min) ago\)$", down[5][0])
    up = by_id[second.lower()]
    assert up[2] == ("up", "green")
    assert re.search(r"UTC \(\d+ s ago\)$", up[4][0])

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "landing-page.png"
    chromium(tmp_path, "--window-size=1280,1100", f"--screenshot={shot}", exporter.url + "/")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000


def test_demo_page_has_a_banner(tmp_path: Path) -> None:
    """In demo mode the page says so, and reloads every 5 s (the demo polls every 2 s)."""
    port = free_port()
    demo = Process([sys.executable, "-m", "exporter", "--demo",
                    f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "demo.log", _env())
    try:
        text = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text,
                          30, "the demo page")
        assert "Demo mode: this exporter polls a built-in simulated fleet" in text
        assert '<meta http-equiv="refresh" content="5">' in text
    finally:
        demo.stop()


def test_attention_table_is_capped_worst_first() -> None:
    """With more databases needing attention than the table holds, it shows the worst
    (failed before degraded before paused, longest in status first) and says how many."""
    connection, count = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0", 150
    kinds = [("paused", None), ("running", "degraded"), ("failed", "unreachable")]
    records = [{"id": f"{connection[:-3]}{n:03d}", "name": f"db-{n:03d}",
                "status": kinds[n % 3][0], "healthStatus": kinds[n % 3][1],
                "updatedAt": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z"}
               for n in range(count)]
    store = Store([connection], 300.0, FULL)
    store.success(connection, read_connection(json.dumps(
        {"id": connection, "name": "c", "databases": records}).encode()), 0.1)
    summary = page.summarize(store, time.time())
    assert summary.attention == count
    assert len(summary.rows) == page.ATTENTION_ROWS
    statuses = [row.status for row in summary.rows]
    assert statuses == sorted(statuses, key=["failed", "running", "paused"].index)
    failed = [row for row in summary.rows if row.status == "failed"]
    assert [r.since for r in failed] == sorted(r.since for r in failed)
    body = page.render(store, telemetry_path="/metrics", refresh=60, demo=False).decode()
    assert f"The {page.ATTENTION_ROWS} worst of {count} are shown." in body
