"""The Grafana dashboards: their conventions, and every query run against a real Prometheus."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import ALL_METRICS
from tests.alerting_helpers import DASHBOARD_FILES, PrometheusServer
from tests.conftest import ROOT, Exporter, Simulator, exporter_config, wait_until

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {"reflexdb-overview", "reflexdb-database", "reflexdb-exporter"}
# Metrics the dashboards may read besides the exporter's own contract.
OTHER_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds"}
RANGE_FUNCTIONS = r"\b(?:rate|irate|increase|delta|idelta|deriv)\s*\("


def load(path: Path) -> dict[str, Any]:
    """A dashboard's JSON."""
    return dict(json.loads(path.read_text(encoding="utf-8")))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel."""
    return [(panel["title"], target["expr"]) for panel in panels(dashboard)
            for target in panel.get("targets", [])]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {var["name"]: var for var in dashboard["templating"]["list"]}


DASHBOARDS = {path.stem: load(path) for path in DASHBOARD_FILES}
IDS = list(DASHBOARDS)


def test_the_three_dashboards_exist_with_fixed_uids() -> None:
    """The overview, database and exporter dashboards exist, each with its own fixed uid."""
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]
    assert set(uids) == EXPECTED_UIDS
    assert len(uids) == len(set(uids))
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["uid"] == name, "file name and uid differ"
        assert dashboard["id"] is None
        assert "__inputs" not in dashboard
        assert dashboard["title"].startswith("ReflexDB")


@pytest.mark.parametrize("name", IDS)
def test_datasource_variable_is_used_by_every_panel(name: str) -> None:
    """The dashboard has a datasource variable and every panel, query and variable uses it."""
    dashboard = DASHBOARDS[name]
    datasource = variables(dashboard)["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for var in variables(dashboard).values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]


@pytest.mark.parametrize("name", IDS)
def test_every_panel_has_a_unit(name: str) -> None:
    """Every panel sets fieldConfig.defaults.unit."""
    for panel in panels(DASHBOARDS[name]):
        if panel["type"] != "row":
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


@pytest.mark.parametrize("name", IDS)
def test_panel_ids_and_layout_are_sound(name: str) -> None:
    """Panel ids are unique and no two panels overlap on the grid."""
    cells: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in panels(DASHBOARDS[name])]
    assert len(ids) == len(set(ids))
    for panel in panels(DASHBOARDS[name]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("name", IDS)
def test_rates_use_rate_interval(name: str) -> None:
    """Every rate(), irate() or increase() ranges over $__rate_interval."""
    for title, expr in exprs(DASHBOARDS[name]):
        for match in re.finditer(RANGE_FUNCTIONS, expr):
            window = re.search(r"\[([^\]]*)\]", expr[match.end():])
            assert window, f"{title}: no range after {match.group()}"
            assert window.group(1) == "$__rate_interval", f"{title}: {expr}"


@pytest.mark.parametrize("name", IDS)
def test_queries_read_only_known_metrics(name: str) -> None:
    """Every metric a query names is in the exporter's contract or Prometheus' own."""
    histograms = {spec.name + suffix for spec in ALL_METRICS if spec.kind == "histogram"
                  for suffix in ("_bucket", "_sum", "_count")}
    contract = {spec.name for spec in ALL_METRICS} | histograms | OTHER_METRICS
    for title, expr in exprs(DASHBOARDS[name]):
        names = set(re.findall(r"\b(?:reflexdb|process|scrape)_[a-z_]+\b|\bup(?=\{)", expr))
        assert names, f"{title}: no metric found in {expr}"
        assert names <= contract, f"{title}: {names - contract}"


def test_database_dashboard_picks_connection_then_database() -> None:
    """The database dashboard's variables are connection, then database within it."""
    found = variables(DASHBOARDS["reflexdb-database"])
    assert list(found) == ["datasource", "connection", "database"]
    assert "$connection" in found["database"]["definition"]
    for title, expr in exprs(DASHBOARDS["reflexdb-database"]):
        assert 'connection_id="$connection"' in expr, title


