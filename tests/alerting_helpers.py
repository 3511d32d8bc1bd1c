"""Debian's prometheus, prometheus-alertmanager and prometheus-blackbox-exporter on loopback,
and a webhook that records."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT, Process, free_port, wait_until

PROMETHEUS_DIR = ROOT / "prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
RECORDING_FILE = PROMETHEUS_DIR / "rules.yml"
RULES_FILES = (ALERTS_FILE, RECORDING_FILE)
ALERTMANAGER_FILE = PROMETHEUS_DIR / "alertmanager.yml"
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD_FILES = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RUNBOOK_URL = "https://github.com/reflexdb/reflexdb-exporter/blob/main/docs/runbook.md"
JOB = "reflexdb"
BLACKBOX_DIR = ROOT / "examples" / "blackbox"
PROBE_JOB = "reflexdb-endpoints"


def tool(name: str) -> str:
    """The path of a Prometheus program; the test fails, saying what to install, without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install Debian's prometheus and "
                    f"prometheus-alertmanager packages")
    return path


def run_tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool or amtool from the repository root and capture what it says."""
    return subprocess.run([tool(name), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of prometheus/alerts.yml."""
    doc = yaml.safe_load(ALERTS_FILE.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    """Every recording rule of prometheus/rules.yml, in order."""
    doc = yaml.safe_load(RECORDING_FILE.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "record" in rule]


def write_rules_with_for(dest: Path, duration: str, overrides: dict[str, str]) -> Path:
    """Copy alerts.yml with every ``for:`` set to ``duration`` (or its override by name)."""
    doc = yaml.safe_load(ALERTS_FILE.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = overrides.get(rule["alert"], duration)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def _start(process: Process, http: httpx.Client, what: str) -> None:
    """Wait for /-/ready; stop at once, with the program's output, if it exits instead."""

    def ready() -> bool:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.proc.returncode}:\n"
                               f"{process.logs()}")
        return http.get("/-/ready").status_code == 200

    try:
        wait_until(ready, timeout=30, what=f"{what} to be ready")
    except BaseException:
        http.close()
        process.stop()
        raise


class PromQLError(Exception):
    """Prometheus refused a query."""


