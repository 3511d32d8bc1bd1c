"""--metric-allowlist and --metric-denylist: the families cut are never rendered or stored."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from exporter.layout import FULL, Layout
from exporter.metrics import ALL_METRICS
from exporter.models import read_connection
from exporter.selection import parse_selection
from exporter.store import Store
from tests.conftest import ROOT, Exporter, Scrape, Simulator, exporter_config

OURS = {spec.name for spec in ALL_METRICS}
CONNECTION = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"


def families(scrape: Scrape) -> set[str]:
    """The exporter's own families a scrape declares (a ``# TYPE`` line each)."""
    declared = set(re.findall(r"^# TYPE (\S+) ", scrape.text, flags=re.MULTILINE))
    return declared & OURS


def _cli(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "--config.check", *flags],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_patterns_match_whole_family_names() -> None:
    """A pattern must match the whole name: ``reflexdb_database_status`` cuts that family
    and not ``reflexdb_database_status_since_timestamp_seconds``; regexes work as such."""
    deny = parse_selection(None, "reflexdb_database_status")
    assert not deny.keeps("reflexdb_database_status")
    assert deny.keeps("reflexdb_database_status_since_timestamp_seconds")
    allow = parse_selection("reflexdb_connection_.*, reflexdb_database_info", None)
    assert allow.keeps("reflexdb_connection_up")
    assert allow.keeps("reflexdb_database_info")
    assert not allow.keeps("reflexdb_database_status")
    assert not allow.keeps("xreflexdb_connection_up")
    everything = parse_selection("", ",")
    assert all(everything.keeps(name) for name in OURS)


def test_both_lists_and_bad_regexes_are_refused_at_start() -> None:
    """Both flags at once, or a pattern that is no regex, stop the exporter with a line that
    names the flag; nothing is checked or started."""
    both = _cli("--metric-allowlist=reflexdb_connection_up",
                "--metric-denylist=reflexdb_database_info")
    assert both.returncode == 1
    assert "--metric-allowlist and --metric-denylist are mutually exclusive" in both.stderr
    bad = _cli("--metric-denylist=reflexdb_database_info,(unclosed")
    assert bad.returncode == 1
    assert "--metric-denylist: '(unclosed' is not a regular expression" in bad.stderr


def test_cut_families_take_no_room_in_the_store() -> None:
    """With the database families but one cut, a poll of 20 databases stores lines of that
    one family only: the others have no chunk, no deflate and no offsets."""
    records = [{"id": f"{CONNECTION[:-2]}{n:02d}", "name": f"db-{n}", "status": "running",
                "healthStatus": "ok", "region": "eu-west-1"} for n in range(20)]
    answer = read_connection(json.dumps({"id": CONNECTION, "databases": records}).encode())
    keep = parse_selection("reflexdb_database_status|reflexdb_connection_up", None)
    layouts = {"full": FULL, "cut": Layout.of(keep.keeps)}
    stored = {}
    for name, layout in layouts.items():
        store = Store([CONNECTION], 300.0, layout)
        store.success(CONNECTION, answer, 0.1)
        rendered = store.rendered[CONNECTION]
        stored[name] = rendered
    cut = stored["cut"]
    assert [s.name for s in layouts["cut"].stable_families] == [
        "reflexdb_connection_up", "reflexdb_database_status"]
    assert len(cut.stable) == len(cut.deflated) == 2
    assert len(cut._ends) == 1  # the per-database offsets, one array per database family
    full = dict(zip((s.name for s in FULL.stable_families), stored["full"].stable, strict=True))
    assert cut.stable == [full["reflexdb_connection_up"], full["reflexdb_database_status"]]
    assert len(b"".join(stored["full"].stable)) > 2 * len(b"".join(cut.stable))


@pytest.mark.e2e
def test_allowlist_serves_only_those_families_unchanged(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """An allowlisted exporter serves exactly the families named, with the same series and
    values as an unfiltered one, and the process metrics; a pattern matching nothing warns."""
    config = exporter_config(simulator)
    full = start_exporter(config).scrape()
    wanted = {"reflexdb_connection_up", "reflexdb_database_status",
              "reflexdb_api_request_duration_seconds", "reflexdb_exporter_build_info"}
    cut = start_exporter(config, extra_args=[
        "--metric-allowlist=reflexdb_connection_up,reflexdb_database_status,"
        "reflexdb_api_request_duration_seconds,reflexdb_exporter_build_.*,no_such_family"])
    scrape = cut.scrape()
    assert families(scrape) == wanted
    assert "process_cpu_seconds_total" in scrape.names()
    for family in ("reflexdb_connection_up", "reflexdb_database_status"):
        assert sorted(map(str, scrape.series(family))) == sorted(map(str, full.series(family)))
    assert scrape.types["reflexdb_database_status"] == "gauge"
    log = cut.logs()
    assert log.count("pattern matches no family") == 1
    assert "pattern=no_such_family" in log
    cut.assert_calm()


@pytest.mark.e2e
def test_denylist_cuts_those_families_and_keeps_the_rest(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """A denylisted exporter serves every family but those matched, and still answers the
    landing page, health and readiness."""
    exporter = start_exporter(exporter_config(simulator), extra_args=[
        "--metric-denylist=reflexdb_database_(status|health_status|instance_size|sync_mode)"])
    scrape = exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                                 connection_id=simulator.connection_ids[0]
                                                 .lower()) == 1)
    cut = {"reflexdb_database_status", "reflexdb_database_health_status",
           "reflexdb_database_instance_size", "reflexdb_database_sync_mode"}
    assert families(scrape) == OURS - cut
    assert "reflexdb_database_status_since_timestamp_seconds" in families(scrape)
    for path in ("/", "/-/healthy", "/-/ready"):
        assert exporter.http.get(path).status_code == 200
    exporter.assert_calm()

