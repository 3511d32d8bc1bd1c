"""The Grafana dashboards: their conventions, and every query run against a real Prometheus."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.fleet import Fleet
from exporter.metrics import ALL_METRICS
from exporter.models import HEALTH_STATUSES, STATUSES
from tests.alerting_helpers import (
    BLACKBOX_DIR,
    DASHBOARD_FILES,
    RECORDING_FILE,
    BlackboxServer,
    PrometheusServer,
    probe_job,
    recording_rules,
)
from tests.conftest import ROOT, Exporter, Simulator, exporter_config, free_port, wait_until

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {"reflexdb-overview", "reflexdb-database", "reflexdb-exporter"}
# Metrics the dashboards may read besides the exporter's own contract (blackbox_exporter's
# probe results among them, from the probing job of examples/blackbox/).
OTHER_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                 "probe_success", "probe_duration_seconds",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds"}
RANGE_FUNCTIONS = r"\b(?:rate|irate|increase|delta|idelta|deriv)\s*\("
RECORDED = {rule["record"] for rule in recording_rules()}
RECORDED_NAME = r"\b\w+:\w+:\w+\b"
# A raw per-database series: a reflexdb_database_ family not read through a recording rule.
RAW_DATABASE_SERIES = r"(?<![:\w])reflexdb_database_\w+"
MAX_SERIES = 100  # the most series any overview panel may return, whatever the fleet's size
# The colour of each state on the database dashboard: red broken, amber on its way or
# degraded, green fine, grey unknown or at rest; paused (a state users choose) is blue.
RED, AMBER, GREEN, GREY, BLUE = "red", "orange", "green", "gray", "blue"
STATE_COLOURS = {
    "status": {"registered": AMBER, "building": AMBER, "deploying": AMBER, "running": GREEN,
               "pausing": AMBER, "paused": BLUE, "resuming": AMBER, "terminating": AMBER,
               "terminated": GREY, "failed": RED, "stopped": GREY},
    "health_status": {"ok": GREEN, "degraded": AMBER, "unreachable": RED, "cap_exceeded": RED,
                      "unknown": GREY},
}
STATE_PANELS = {"Status": ("status", STATUSES), "Health": ("health_status",
                                                           (*HEALTH_STATUSES, "unknown")),
                "Desired state": ("desired_state", STATUSES)}


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


def panel(dashboard: dict[str, Any], title: str, kind: str | None = None) -> dict[str, Any]:
    """The one panel with this title (and type, when given)."""
    (found,) = [p for p in panels(dashboard)
                if p["title"] == title and kind in (None, p["type"])]
    return found


def _closing(expr: str, start: int) -> int:
    """The index of the parenthesis that closes the one at ``start`` (strings skipped)."""
    depth, quoted = 0, False
    for index in range(start, len(expr)):
        char = expr[index]
        if char == '"' and expr[index - 1] != "\\":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0:
                return index
    raise AssertionError(f"unbalanced parentheses in {expr}")


def _top_level_and(expr: str) -> tuple[str, str] | None:
    """The operands of the last ``and`` outside any parentheses, or None."""
    depth, quoted, found = 0, False, None
    for index, char in enumerate(expr):
        if char == '"' and expr[index - 1] != "\\":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and re.match(r"\band\b", expr[index:]) and (
                index == 0 or not (expr[index - 1].isalnum() or expr[index - 1] == "_")):
            found = index
    if found is None:
        return None
    right = re.sub(r"^and\s*(?:on\s*\([^)]*\))?", "", expr[found:]).strip()
    return expr[:found].strip(), right


def cap(expr: str) -> int | None:
    """The most series the expression can return, if its outermost operation bounds it:
    topk/bottomk(N, ...), sort/sort_desc of a capped expression, or ``... and capped``."""
    expr = expr.strip()
    while expr.startswith("(") and _closing(expr, 0) == len(expr) - 1:
        expr = expr[1:-1].strip()
    call = re.match(r"(\w+)\s*\(", expr)
    if call and _closing(expr, call.end() - 1) == len(expr) - 1:
        inner = expr[call.end():-1]
        if call.group(1) in ("topk", "bottomk"):
            number = re.match(r"\s*(\d+)\s*,", inner)
            return int(number.group(1)) if number else None
        if call.group(1) in ("sort", "sort_desc"):
            return cap(inner)
        return None
    operands = _top_level_and(expr)
    if operands is None:
        return None
    caps = [c for c in map(cap, operands) if c is not None]
    return min(caps) if caps else None


def threshold_colour(defaults: dict[str, Any], value: float) -> str:
    """The colour Grafana gives a value by the field's absolute thresholds."""
    colour = ""
    for step in defaults["thresholds"]["steps"]:
        if step["value"] is None or value >= step["value"]:
            colour = step["color"]
    return colour


