"""The docs name exactly the metrics the code renders."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from exporter import docs
from exporter.metrics import ALL_METRICS
from tests.conftest import ROOT, Exporter, Simulator, exporter_config


def test_metrics_doc_is_generated_from_the_specs() -> None:
    """docs/metrics.md equals what ``python -m exporter.docs`` writes today."""
    assert (ROOT / "docs" / "metrics.md").read_text() == docs.render(), (
        "run: python -m exporter.docs > docs/metrics.md")


@pytest.mark.e2e
def test_rendered_families_are_the_documented_ones(exporter: Exporter) -> None:
    """Every reflexdb_ family in a live scrape is documented, and every documented one is served."""
    exporter.wait_for(lambda s: s.series("reflexdb_database_status"))
    served = set(re.findall(r"^# TYPE (reflexdb_\w+) ", exporter.http.get("/metrics").text,
                            re.MULTILINE))
    documented = set(re.findall(r"^\| `(reflexdb_\w+)` \|",
                                (ROOT / "docs" / "metrics.md").read_text(), re.MULTILINE))
    assert served == documented == {spec.name for spec in ALL_METRICS}
    readme = (ROOT / "README.md").read_text()
    assert "docs/metrics.md" in readme


def _series_of(scrape_text: str, database_id: str) -> int:
    """How many series of a scrape carry this database_id."""
    return scrape_text.count(f'database_id="{database_id}"')


@pytest.mark.e2e
def test_documented_series_per_database_are_what_a_scrape_shows(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """A live database with every field set (two tags, a schedule, a desired state) has the
    documented number of series, and one with only its lifecycle fields the typical number."""
    _, typical, full, _, _ = docs.totals()
    connection = simulator.connection_ids[0]
    first, second = (db["id"] for db in simulator.databases(connection)[:2])
    simulator.patch_database(connection, first, tags=[{"label": "a", "color": "red"},
                                                      {"label": "b", "color": "blue"}],
                             pauseSchedule={"pauseAt": "00:00", "resumeAt": "23:59",
                                            "days": []}, desiredState="running",
                             status="running", healthStatus="ok", syncMode="poll",
                             instanceSize="small")
    simulator.patch_database(connection, second, tags=[], pauseSchedule=None,
                             desiredState=None, status="running", healthStatus="ok",
                             syncMode="poll", instanceSize="small")
    exporter = start_exporter(exporter_config(simulator))
    text = exporter.wait_for(lambda s: _series_of(s.text, first.lower()) == full).text
    assert _series_of(text, first.lower()) == full
    assert _series_of(text, second.lower()) == typical


def families_read_by_shipped_files() -> set[str]:
    """The exporter's families that any rules file or dashboard of the project reads."""
    names = {spec.name for spec in ALL_METRICS}
    histograms = {spec.name for spec in ALL_METRICS if spec.kind == "histogram"}
    text = "".join(path.read_text(encoding="utf-8") for path in
                   [*(ROOT / "prometheus").glob("*.yml"),
                    *(ROOT / "grafana" / "dashboards").glob("*.json")])
    found = set()
    for name in re.findall(r"\breflexdb_[a-z_]+", text):
        found.add(name)
        found.update(name.removesuffix(suffix) for suffix in ("_bucket", "_sum", "_count")
                     if name.removesuffix(suffix) in histograms)
    return found & names


def test_readme_names_exactly_the_families_nothing_shipped_reads() -> None:
    """The README's list of families safe to cut is exactly those no shipped alert, rule or
    dashboard reads."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"<!-- unused-families -->(.*?)<!-- /unused-families -->", readme)
    assert listed, "README has no unused-families list"
    unused = {spec.name for spec in ALL_METRICS} - families_read_by_shipped_files()
    assert set(re.findall(r"`(reflexdb_\w+)`", listed.group(1))) == unused