def test_provisioning_points_at_the_dashboards() -> None:
    """Grafana provisioning declares a Prometheus data source and a file dashboard provider."""
    provisioning = ROOT / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((provisioning / "dashboards" / "reflexdb.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ------------------------------------------------------------------ against a real Prometheus


@dataclass
class Stack:
    """A simulator, an exporter polling it, and Prometheus scraping the exporter."""

    simulator: Simulator
    exporter: Exporter
    prometheus: PrometheusServer
    connection_id: str
    database_id: str

    @property
    def values(self) -> dict[str, str]:
        """What Grafana would put in place of each variable."""
        return {"datasource": "", "connection": self.connection_id,
                "database": self.database_id, "job": "reflexdb",
                # A multi-value variable: Grafana regex-escapes it, then escapes the
                # backslashes for the PromQL string.
                "instance": re.escape(self.exporter.url.removeprefix("http://"))
                .replace("\\", "\\\\"),
                "__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
                "__range": "1h", "__range_s": "3600", "__range_ms": "3600000"}

    def substitute(self, expr: str) -> str:
        """The expression with every dashboard and global variable replaced."""
        for name, value in sorted(self.values.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
        assert "$" not in expr, f"unknown variable left in {expr}"
        return expr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fleet with one database that has every optional field set, and a failing poll."""
    tmp = tmp_path_factory.mktemp("dashboards")
    token = "tok-" + secrets.token_hex(16)
    simulator = Simulator(tmp, token)
    exporter = prometheus = None
    try:
        connection_id = simulator.connection_ids[0]
        record = next(db for db in simulator.databases(connection_id)
                      if db["status"] == "running")
        simulator.patch_database(
            connection_id, record["id"], status="failed", healthStatus="unreachable",
            desiredState="running", lastError="task exited: OutOfMemoryError",
            tags=[{"label": "prod", "color": "red"}],
            pauseSchedule={"pauseAt": "01:00", "resumeAt": "02:00", "days": [1, 2, 3]})
        config = exporter_config(simulator)
        config["api"]["requests_per_second"] = 50  # so the API budget panel has a limit
        exporter = Exporter(tmp, config, token)
        prometheus = PrometheusServer(tmp, [exporter.url.removeprefix("http://")])
        wait_until(lambda: prometheus.query("reflexdb_connection_up == 1"), timeout=20,
                   what="Prometheus to scrape the exporter")
        # One failed poll (a 404 is never retried), so the failure panels have a rate to show.
        simulator.fault(simulator.connection_ids[1], status=404, remaining=1,
                        body='{"error": "not_found", "message": "connection not found"}')
        wait_until(lambda: prometheus.query(
            "rate(reflexdb_connection_poll_failures_total[1m]) > 0"), timeout=20,
            what="a failed poll to show in Prometheus")
        yield Stack(simulator, exporter, prometheus, connection_id.lower(),
                    record["id"].lower())
    finally:
        if prometheus:
            prometheus.close()
        if exporter:
            exporter.close()
        simulator.close()


@pytest.mark.e2e
@pytest.mark.parametrize("name", IDS)
def test_every_panel_query_runs_and_returns_data(stack: Stack, name: str) -> None:
    """Every panel query, its variables filled in, runs on Prometheus and returns series."""
    empty = []
    for title, expr in exprs(DASHBOARDS[name]):
        if not stack.prometheus.query(stack.substitute(expr)):
            empty.append(title)
    assert not empty, f"panels without data: {empty}"


def query_result_lines(result: list[dict[str, Any]]) -> list[str]:
    """Grafana's text for query_result(): ``name{label="value",...} value timestamp``."""
    lines = []
    for series in result:
        metric = dict(series["metric"])
        name = metric.pop("__name__", "")
        labels = ",".join(f'{k}="{v}"' for k, v in metric.items())
        lines.append(f"{name}{{{labels}}} {series['value'][1]} {series['value'][0] * 1000}")
    return lines


def options(stack: Stack, var: dict[str, Any]) -> dict[str, str]:
    """The options (value to text) Grafana would list for a query variable."""
    definition = stack.substitute(var["definition"])
    if match := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition, flags=re.DOTALL):
        expr, label = match.groups()
        result = stack.prometheus.query(f"group by ({label}) ({expr})")
        return {s["metric"][label]: s["metric"][label] for s in result}
    match = re.fullmatch(r"query_result\((.*)\)", definition, flags=re.DOTALL)
    assert match, f"unexpected variable query {definition}"
    pattern = re.compile(var["regex"].strip("/").replace("(?<", "(?P<"))
    found = {}
    for line in query_result_lines(stack.prometheus.query(match.group(1))):
        if hit := pattern.search(line):
            found[hit.group("value")] = hit.group("text") or hit.group("value")
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("name", IDS)
def test_variables_list_the_real_connections_and_databases(stack: Stack, name: str) -> None:
    """Each query variable lists real values, showing connection and database names."""
    fleet = stack.simulator.fleet()
    for var in variables(DASHBOARDS[name]).values():
        if var["type"] != "query":
            continue
        found = options(stack, var)
        assert found, f"{var['name']} lists nothing"
        if var["name"] == "connection":
            assert found == {cid: answer["name"] for cid, answer in fleet.items()}
        if var["name"] == "database":
            records = fleet[stack.connection_id]["databases"]
            assert found == {db["id"].lower(): db["name"] for db in records}
        if var["name"] == "job":
            assert found == {"reflexdb": "reflexdb"}