def mapped(defaults: dict[str, Any], value: float) -> dict[str, Any]:
    """The value mapping (text and colour) Grafana applies to a value."""
    for mapping in defaults["mappings"]:
        if mapping["type"] == "value" and f"{value:g}" in mapping["options"]:
            return dict(mapping["options"][f"{value:g}"])
    raise AssertionError(f"no mapping for {value}")


DASHBOARDS = {path.stem: load(path) for path in DASHBOARD_FILES}
IDS = list(DASHBOARDS)
OVERVIEW = DASHBOARDS["reflexdb-overview"]


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
        recorded = set(re.findall(RECORDED_NAME, expr))
        assert recorded <= RECORDED, f"{title}: not in rules.yml: {recorded - RECORDED}"
        raw = re.sub(RECORDED_NAME, "", expr)
        names = set(re.findall(r"\b(?:reflexdb|process|scrape|probe)_[a-z_]+\b|\bup(?=\{)",
                               raw))
        assert names or recorded, f"{title}: no metric found in {expr}"
        assert names <= contract, f"{title}: {names - contract}"


def test_database_dashboard_picks_connection_then_database() -> None:
    """The database dashboard's variables are connection, then database within it."""
    found = variables(DASHBOARDS["reflexdb-database"])
    assert list(found) == ["datasource", "connection", "database"]
    assert "$connection" in found["database"]["definition"]
    for title, expr in exprs(DASHBOARDS["reflexdb-database"]):
        assert 'connection_id="$connection"' in expr, title


def test_overview_has_job_connection_and_region_variables() -> None:
    """The overview picks one job, then any connections and regions (all by default)."""
    found = variables(OVERVIEW)
    assert list(found) == ["datasource", "job", "connection", "region"]
    assert not found["job"]["multi"]
    for name in ("connection", "region"):
        assert found[name]["multi"], name
        assert found[name]["includeAll"], name
        assert found[name]["allValue"] == ".*", f"{name}: All must match an empty label too"
    assert "$job" in found["connection"]["definition"]
    assert "$connection" in found["region"]["definition"]


def test_every_overview_query_filters_by_job_connection_and_region() -> None:
    """Every overview panel query narrows to the chosen job, connections and regions."""
    for title, expr in exprs(OVERVIEW):
        assert 'job="$job"' in expr, title
        assert 'connection_id=~"$connection"' in expr, title
        assert 'region=~"$region"' in expr, title


def test_overview_fleet_panels_read_the_recording_rules() -> None:
    """Every overview query that is not capped reads recording rules and no raw per-database
    series, so its cost follows connections and regions, not databases."""
    fleet_wide = [(title, expr) for title, expr in exprs(OVERVIEW) if cap(expr) is None]
    assert len(fleet_wide) >= 10
    for title, expr in fleet_wide:
        assert re.search(RECORDED_NAME, expr), f"{title} reads no recording rule"
        assert not re.search(RAW_DATABASE_SERIES, expr), f"{title} reads per-database series"


