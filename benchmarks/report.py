"""The results table: one row per target (plus information rows), as text and as Markdown."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the table; ``met`` is None for a row that only informs."""

    metric: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool | None

    @property
    def verdict(self) -> str:
        """yes, NO or a dash for information rows."""
        return "-" if self.met is None else "yes" if self.met else "NO"


HEADER = ("metric", "ours", "baseline", "ratio", "target", "met")


def ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def mib(size: float) -> str:
    """Bytes as MiB."""
    return f"{size / 1048576:.1f} MiB"


def times(ratio: float) -> str:
    """A ratio as ``2.31x``."""
    if not math.isfinite(ratio):
        return "n/a"
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x"


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile: the smallest value with ``pct`` % of values at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median."""
    return float(statistics.median(values))


def text_table(rows: Sequence[Row]) -> str:
    """An aligned plain-text table."""
    cells = [HEADER, *((r.metric, r.ours, r.baseline, r.ratio, r.target, r.verdict)
                       for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
             .rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    """A GitHub-flavoured Markdown table."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(HEADER), line(["---"] * len(HEADER))]
    out += [line((r.metric, r.ours, r.baseline, r.ratio, r.target,
                  "**NO**" if r.met is False else r.verdict)) for r in rows]
    return "\n".join(out)


def summary(rows: Sequence[Row]) -> str:
    """One line naming the missed targets, or saying all were met."""
    targets = [r for r in rows if r.met is not None]
    missed = [r.metric for r in targets if not r.met]
    if not missed:
        return f"All {len(targets)} targets met."
    return (f"{len(targets) - len(missed)} of {len(targets)} targets met; MISSED: "
            + "; ".join(missed))
