"""docker-compose.yml: every mount exists, the configs it mounts pass their own checkers."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from exporter.config import canonical_uuid, parse_config
from exporter.fleet import Fleet
from tests.alerting_helpers import run_tool
from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"simulator", "exporter", "prometheus", "alertmanager", "grafana", "blackbox"}


def compose() -> dict[str, Any]:
    """The parsed compose file."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def service(name: str) -> dict[str, Any]:
    """One service of the compose file."""
    return dict(compose()["services"][name])


def bind_mounts(name: str) -> dict[str, Path]:
    """A service's bind mounts: container path to host path (named volumes left out)."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` arguments as a mapping (a bare flag maps to "")."""
    out: dict[str, str] = {}
    for index, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        if not sep and index + 1 < len(args) and not args[index + 1].startswith("--"):
            value = args[index + 1]
        out[name] = value
    return out


def copy_mounts(name: str, root: Path) -> None:
    """Lay a service's bind mounts out under ``root`` as the container would see them."""
    for target, source in bind_mounts(name).items():
        dest = root / PurePosixPath(target).relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)


def test_compose_file_has_the_stack() -> None:
    """The compose file parses and runs simulator, exporter, Prometheus, Alertmanager, Grafana."""
    assert set(compose()["services"]) >= SERVICES


def test_every_mounted_host_path_exists() -> None:
    """Every bind mount, secret file and build context on the host exists."""
    doc = compose()
    for name in doc["services"]:
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (for {target}) is missing"
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
        build = doc["services"][name].get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context).is_dir(), f"{name}: build context {context} is missing"
    for secret in doc.get("secrets", {}).values():
        assert (ROOT / secret["file"]).is_file(), secret["file"]


def test_exporter_and_simulator_run_from_the_image_and_share_the_token() -> None:
    """Both services build ./Dockerfile's image; the simulator overrides the entrypoint, and
    both read the API token from the same compose secret."""
    exporter, simulator = service("exporter"), service("simulator")
    assert exporter["build"] == simulator["build"] == "."
    assert exporter["image"] == simulator["image"]
    assert "entrypoint" not in exporter
    assert simulator["entrypoint"] == ["reflexdb-simulator"]
    assert exporter["command"] == ["--config.file=/etc/reflexdb/config.yaml"]
    assert bind_mounts("exporter")["/etc/reflexdb/config.yaml"] == (
        ROOT / "deploy" / "compose" / "exporter.yml")
    config = parse_config(bind_mounts("exporter")["/etc/reflexdb/config.yaml"].read_text())
    shared = "reflexdb_api_token"
    assert shared in exporter["secrets"]
    assert shared in simulator["secrets"]
    assert set(compose()["secrets"]) == {shared}
    assert str(config.api.token_file) == f"/run/secrets/{shared}"
    assert flags(simulator["command"])["--token-file"] == f"/run/secrets/{shared}"


def test_exporter_config_lists_exactly_the_simulated_connections() -> None:
    """The exporter polls http://simulator:10511/v1 for exactly the IDs the simulator's
    --connections, --databases and --seed produce."""
    args = flags(service("simulator")["command"])
    assert args["--web.listen-address"] == "0.0.0.0:10511"
    fleet = Fleet(connections=int(args["--connections"]), databases=int(args["--databases"]),
                  seed=int(args["--seed"]), token="x")  # noqa: S106 - IDs ignore the token
    expected = [canonical_uuid(c.fields["id"]) for c in fleet.connections.values()]
    config = parse_config(bind_mounts("exporter")["/etc/reflexdb/config.yaml"].read_text())
    assert config.api.url == "http://simulator:10511/v1"
    assert [c.id for c in config.connections] == expected


