"""The docs name exactly the metrics the code renders."""

from __future__ import annotations

import re

import pytest

from exporter import docs
from exporter.metrics import ALL_METRICS
from tests.conftest import ROOT, Exporter


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