def test_overview_per_database_queries_are_capped() -> None:
    """Every overview query that reads per-database series returns at most 100 of them: its
    outermost operation is a topk (or a sort of one, or an ``and`` with one)."""
    per_database = [(t, e) for t, e in exprs(OVERVIEW) if re.search(RAW_DATABASE_SERIES, e)]
    assert {t for t, _ in per_database} == {"Databases needing attention (longest 50)"}
    for title, expr in per_database:
        bound = cap(expr)
        assert bound is not None, f"{title} is not capped: {expr}"
        assert bound <= MAX_SERIES, title


def test_overview_per_database_panels_show_only_databases_needing_attention() -> None:
    """The overview's per-database queries keep only databases whose status is not running or
    whose health is not ok."""
    attention = re.compile(
        r'and on \(job, connection_id, database_id\)\s*\(\s*'
        r'max by \(job, connection_id, database_id\) \(reflexdb_database_status\{[^}]*'
        r'status="running"\}\) == 0\s*or\s*'
        r'max by \(job, connection_id, database_id\) \(reflexdb_database_health_status\{[^}]*'
        r'health_status="ok"\}\) == 0\s*\)\s*\)$')
    for title, expr in exprs(OVERVIEW):
        if re.search(RAW_DATABASE_SERIES, expr):
            assert attention.search(expr), title


def test_cap_recognises_capped_and_uncapped_queries() -> None:
    """The cap() reading used above finds a topk bound at the top and misses one deeper."""
    assert cap("topk(50, x)") == 50
    assert cap("sort_desc(topk(20, a * on (b) group_left (c) d))") == 20
    assert cap("(a * b) and on (x) topk(50, y and on (x) z)") == 50
    assert cap("sum(topk(50, x))") is None
    assert cap("topk(50, x) or y") is None
    assert cap("a and on (x) b") is None


@pytest.mark.parametrize("title", list(STATE_PANELS))
def test_database_state_panels_colour_every_value(title: str) -> None:
    """The database dashboard's Status, Health and Desired state stats map every state the
    API lists to its own text and colour (red failed or over cap, amber degraded or on its
    way, green running or ok, grey unknown), by the code the query gives it."""
    label, states = STATE_PANELS[title]
    found = panel(DASHBOARDS["reflexdb-database"], title, "stat")
    defaults = found["fieldConfig"]["defaults"]
    assert found["options"]["colorMode"] in ("background", "value")
    (target,) = found["targets"]
    codes = {state: float(code) for state, code in
             re.findall(rf'{label}="(\w+)"[^}}]*\}} \* (\d+)', target["expr"])}
    assert set(codes) == set(states), "the query gives every state a code"
    assert len(set(codes.values())) == len(codes), "two states share a code"
    colours = STATE_COLOURS["health_status" if label == "health_status" else "status"]
    for state in states:
        shown = mapped(defaults, codes[state])
        assert shown["text"] == state
        assert shown["color"] == colours[state], state
    assert mapped(defaults, 0)["color"] == GREY, "a state outside the list is grey"


def test_database_picker_covers_the_time_range() -> None:
    """The database picker is a label_values() of a series selector, refreshed with the time
    range, so it lists every database seen in the range and not only those present at its
    end (query_result() evaluates at the end)."""
    database = variables(DASHBOARDS["reflexdb-database"])["database"]
    for text in (database["definition"], database["query"]["query"]):
        assert "query_result" not in text
        match = re.fullmatch(r"label_values\((\w+\{[^}]*\}),\s*database_id\)", text)
        assert match, text
    assert database["refresh"] == 2, "refresh on time range change"