def test_promtool_accepts_the_mounted_prometheus_config(tmp_path: Path) -> None:
    """promtool check config passes on prometheus.yml with its alerting and recording rules
    where the container has them, and it scrapes the exporter and alerts the Alertmanager of
    the stack."""
    copy_mounts("prometheus", tmp_path)
    container_path = flags(service("prometheus")["command"])["--config.file"]
    config_path = tmp_path / PurePosixPath(container_path).relative_to("/")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["rule_files"] = [
        str(tmp_path / PurePosixPath(rule).relative_to("/")) if rule.startswith("/") else rule
        for rule in config["rule_files"]]
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_tool("promtool", "check", "config", config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr
    loaded = {PurePosixPath(rule).name for rule in config["rule_files"]}
    assert loaded == {"alerts.yml", "rules.yml"}, "the alerts and the recording rules"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["reflexdb"]["static_configs"][0]["targets"] == ["exporter:10510"]
    (alerting,) = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_amtool_accepts_the_mounted_alertmanager_config(tmp_path: Path) -> None:
    """amtool check-config passes on the file the Alertmanager container loads."""
    copy_mounts("alertmanager", tmp_path)
    container_path = flags(service("alertmanager")["command"])["--config.file"]
    result = run_tool("amtool", "check-config",
                      tmp_path / PurePosixPath(container_path).relative_to("/"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_mounts_provisioning_and_dashboards_where_the_provider_looks() -> None:
    """Grafana gets the provisioning directory and the dashboards at the provider's path,
    with the data source pointing at the stack's Prometheus."""
    mounts = bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == ROOT / "grafana" / "provisioning"
    provider_file = ROOT / "grafana" / "provisioning" / "dashboards" / "reflexdb.yml"
    (provider,) = yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]
    assert mounts[provider["options"]["path"]] == ROOT / "grafana" / "dashboards"
    datasource_file = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (datasource,) = yaml.safe_load(datasource_file.read_text(encoding="utf-8"))["datasources"]
    assert datasource["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("name", sorted(SERVICES - {"simulator", "exporter"}))
def test_third_party_images_are_pinned(name: str) -> None:
    """Prometheus, Alertmanager, blackbox_exporter and Grafana images name an exact version,
    never latest."""
    image = service(name)["image"]
    assert ":" in image
    assert not image.endswith(":latest")


def test_blackbox_probes_the_simulated_endpoints_with_the_shipped_job() -> None:
    """blackbox_exporter loads examples/blackbox/blackbox.yml (which its own checker accepts),
    the simulator answers the endpoints under the name blackbox reaches it by, and the
    stack's probing job is the example's with only its module and addresses changed."""
    mounts = bind_mounts("blackbox")
    config = flags(service("blackbox")["command"])["--config.file"]
    assert mounts[config] == ROOT / "examples" / "blackbox" / "blackbox.yml"
    checked = run_tool("prometheus-blackbox-exporter", "--config.check",
                       f"--config.file={mounts[config]}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    modules = yaml.safe_load(mounts[config].read_text(encoding="utf-8"))["modules"]
    args = flags(service("simulator")["command"])
    assert "--serve-endpoints" in args
    assert args["--endpoint-base-url"] == "http://simulator:10511"
    stack = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text("utf-8"))
    job = next(j for j in stack["scrape_configs"] if j["job_name"] == "reflexdb-endpoints")
    example, = yaml.safe_load((ROOT / "examples" / "blackbox" / "prometheus.yml").read_text(
        "utf-8"))["scrape_configs"]
    module, = job["params"]["module"]
    assert module in modules
    assert not modules[module]["http"].get("fail_if_not_ssl"), "the simulator speaks HTTP"
    assert job["http_sd_configs"][0]["url"] == "http://exporter:10510/sd/databases?status=running"

    def addressless(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rules if r.get("target_label") != "__address__"]

    assert addressless(job["relabel_configs"]) == addressless(example["relabel_configs"])
    address = next(r for r in job["relabel_configs"] if r.get("target_label") == "__address__")
    assert address["replacement"] == "blackbox:9115"
    assert {k: v for k, v in job.items() if k not in ("params", "http_sd_configs",
                                                      "relabel_configs")} == {
        k: v for k, v in example.items() if k not in ("params", "http_sd_configs",
                                                      "relabel_configs")}