class PrometheusServer:
    """Debian's prometheus scraping some targets as job "reflexdb", every second.

    ``keep`` is a regular expression of metric names: the scrape keeps only those (a
    metric_relabel_configs keep), which spares memory on a large fleet. ``jobs`` are more
    scrape configs, as a user's prometheus.yml would list them.
    """

    def __init__(self, tmp: Path, targets: list[str], rule_files: Iterable[Path] = (),
                 alertmanager: str | None = None, interval: str = "1s", *,
                 keep: str | None = None, jobs: Iterable[dict[str, Any]] = ()) -> None:
        self.dir = tmp / f"prometheus-{free_port()}"
        self.dir.mkdir()
        job: dict[str, Any] = {"job_name": JOB, "static_configs": [{"targets": targets}]}
        if keep is not None:
            job["metric_relabel_configs"] = [
                {"source_labels": ["__name__"], "regex": keep, "action": "keep"}]
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [job, *jobs],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [
                {"api_version": "v2", "static_configs": [{"targets": [alertmanager]}]}]}
        config_path = self.dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self.process = Process(
            [tool("prometheus"), f"--config.file={config_path}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            self.dir / "prometheus.log", dict(os.environ))
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        _start(self.process, self.http, "prometheus")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query; PromQLError says why Prometheus refused it."""
        response = self.http.get("/api/v1/query", params={"query": expr})
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}\n{expr}")
        return list(body["data"]["result"])

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        """The result of a range query, as a graph or state-timeline panel runs it."""
        response = self.http.get("/api/v1/query_range", params={
            "query": expr, "start": start, "end": end, "step": step})
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}\n{expr}")
        return list(body["data"]["result"])

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """A label's values among the series that ``match`` selects over [start, end], as
        Grafana's label_values(match, label) asks for them."""
        response = self.http.get(f"/api/v1/label/{label}/values", params={
            "match[]": match, "start": start, "end": end})
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}\n{match}")
        return list(body["data"])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus holds now, pending or firing."""
        response = self.http.get("/api/v1/alerts").raise_for_status()
        return list(response.json()["data"]["alerts"])

    def close(self) -> None:
        """Stop the process."""
        self.http.close()
        self.process.stop()


def probe_job(sd_url: str, blackbox: str, module: str | None = None) -> dict[str, Any]:
    """examples/blackbox/prometheus.yml's job with the two addresses it says to replace
    (and another of the example's modules if asked), discovering and probing every second."""
    job, = copy.deepcopy(yaml.safe_load((BLACKBOX_DIR / "prometheus.yml").read_text(
        encoding="utf-8"))["scrape_configs"])
    job["http_sd_configs"][0].update(url=sd_url, refresh_interval="1s")
    job.update(scrape_interval="1s", scrape_timeout="1s")
    if module is not None:
        job["params"]["module"] = [module]
    for rule in job["relabel_configs"]:
        if rule.get("target_label") == "__address__":
            rule["replacement"] = blackbox
    return dict(job)


class BlackboxServer:
    """Debian's prometheus-blackbox-exporter with the given config file."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = Process(
            [tool("prometheus-blackbox-exporter"), f"--config.file={config}",
             f"--web.listen-address={self.address}"],
            tmp / f"blackbox-{self.port}.log", dict(os.environ))
        try:
            wait_until(lambda: httpx.get(f"http://{self.address}/-/healthy",
                                         timeout=2).status_code == 200, 20, "blackbox_exporter")
        except BaseException:
            self.process.stop()
            raise

    def close(self) -> None:
        """Stop the process."""
        self.process.stop()


class AlertmanagerServer:
    """Debian's prometheus-alertmanager, clustering off, with the given config."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.dir = tmp / f"alertmanager-{free_port()}"
        self.dir.mkdir()
        config_path = self.dir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self.process = Process(
            [tool("prometheus-alertmanager"), f"--config.file={config_path}",
             f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            self.dir / "alertmanager.log", dict(os.environ))
        self.address = f"127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=f"http://{self.address}", timeout=10)
        _start(self.process, self.http, "alertmanager")

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts as Prometheus would."""
        self.http.post("/api/v2/alerts", json=alerts).raise_for_status()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its state (active, suppressed)."""
        return list(self.http.get("/api/v2/alerts").raise_for_status().json())

    def close(self) -> None:
        """Stop the process."""
        self.http.close()
        self.process.stop()


class WebhookSink:
    """A loopback HTTP server that records every webhook notification Alertmanager sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[dict[str, Any]] = []
        record = self._record

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                record(self.path, json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                """Keep the test output quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, path: str, notification: dict[str, Any]) -> None:
        with self._lock:
            self._notifications.append({**notification, "path": path})

    def url(self, path: str) -> str:
        """A URL of this sink; the path tells receivers apart."""
        return f"http://127.0.0.1:{self.port}{path}"

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification received so far, oldest first."""
        with self._lock:
            return list(self._notifications)

    def alerts(self, status: str | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(notification, alert) for every alert in every notification, by alert status."""
        return [(n, a) for n in self.notifications() for a in n["alerts"]
                if status is None or a["status"] == status]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def alertmanager_test_config(sink: WebhookSink) -> dict[str, Any]:
    """prometheus/alertmanager.yml with fast timers and every receiver posting to the sink.

    Routing, grouping and inhibition stay as shipped; each receiver posts to the sink under
    ``/<receiver name>`` with resolved notifications on.
    """
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [
            {"url": sink.url(f"/{receiver['name']}"), "send_resolved": True}]

    def speed_up(route: dict[str, Any], root: bool) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"),
                           ("repeat_interval", "1h")):
            if root or key in route:
                route[key] = value
        for child in route.get("routes", []):
            speed_up(child, root=False)

    speed_up(config["route"], root=True)
    return config