def test_exporter_targets_up_is_x_of_n_and_red_when_one_is_down() -> None:
    """The exporter dashboard's targets-up stat shows "x of N up" from sum and count of up per
    job, and its value, the targets down, turns it red from one."""
    found = panel(DASHBOARDS["reflexdb-exporter"], "Exporter targets up")
    (target,) = found["targets"]
    assert 'sum by (job) (up{job="$job", instance=~"$instance"})' in target["expr"]
    assert 'count by (job) (up{job="$job", instance=~"$instance"})' in target["expr"]
    assert target["legendFormat"] == "{{up}} of {{targets}} up"
    assert found["options"]["textMode"] == "name"
    defaults = found["fieldConfig"]["defaults"]
    assert threshold_colour(defaults, 0) == "green"
    assert threshold_colour(defaults, 1) == "red"
    assert threshold_colour(defaults, 2) == "red"


def test_poll_failures_are_operations_per_second() -> None:
    """Poll panels count polls, not requests: their unit is ops, not reqps."""
    for title in ("Poll failures by reason", "Poll failures by connection", "Polls"):
        found = panel(DASHBOARDS["reflexdb-exporter"], title)
        assert found["fieldConfig"]["defaults"]["unit"] == "ops", title


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


def grafana_format(var: dict[str, Any], value: str) -> str:
    """A value as Grafana puts it into a Prometheus query: regex-escaped for a multi-value or
    include-all variable, then with backslashes escaped for the PromQL string."""
    if var.get("multi") or var.get("includeAll"):
        return re.escape(value).replace("\\", "\\\\")
    return value


