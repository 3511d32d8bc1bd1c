"""Write docs/metrics.md from the metric specs, so the docs cannot name other metrics."""

from __future__ import annotations

import sys

from exporter.metrics import ALL_METRICS
from exporter.spec import IDENTITY_LABELS

HEADER = """# Metrics

Generated from `exporter/metrics.py` by `python -m exporter.docs > docs/metrics.md`;
a test fails when the two disagree.

Every per-connection series carries `connection_id`; every per-database series carries
`connection_id`, `database_id` and `database_name`. IDs are lowercase canonical UUIDs.
State sets (`status`, `health_status`, `instance_size`, `sync_mode`, `sync_mode_allowed`)
emit every documented state as 0 or 1, plus one series at 1 for a value the API reference does
not list. A missing optional text label is the empty string. Values come from the latest
background poll of each connection, never from the API at scrape time.

The exporter also serves prometheus_client's `process_*` and `python_*` metrics.

| metric | type | labels | help |
|---|---|---|---|
"""


def render() -> str:
    """The whole Markdown page."""
    rows = []
    for spec in ALL_METRICS:
        own = ", ".join(f"`{label}`" for label in spec.labels)
        identity = ", ".join(IDENTITY_LABELS[spec.scope])
        labels = f"{spec.scope} ({identity})" if identity else "none"
        labels = f"{labels}; {own}" if own else labels
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
