"""The benchmark harness (benchmarks/) runs end to end on a tiny fleet and reports every target."""

from __future__ import annotations

import re
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


_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def _amount(text: str) -> tuple[float, str]:
    """``2.2 ms`` -> (2.2, "ms"); ``4.23x faster`` -> (4.23, "x faster")."""
    found = re.match(_NUMBER + r" ?(.*)$", text.strip())
    assert found, text
    return float(found[1].replace(",", "")), found[2].strip()


def _recomputed(ours: str, ratio: str, target: str) -> bool | None:
    """Whether the row's own numbers meet its target, or None for a target form not known."""
    bound = re.match(r"(<=|>=) " + _NUMBER + r" ?([a-zA-Z]*)", target)
    if bound is None:
        return None
    limit, unit = float(bound[2].replace(",", "")), bound[3]
    if unit == "x":  # a ratio target: compare the ratio column
        value, value_unit = _amount(ratio)
        assert value_unit.startswith("x"), (ratio, target)
    else:  # an absolute target: compare our own number, in the target's unit
        value, value_unit = _amount(ours)
        assert value_unit == unit, (ours, target)
    return value <= limit if bound[1] == "<=" else value >= limit


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed table's rows by metric, cells split on runs of two or more spaces."""
    rows = {}
    for line in stdout.splitlines():
        cells = re.split(r"  +", line.strip())
        if len(cells) >= 4 and cells[-1] in ("yes", "NO", "-"):
            rows[cells[0]] = cells
    return rows


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
    table = _table_rows(stdout)
    missed = []
    for row in TARGET_ROWS:
        found = [line for line in lines if line.startswith(row)]
        assert len(found) == 1, f"{row!r} not once in:\n{stdout}"
        [cells] = [cells for metric, cells in table.items() if metric.startswith(row)]
        verdict = cells[-1]
        assert verdict in ("yes", "NO"), found[0]
        # A tiny fleet need not meet the 10,000-database targets, but each verdict must be
        # what the row's own numbers say: a harness that said "yes" regardless would fail.
        expected = _recomputed(cells[1], cells[-3] if len(cells) >= 6 else "", cells[-2])
        if expected is not None:
            assert verdict == ("yes" if expected else "NO"), cells
        if verdict == "NO":
            missed.append(cells[0])
    checked = sum(_recomputed(c[1], c[-3] if len(c) >= 6 else "", c[-2]) is not None
                  for c in table.values() if c[-1] != "-")
    assert checked >= 8, table  # most targets are plain bounds the test can recompute
    summary = [line for line in lines if "targets met" in line]
    assert len(summary) == 1, stdout
    if missed:
        assert summary[0].startswith(f"{len(TARGET_ROWS) - len(missed)} of {len(TARGET_ROWS)} "
                                     "targets met; MISSED: "), summary
        assert summary[0].split("MISSED: ", 1)[1].split("; ") == missed, summary
    else:
        assert summary[0] == f"All {len(TARGET_ROWS)} targets met.", summary
    markdown = output.read_text(encoding="utf-8")
    for row in TARGET_ROWS:
        assert f"| {row}" in markdown
    for metric in missed:
        assert any(line.startswith(f"| {metric} |") and line.endswith("| **NO** |")
                   for line in markdown.splitlines()), metric
    assert "## Details" in markdown


ADVERSARIAL_ATTACKS = ("stalled request bodies", "stalled readers", "idle connections",
                       "idle TLS handshakes", "wrong-password flood")


def _markdown_rows(markdown: str) -> dict[str, list[str]]:
    """A Markdown table's body rows by their first cell, cells stripped."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith(("| metric |", "| --- |")):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def _at_most(value: float, limit: float, printed_equal: bool) -> bool | None:
    """``value <= limit``, or None where the printed figures round to the limit itself."""
    return None if printed_equal else value <= limit


def _adversarial_verdict(cells: list[str], failed_scrapes: bool) -> bool | None:
    """What an adversarial row's own figures say its verdict must be (None: a rounding tie)."""
    metric, ours, _baseline, ratio, target, _verdict = cells
    if metric.endswith("every poll on time"):
        assert ours in ("yes", "no"), cells
        assert target == "yes", cells
        return ours == "yes"
    if metric.endswith("peak RSS over idle"):
        growth = re.fullmatch(r"\+(-?[0-9.]+) MiB", ours)
        limit = re.fullmatch(r"<= \+([0-9.]+) MiB", target)
        assert growth, cells
        assert limit, cells
        return _at_most(float(growth[1]), float(limit[1]), growth[1] == limit[1])
    bound = re.fullmatch(r"<= ([0-9.]+)x", target)
    assert bound, cells
    assert " over idle median" in metric, cells
    if ratio == "n/a":
        return False
    found = re.fullmatch(r"([0-9.]+)x", ratio)
    assert found, cells
    within = _at_most(float(found[1]), float(bound[1]), float(found[1]) == float(bound[1]))
    return None if within is None else within and not failed_scrapes


def test_quick_adversarial_run_reports_every_attack(tmp_path: Path) -> None:
    """``python -m benchmarks.adversarial --quick`` exits 0 and gives each attack its three
    rows (memory, scraper latency, polls) with the verdict their own figures call for."""
    output = tmp_path / "adversarial.md"
    stdout = _quick("benchmarks.adversarial", output)
    lines = stdout.splitlines()
    markdown = output.read_text(encoding="utf-8")
    table = _markdown_rows(markdown)
    missed = []
    for attack in ADVERSARIAL_ATTACKS:
        printed = [line for line in lines if attack in line and line.endswith((" yes", " NO"))]
        assert len(printed) == 3, f"{attack!r}:\n{stdout}"
        rows = [cells for metric, cells in table.items() if attack in metric]
        assert len(rows) == 3, f"{attack!r}:\n{markdown}"
        failed = any(line.startswith("- ") and attack in line.split(": ", 1)[0]
                     and " failed scrapes, e.g. " in line for line in lines)
        for cells in rows:
            verdict = cells[-1]
            assert verdict in ("yes", "**NO**"), cells
            expected = _adversarial_verdict(cells, failed)
            if expected is not None:  # a harness that said "yes" regardless would fail here
                assert verdict == ("yes" if expected else "**NO**"), (cells, stdout)
            if verdict != "yes":
                missed.append(cells[0])
    assert any(line.startswith("no attack") for line in lines)
    assert any(metric.startswith("no attack") and cells[-1] == "-"
               for metric, cells in table.items()), markdown
    summary = [line for line in lines if "targets met" in line]
    total = 3 * len(ADVERSARIAL_ATTACKS)
    assert summary == ([f"All {total} targets met."] if not missed else
                       [f"{total - len(missed)} of {total} targets met; MISSED: "
                        + "; ".join(missed)]), (summary, missed)