@dataclass
class Stack:
    """A simulator, an exporter polling it, and Prometheus scraping the exporter."""

    simulator: Simulator
    exporter: Exporter
    prometheus: PrometheusServer
    connection_id: str
    database_id: str
    region: str
    chosen: dict[str, str] = field(default_factory=dict)

    def values(self, dashboard: dict[str, Any]) -> dict[str, str]:
        """What Grafana would put in place of each variable of the dashboard."""
        chosen = {"datasource": "", "job": "reflexdb", "connection": self.connection_id,
                  "database": self.database_id, "region": self.region,
                  "instance": self.exporter.url.removeprefix("http://"), **self.chosen}
        out = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
               "__range": "1h", "__range_s": "3600", "__range_ms": "3600000"}
        for name, var in variables(dashboard).items():
            value = chosen[name]
            out[name] = value if value == ".*" else grafana_format(var, value)
        return out

    def substitute(self, expr: str, dashboard: dict[str, Any]) -> str:
        """The expression with every dashboard and global variable replaced."""
        for name, value in sorted(self.values(dashboard).items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
        assert "$" not in expr, f"unknown variable left in {expr}"
        return expr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fleet with one failed database that has every optional field set, a failing poll,
    the recording rules loaded, and a second scrape target that is down."""
    tmp = tmp_path_factory.mktemp("dashboards")
    token = "tok-" + secrets.token_hex(16)
    # The simulator answers the databases' endpoints, which blackbox_exporter probes.
    simulator = Simulator(tmp, token, extra_args=["--serve-endpoints"])
    exporter = prometheus = blackbox = None
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
        # Every database with an endpoint is probed, the failed one too (which keeps the
        # endpointUrl it had running, and fails its probe), over the demo's plain-HTTP module.
        blackbox = BlackboxServer(tmp, BLACKBOX_DIR / "blackbox.yml")
        probes = probe_job(f"{exporter.url}/sd/databases", blackbox.address,
                           module="reflexdb_http_demo")
        # Nothing listens on the second target: the exporter dashboard shows one of two down.
        prometheus = PrometheusServer(
            tmp, [exporter.url.removeprefix("http://"), f"127.0.0.1:{free_port()}"],
            rule_files=[RECORDING_FILE], jobs=[probes])
        wait_until(lambda: prometheus.query("reflexdb_connection_up == 1"), timeout=20,
                   what="Prometheus to scrape the exporter")
        wait_until(lambda: prometheus.query(
            'job_connection_id_region_status:reflexdb_database_status:count{status="failed"}'),
            timeout=20, what="the recording rules to count the failed database")
        # One failed poll (a 404 is never retried), so the failure panels have a rate to show.
        simulator.fault(simulator.connection_ids[1], status=404, remaining=1,
                        body='{"error": "not_found", "message": "connection not found"}')
        wait_until(lambda: prometheus.query(
            "rate(reflexdb_connection_poll_failures_total[1m]) > 0"), timeout=20,
            what="a failed poll to show in Prometheus")
        wait_until(lambda: prometheus.query(
            f'probe_success{{database_id="{record["id"].lower()}"}}'), timeout=20,
            what="the failed database's endpoint to be probed")
        yield Stack(simulator, exporter, prometheus, connection_id.lower(),
                    record["id"].lower(), record["region"])
    finally:
        if prometheus:
            prometheus.close()
        if blackbox:
            blackbox.close()
        if exporter:
            exporter.close()
        simulator.close()


@pytest.mark.e2e
@pytest.mark.parametrize("name", IDS)
def test_every_panel_query_runs_and_returns_data(stack: Stack, name: str) -> None:
    """Every panel query, its variables filled in, runs on Prometheus and returns series."""
    dashboard = DASHBOARDS[name]
    empty = []
    for title, expr in exprs(dashboard):
        if not stack.prometheus.query(stack.substitute(expr, dashboard)):
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


def options(stack: Stack, dashboard: dict[str, Any], var: dict[str, Any]) -> dict[str, str]:
    """The options (value to text) Grafana would list for a query variable.

    label_values(selector, label) is what Grafana asks Prometheus' label values API for,
    over the dashboard's time range (the last hour here); its options show the value.
    query_result(expr) is an instant query at the range's end, read through the regex.
    """
    definition = stack.substitute(var["definition"], dashboard)
    if match := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition, flags=re.DOTALL):
        selector, label = match.groups()
        now = time.time()
        found = stack.prometheus.label_values(label, selector, now - 3600, now)
        return {value: value for value in found}
    match = re.fullmatch(r"query_result\((.*)\)", definition, flags=re.DOTALL)
    assert match, f"unexpected variable query {definition}"
    pattern = re.compile(var["regex"].strip("/").replace("(?<", "(?P<"))
    hits = {}
    for line in query_result_lines(stack.prometheus.query(match.group(1))):
        if hit := pattern.search(line):
            hits[hit.group("value")] = hit.group("text") or hit.group("value")
    return hits


@pytest.mark.e2e
@pytest.mark.parametrize("name", IDS)
def test_variables_list_the_real_connections_and_databases(stack: Stack, name: str) -> None:
    """Each query variable lists real values: connections by name, the connection's
    databases by ID (label_values shows the value; the name is on the dashboard), regions."""
    fleet = stack.simulator.fleet()
    dashboard = DASHBOARDS[name]
    for var in variables(dashboard).values():
        if var["type"] != "query":
            continue
        found = options(stack, dashboard, var)
        assert found, f"{var['name']} lists nothing"
        if var["name"] == "connection":
            assert found == {cid: answer["name"] for cid, answer in fleet.items()}
        if var["name"] == "database":
            records = fleet[stack.connection_id]["databases"]
            assert found == {db["id"].lower(): db["id"].lower() for db in records}
        if var["name"] == "region":
            records = fleet[stack.connection_id]["databases"]
            assert set(found) == {db["region"] for db in records}
        if var["name"] == "job":
            assert found == {"reflexdb": "reflexdb"}


@pytest.mark.e2e
def test_database_picker_lists_a_database_gone_from_the_fleet(stack: Stack) -> None:
    """A database deleted from the API, absent from Prometheus now, is still in the database
    picker, which covers the time range."""
    connection_id = stack.simulator.connection_ids[2]
    gone = stack.simulator.databases(connection_id)[0]["id"]
    stack.simulator.control("DELETE", f"connections/{connection_id}/databases/{gone}")
    wait_until(lambda: not stack.prometheus.query(
        f'reflexdb_database_info{{database_id="{gone.lower()}"}}'), timeout=20,
        what="the deleted database to leave Prometheus")
    dashboard = DASHBOARDS["reflexdb-database"]
    picker = Stack(**{**stack.__dict__, "chosen": {"connection": connection_id.lower()}})
    found = options(picker, dashboard, variables(dashboard)["database"])
    assert gone.lower() in found
    assert len(found) == len(stack.simulator.databases(connection_id)) + 1


@pytest.mark.e2e
def test_database_state_panels_show_the_failed_database_in_red(stack: Stack) -> None:
    """On the failed database the Status stat reads failed in red, Health unreachable in
    red and Desired state running in green, through the query's code and the mapping."""
    dashboard = DASHBOARDS["reflexdb-database"]
    shown = {}
    for title in STATE_PANELS:
        found = panel(dashboard, title, "stat")
        (series,) = stack.prometheus.query(stack.substitute(found["targets"][0]["expr"],
                                                            dashboard))
        mapping = mapped(found["fieldConfig"]["defaults"], float(series["value"][1]))
        shown[title] = (mapping["text"], mapping["color"])
    assert shown == {"Status": ("failed", RED), "Health": ("unreachable", RED),
                     "Desired state": ("running", GREEN)}


@pytest.mark.e2e
def test_exporter_targets_up_turns_red_with_one_target_down(stack: Stack) -> None:
    """With every target of the job chosen the targets-up stat reads "1 of 2 up" in red; with
    only the exporter, "1 of 1 up" in green."""
    dashboard = DASHBOARDS["reflexdb-exporter"]
    found = panel(dashboard, "Exporter targets up")
    shown = {}
    for instance in (".*", stack.exporter.url.removeprefix("http://")):
        chosen = Stack(**{**stack.__dict__, "chosen": {"instance": instance}})
        (series,) = stack.prometheus.query(chosen.substitute(found["targets"][0]["expr"],
                                                             dashboard))
        legend = "{up} of {targets} up".format(**series["metric"])
        shown[legend] = threshold_colour(found["fieldConfig"]["defaults"],
                                         float(series["value"][1]))
    assert shown == {"1 of 2 up": "red", "1 of 1 up": "green"}


# ------------------------------------------------------------ ten thousand databases, bounded

BIG_CONNECTIONS, BIG_DATABASES, BIG_ATTENTION = 500, 20, 0.02


def test_simulator_attention_makes_exactly_that_share_need_attention() -> None:
    """The simulator's --attention fleet has exactly that share of databases not running or
    not ok, a mix of failed, unhealthy and transitional ones, those failed or unhealthy with
    a lastError that needs HTML escaping, and the same databases as without the flag."""
    plain = Fleet(BIG_CONNECTIONS, BIG_DATABASES, 7, "t")
    fleet = Fleet(BIG_CONNECTIONS, BIG_DATABASES, 7, "t", attention=BIG_ATTENTION)
    records = [r for c in fleet.connections.values() for r in c.databases]
    before = [r for c in plain.connections.values() for r in c.databases]
    assert [(r["id"], r["name"], r["region"]) for r in records] == [
        (r["id"], r["name"], r["region"]) for r in before]
    needing = [r for r in records if r["status"] != "running" or r["healthStatus"] != "ok"]
    assert len(needing) == round(BIG_ATTENTION * len(records)) == 200
    kinds = {(r["status"], r["healthStatus"]) for r in needing}
    assert {("failed", "unreachable"), ("running", "degraded"),
            ("running", "cap_exceeded")} <= kinds
    assert {r["status"] for r in needing} >= {"building", "deploying", "resuming", "pausing"}
    for record in needing:
        if record["status"] == "failed" or record["healthStatus"] not in ("ok", None):
            assert set("<>&\"") <= set(record["lastError"]), record["lastError"]
        else:
            assert record["lastError"] is None
    for record in records:
        if record not in needing:
            assert record["lastError"] is None
            assert record["endpointUrl"]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real exporter polling a static simulated fleet of 500 connections of 20 databases,
    2% needing attention, and Prometheus scraping it every 5 s with the recording rules.
    Prometheus keeps only the families the overview and the rules read."""
    tmp = tmp_path_factory.mktemp("big-fleet")
    token = "tok-" + secrets.token_hex(16)
    simulator = Simulator(tmp, token, connections=BIG_CONNECTIONS, databases=BIG_DATABASES,
                          seed=7, extra_args=["--attention", str(BIG_ATTENTION),
                                              "--log.level", "warn"])
    exporter = prometheus = None
    try:
        config = exporter_config(simulator, poll_interval="10m", stale_after="1h")
        config["api"]["timeout"] = "30s"
        exporter = Exporter(tmp, config, token, extra_args=["--log.level", "warn"])
        read = " ".join([e for _, e in exprs(OVERVIEW)] + [r["expr"] for r in recording_rules()]
                        + [str(v.get("definition")) for v in variables(OVERVIEW).values()])
        families = set(re.findall(r"(?<![\w])reflexdb_[a-z_]+", re.sub(RECORDED_NAME, "", read)))
        families |= set(re.findall(r"(?<=:)reflexdb_[a-z_]+(?=:)", read))
        prometheus = PrometheusServer(tmp, [exporter.url.removeprefix("http://")],
                                      rule_files=[RECORDING_FILE], interval="5s",
                                      keep="|".join(sorted(families)))
        # A raw query over 10,000 databases takes seconds, many on a loaded 2-core machine.
        prometheus.http.timeout = httpx.Timeout(120)
        total = BIG_CONNECTIONS * BIG_DATABASES

        def counted() -> bool:
            result = prometheus.query(
                "sum(job_connection_id_region_status:reflexdb_database_status:count)")
            return bool(result) and float(result[0]["value"][1]) == total

        wait_until(counted, timeout=120, what="the rules to count every database")
        for rule in recording_rules():  # the whole group evaluated at least once
            wait_until(lambda name=rule["record"]: prometheus.query(name), timeout=60,
                       what=f"{rule['record']} to be recorded")
        first = simulator.connection_ids[0].lower()
        yield Stack(simulator, exporter, prometheus, first, "", "",
                    chosen={"connection": ".*", "region": ".*"})
    finally:
        if prometheus:
            prometheus.close()
        if exporter:
            exporter.close()
        simulator.close()


@pytest.mark.e2e
def test_no_overview_panel_returns_more_than_100_series_at_10000_databases(big: Stack) -> None:
    """On a real Prometheus scraping 10,000 databases of which 2% need attention, every
    overview panel query returns at most 100 series, instant and over a range, and the
    counts and lists are the fleet's."""
    end = time.time()
    counts: dict[str, list[int]] = {}
    values: dict[str, float] = {}
    for title, expr in exprs(OVERVIEW):
        query = big.substitute(expr, OVERVIEW)
        instant = big.prometheus.query(query)
        ranged = big.prometheus.query_range(query, end - 60, end, 5)
        counts[title] = [len(instant), len(ranged)]
        if len(instant) == 1:
            values[title] = float(instant[0]["value"][1])
    over = {title: n for title, n in counts.items() if max(n) > MAX_SERIES or min(n) == 0}
    assert not over, f"panels over {MAX_SERIES} series or empty (instant, range): {over}"
    total = BIG_CONNECTIONS * BIG_DATABASES
    quarter = round(BIG_ATTENTION * total) // 4  # failed, degraded, cap_exceeded, transition
    assert values["Databases"] == total
    assert values["Failed"] == quarter
    assert values["Cap exceeded"] == quarter
    assert values["Unhealthy"] == 3 * quarter  # failed ones are unreachable
    assert values["Running"] == total - 2 * quarter
    assert values["Connections down"] == 0
    assert counts["Databases needing attention (longest 50)"] == [50, 50]
    assert counts["Largest connections (top 20)"][0] == 20
