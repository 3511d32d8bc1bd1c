"""``python -m benchmarks.parse_cost``: what reading one API answer costs per database.

Times ``exporter.models`` reading simulator answers of 20 databases straight from their bytes,
beside ``json.loads`` alone on the same bytes, the two interleaved run by run so they share the
machine's noise. Prints one JSON object: the medians in microseconds per database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from exporter import models
from exporter.fleet import Fleet


def reader() -> Callable[[bytes], object]:
    """The exporter's own way from bytes to a connection (older code: json.loads + parser)."""
    read = getattr(models, "read_connection", None)
    if read is not None:
        return read  # type: ignore[no-any-return]  # a module attribute found by name
    return lambda body: models.parse_connection(json.loads(body))


def measure(answers: int, databases: int, runs: int) -> dict[str, float]:
    """Median microseconds per database for json.loads and for ours, over ``runs`` rounds."""
    fleet = Fleet(answers, databases, seed=1, token="t")  # noqa: S106 - never sent
    bodies = [json.dumps(fleet.answer(cid)).encode() for cid in fleet.connections]
    ways = {"json_loads_us": json.loads, "ours_us": reader()}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, way in ways.items():
            start = time.perf_counter()
            for body in bodies:
                way(body)
            samples[name].append((time.perf_counter() - start) / (answers * databases) * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    """Measure and print the medians as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=25)
    parser.add_argument("--databases", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps({**measure(args.answers, args.databases, args.runs),
                      "databases": args.databases, "runs": args.runs}))


if __name__ == "__main__":
    main()
