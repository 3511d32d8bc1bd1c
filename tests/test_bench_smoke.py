"""The benchmark harness (benchmarks/) runs end to end on a tiny fleet and reports every target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e

# The start of each target row of the table; each line must end in a verdict.
TARGET_ROWS = (
    "Parse cost per database, 20-database answer (median)",
    "Scrape, plain text (median)",
    "Scrape, gzip (median)",
    "Speed-up vs naive, plain text (median)",
    "Speed-up vs naive, gzip (median)",
    "Resident memory (VmRSS, steady-state mean)",
    "CPU per scrape, polls included",
    "p99 scrape, every answer changing, plain text",
    "p99 scrape, every answer changing, gzip",
    "Change visible on /metrics",
    "Landing page, exporter CPU per view",
)


def _quick(module: str, output: Path) -> str:
    """Run a benchmark module's --quick smoke version; its printed table, once it exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--output", str(output)],
        capture_output=True, text=True, timeout=400, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quick_benchmark_prints_every_target_row(tmp_path: Path) -> None:
    """``python -m benchmarks --quick`` exits 0 and prints a verdict for every target row."""
    output = tmp_path / "latest.md"
    stdout = _quick("benchmarks", output)
    lines = stdout.splitlines()
    for row in TARGET_ROWS:
        found = [line for line in lines if line.startswith(row)]
        assert len(found) == 1, f"{row!r} not once in:\n{stdout}"
        assert found[0].endswith((" yes", " NO")), found[0]
    assert "targets met" in stdout
    markdown = output.read_text(encoding="utf-8")
    for row in TARGET_ROWS:
        assert f"| {row}" in markdown
    assert "## Details" in markdown


ADVERSARIAL_ATTACKS = ("stalled request bodies", "stalled readers", "idle connections",
                       "idle TLS handshakes", "wrong-password flood")


def test_quick_adversarial_run_reports_every_attack(tmp_path: Path) -> None:
    """``python -m benchmarks.adversarial --quick`` exits 0 and gives each attack its three
    rows (memory, scraper latency, polls) with a verdict, beside the no-attack window."""
    output = tmp_path / "adversarial.md"
    stdout = _quick("benchmarks.adversarial", output)
    lines = stdout.splitlines()
    for attack in ADVERSARIAL_ATTACKS:
        rows = [line for line in lines if attack in line and line.endswith((" yes", " NO"))]
        assert len(rows) == 3, f"{attack!r}:\n{stdout}"
    assert any(line.startswith("no attack") for line in lines)
    assert "| no attack" in output.read_text(encoding="utf-8")
