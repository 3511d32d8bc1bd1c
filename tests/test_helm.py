"""The Helm chart, rendered by the real helm: valid for Kubernetes 1.30, hardened and wired."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.config import parse_config
from exporter.sharding import owned
from exporter.webconfig import parse_web_config
from tests.conftest import Process, Simulator, free_port, parse_exposition, wait_until
from tests.helm_binary import HelmUnavailable, ensure

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "reflexdb-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES = "1.30.0"
# Kinds with schemas in kubernetes-validate; the Prometheus Operator's are checked by hand.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
UID = 10001
CONNECTION = "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0"
Doc = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The real helm binary, unpacked into the venv on first use."""
    try:
        return ensure()
    except HelmUnavailable as exc:
        pytest.fail(f"helm is needed for the chart tests: {exc}")


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; its output, whatever the exit code."""
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


@pytest.fixture
def render(helm: Path, tmp_path: Path) -> Callable[..., list[Doc]]:
    """``helm template`` with values (a dict) and values files; the rendered objects."""
    def rendered(values: dict[str, Any] | None = None, *files: Path,
                 release: str = "reflexdb") -> list[Doc]:
        args = ["template", release, str(CHART), "--namespace", "monitoring"]
        for path in files:
            args += ["-f", str(path)]
        if values is not None:
            path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
            path.write_text(yaml.safe_dump(values), encoding="utf-8")
            args += ["-f", str(path)]
        done = run_helm(helm, *args)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return rendered


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    """Every rendered object of one kind."""
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    """The one rendered object of a kind."""
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workload(docs: list[Doc]) -> Doc:
    """The Deployment or the StatefulSet, whichever was rendered (never both)."""
    found = of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def container(docs: list[Doc]) -> Doc:
    """The exporter container."""
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["exporter"]
    return dict(containers[0])


def argv(docs: list[Doc], pod_name: str) -> list[str]:
    """The exporter's argv in a pod of this name, as its shell (if any) would build it."""
    spec = container(docs)
    command, args = spec.get("command"), spec["args"]
    if command is None:
        return ["reflexdb-exporter", *args]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2].replace("exec reflexdb-exporter ", "printf '%s\\n' reflexdb-exporter ",
                                1)
    done = subprocess.run(["/bin/sh", "-c", script, *command[3:], *args], capture_output=True,
                          text=True, timeout=10, check=True, env={"POD_NAME": pod_name})
    return done.stdout.splitlines()


def rules_files() -> list[Path]:
    """Every Prometheus rules file the project ships (a YAML file with top-level groups)."""
    found = []
    for path in sorted((ROOT / "prometheus").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "groups" in data:
            found.append(path)
    return found


def test_chart_versions_follow_the_exporter() -> None:
    """Chart.yaml's version and appVersion are the exporter's version; kubeVersion >= 1.25."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == __version__
    assert chart["appVersion"] == __version__
    assert chart["kubeVersion"] == ">=1.25.0-0"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict_passes(helm: Path, values: Path | None) -> None:
    """``helm lint --strict`` passes for the default values and every ci/*-values.yaml."""
    done = run_helm(helm, "lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


COMBINATIONS: list[tuple[str, dict[str, Any] | None, list[Path]]] = [
    ("defaults", None, []),
    *[(path.name, None, [path]) for path in CI_VALUES],
    *[(f"shards={n}", {"shards": n, "token": "t"}, []) for n in range(1, 5)],
]


@pytest.mark.parametrize(("name", "values", "files"), COMBINATIONS,
                         ids=[c[0] for c in COMBINATIONS])
def test_every_rendered_object_validates_against_kubernetes_1_30(
        render: Callable[..., list[Doc]], name: str, values: dict[str, Any] | None,
        files: list[Path]) -> None:
    """Every object of a core kind passes kubernetes-validate's strict 1.30 schema (unknown
    fields fail), and the Operator's kinds have the fields the Operator reads."""
    docs = render(values, *files)
    assert docs, name
    for doc in docs:
        assert doc["metadata"]["namespace"] == "monitoring", doc["kind"]
        if doc["kind"] in OPERATOR_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(doc["spec"]) <= {"groups", "jobLabel", "selector", "namespaceSelector",
                                        "endpoints"}, doc["spec"]
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_defaults_render_one_hardened_replica(render: Callable[..., list[Doc]]) -> None:
    """By default: one Deployment replica with no shard flags, its own token Secret, a
    Service, no Operator objects, no dashboards and no PDB."""
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert not of_kind(docs, "StatefulSet")
    assert not of_kind(docs, "PodDisruptionBudget")
    assert not of_kind(docs, "ServiceMonitor")
    assert not of_kind(docs, "PrometheusRule")
    assert [c["metadata"]["name"] for c in of_kind(docs, "ConfigMap")] == [
        "reflexdb-reflexdb-exporter"]
    args = argv(docs, "reflexdb-reflexdb-exporter-5d8f9-x2x7q")
    assert not [a for a in args if "shard" in a]
    assert container(docs)["image"] == f"reflexdb-exporter:{__version__}"


@pytest.mark.parametrize("shards", range(1, 5))
def test_shards_follow_the_pod_ordinal(render: Callable[..., list[Doc]], shards: int) -> None:
    """For 1 to 4 shards: replicas and --total-shards agree, pod i runs --shard=i, and a PDB
    (one pod down at a time) comes with more than one shard."""
    docs = render({"shards": shards, "token": "t"})
    kind = "StatefulSet" if shards > 1 else "Deployment"
    controller = one(docs, kind)
    assert controller["spec"]["replicas"] == shards
    name = controller["metadata"]["name"]
    if shards == 1:
        assert not of_kind(docs, "PodDisruptionBudget")
        return
    headless = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [controller["spec"]["serviceName"]]
    for ordinal in range(shards):
        args = argv(docs, f"{name}-{ordinal}")
        assert args[0] == "reflexdb-exporter"
        assert args.count(f"--shard={ordinal}") == 1, args
        assert args.count(f"--total-shards={shards}") == 1, args
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == controller["spec"]["selector"]


def test_extra_args_reach_the_exporter_as_separate_words(
        render: Callable[..., list[Doc]]) -> None:
    """extraArgs with spaces and shell characters reach the exporter unchanged, sharded or not."""
    odd = ["--log.format=json", "--web.telemetry-path=/m etrics", "--x=$(id);`id`"]
    for shards in (1, 3):
        docs = render({"shards": shards, "extraArgs": odd})
        args = argv(docs, f"reflexdb-reflexdb-exporter-{shards - 1}")
        assert args[args.index(odd[0]):][:len(odd)] == odd, args


def test_existing_secret_is_used_and_none_is_created(render: Callable[..., list[Doc]]) -> None:
    """With existingSecret, no Secret is rendered and the pods read the named one's key."""
    docs = render(None, CHART / "ci" / "existing-secret-values.yaml")
    assert not of_kind(docs, "Secret")
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == "reflexdb-api"
    config = parse_config(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert str(config.api.token_file) == "/run/secrets/reflexdb/api-token"


def test_token_goes_into_a_secret_mounted_as_the_config_token_file(
        render: Callable[..., list[Doc]]) -> None:
    """The token is in the chart's Secret only (not in the ConfigMap), mounted without
    subPath as the directory of the config's api.token_file."""
    docs = render({"token": "tok-in-values", "config": {"connections": [{"id": CONNECTION}]}})
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["token"]) == b"tok-in-values"
    config_map = one(docs, "ConfigMap")
    assert "tok-in-values" not in json.dumps(config_map)
    config = parse_config(config_map["data"]["config.yaml"])
    assert config.api.token_file is not None
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert "subPath" not in mounts["api-token"], "a subPath mount never sees a rotated token"
    assert mounts["api-token"]["mountPath"] == str(config.api.token_file.parent)
    assert config.api.token_file.name in secret["data"]
    args = argv(docs, "pod")
    assert f"--config.file={mounts['config']['mountPath']}/config.yaml" in args
    assert all(m.get("readOnly") is True for m in mounts.values())


def test_schema_refuses_wrong_types_and_unknown_keys(helm: Path) -> None:
    """values.schema.json refuses ``shards: two``, an unknown top-level key and a token in
    config, naming each."""
    for flag, named in (("shards=two", "shards"), ("shard=2", "shard"),
                        ("config.api.token=abc", "api"), ("shards=0", "shards"),
                        ("serviceMonitor.interval=often", "interval")):
        done = run_helm(helm, "template", "r", str(CHART), "--set", flag)
        assert done.returncode != 0, flag
        assert named in done.stderr, (flag, done.stderr)
        assert "values don't meet the specifications of the schema" in done.stderr


def test_config_change_rolls_the_pods(render: Callable[..., list[Doc]]) -> None:
    """A change of config or webConfig changes the pod template's checksum annotations; the
    same values give the same ones; rollOnConfigChange=false leaves them out."""
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        template = workload(render(values))["spec"]["template"]
        return dict(template["metadata"].get("annotations", {}))

    base = {"config": {"poll_interval": "60s", "connections": [{"id": CONNECTION}]}}
    first = annotations(base)
    assert first == annotations(base)
    changed = annotations({"config": {**base["config"], "poll_interval": "30s"}})
    assert changed["checksum/config"] != first["checksum/config"]
    assert changed["checksum/web-config"] == first["checksum/web-config"]
    web = annotations({**base, "webConfig": {"basic_auth_users": {"u": "$2b$10$x"}}})
    assert web["checksum/web-config"] != first["checksum/web-config"]
    assert "checksum/config" not in annotations({**base, "rollOnConfigChange": False})


def test_every_pod_is_non_root_and_read_only(render: Callable[..., list[Doc]]) -> None:
    """Pods run as UID 10001, non-root, read-only root, no escalation, no capabilities,
    RuntimeDefault seccomp and no service-account token, in every combination."""
    for _, values, files in COMBINATIONS:
        docs = render(values, *files)
        pod = workload(docs)["spec"]["template"]["spec"]
        effective = {**pod["securityContext"], **container(docs)["securityContext"]}
        assert effective["runAsNonRoot"] is True
        assert effective["runAsUser"] == UID
        assert effective["readOnlyRootFilesystem"] is True
        assert effective["allowPrivilegeEscalation"] is False
        assert effective["capabilities"] == {"drop": ["ALL"]}
        assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not effective.get("privileged")
        assert pod["automountServiceAccountToken"] is False


def test_probes_follow_the_web_config(render: Callable[..., list[Doc]]) -> None:
    """Probes GET /-/healthy and /-/ready over HTTP, over HTTPS with TLS, and become TCP
    checks with basic auth (every path needs credentials)."""
    def probes(values: dict[str, Any] | None, *files: Path) -> tuple[Doc, Doc]:
        spec = container(render(values, *files))
        return spec["livenessProbe"], spec["readinessProbe"]

    live, ready = probes(None)
    assert live["httpGet"] == {"path": "/-/healthy", "port": "metrics", "scheme": "HTTP"}
    assert ready["httpGet"] == {"path": "/-/ready", "port": "metrics", "scheme": "HTTP"}
    tls = {"webConfig": {"tls_server_config": {"cert_file": "c", "key_file": "k"}}}
    live, ready = probes(tls)
    assert live["httpGet"]["scheme"] == ready["httpGet"]["scheme"] == "HTTPS"
    live, ready = probes(None, CHART / "ci" / "web-config-values.yaml")
    assert live["tcpSocket"] == ready["tcpSocket"] == {"port": "metrics"}
    assert "httpGet" not in live
    assert "httpGet" not in ready


def test_web_config_is_a_mounted_secret_the_exporter_accepts(
        render: Callable[..., list[Doc]]) -> None:
    """webConfig becomes a Secret mounted where --web.config.file points, and the exporter's
    own parser accepts it."""
    docs = render(None, CHART / "ci" / "web-config-values.yaml")
    secret = next(s for s in of_kind(docs, "Secret") if "web.yml" in s["data"])
    web = parse_web_config(base64.b64decode(secret["data"]["web.yml"]).decode())
    assert set(web.basic_auth_users) == {"prometheus"}
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert f"--web.config.file={mounts['web-config']}/web.yml" in argv(docs, "pod")
    assert mounts["tls"] == "/etc/reflexdb-tls"


def test_service_monitor_scrapes_each_pod_once_as_the_alerts_job(
        render: Callable[..., list[Doc]]) -> None:
    """The ServiceMonitor selects exactly one Service, by its metrics port, in the release's
    namespace, as job="reflexdb" (the job prometheus/alerts.yml selects)."""
    docs = render({"shards": 3}, CHART / "ci" / "operator-values.yaml")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in of_kind(docs, "Service")
                if wanted.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1, "a second selected Service would scrape every pod twice"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    endpoint, = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "25s")
    job = selected[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == "reflexdb"
    pods = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert selected[0]["spec"]["selector"].items() <= pods.items()


def test_prometheus_rule_holds_every_rules_file(render: Callable[..., list[Doc]],
                                                tmp_path: Path) -> None:
    """The PrometheusRule's groups are exactly the groups of every rules file the project
    ships, and promtool accepts them."""
    docs = render(None, CHART / "ci" / "operator-values.yaml")
    rule = one(docs, "PrometheusRule")
    expected = []
    for path in rules_files():
        expected += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    assert expected
    assert rule["spec"]["groups"] == expected
    rendered = tmp_path / "rendered-rules.yml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    done = subprocess.run(["promtool", "check", "rules", str(rendered)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_are_config_maps_for_the_grafana_sidecar(
        render: Callable[..., list[Doc]]) -> None:
    """Every dashboard of grafana/dashboards/ is in a ConfigMap, byte for byte, with the
    sidecar's label and the annotations asked for."""
    docs = render(None, CHART / "ci" / "operator-values.yaml")
    found = {}
    for config_map in of_kind(docs, "ConfigMap"):
        if config_map["metadata"]["labels"].get("grafana_dashboard") == "1":
            assert config_map["metadata"]["annotations"] == {"grafana_folder": "ReflexDB"}
            found.update(config_map["data"])
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    assert set(found) == {path.name for path in dashboards}
    for path in dashboards:
        assert found[path.name] == path.read_text(encoding="utf-8").rstrip("\n")
        json.loads(found[path.name])


def test_chart_files_are_links_to_the_one_source() -> None:
    """The chart's rules and dashboards are relative symlinks to prometheus/ and
    grafana/dashboards/, one for every rules file, so there is one copy of each."""
    linked = CHART / "files" / "dashboards"
    assert linked.is_symlink()
    assert not os.readlink(linked).startswith("/")
    assert linked.resolve() == (ROOT / "grafana" / "dashboards").resolve()
    rules = sorted((CHART / "files" / "rules").iterdir())
    assert [p.name for p in rules] == [p.name for p in rules_files()]
    for link in rules:
        assert link.is_symlink()
        assert not os.readlink(link).startswith("/")
        assert link.resolve() == (ROOT / "prometheus" / link.name).resolve()


def _undocumented(node: yaml.MappingNode, lines: list[str], path: str = "") -> list[str]:
    """Keys with no comment on the line above; a commented key documents its whole value,
    an uncommented map must have every key below it documented."""
    missing = []
    for key, value in node.value:
        above = lines[key.start_mark.line - 1].strip() if key.start_mark.line else ""
        name = f"{path}.{key.value}" if path else key.value
        if above.startswith("#"):
            continue
        if isinstance(value, yaml.MappingNode) and value.value:
            missing += _undocumented(value, lines, name)
        else:
            missing.append(name)
    return missing


def test_values_are_documented_key_by_key() -> None:
    """Every value in values.yaml has a comment just above it, and the schema knows every
    top-level key and refuses others."""
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    assert _undocumented(root, text.splitlines()) == []
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert set(yaml.safe_load(text)) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


@pytest.mark.e2e
def test_rendered_shards_run_and_split_the_fleet(render: Callable[..., list[Doc]],
                                                 tmp_path: Path, token: str) -> None:
    """Two pods of a rendered 2-shard StatefulSet, run as rendered (their shell, args, config
    file and token file; only paths under a temporary root and a loopback port differ),
    export disjoint halves of the simulator's connections."""
    sim = Simulator(tmp_path, token, connections=6, databases=2)
    pods: list[Process] = []
    try:
        connections = [{"id": cid} for cid in sim.connection_ids]
        docs = render({"shards": 2, "token": token, "config": {
            "api": {"url": sim.config["api"]["url"], "timeout": "2s"},
            "poll_interval": "1s", "connections": connections}})
        for ordinal, url in enumerate(_start_pods(docs, tmp_path, pods)):
            mine = owned([c["id"].lower() for c in connections], ordinal, 2)

            def exported(url: str = url) -> set[str]:
                scrape = parse_exposition(httpx.get(f"{url}/metrics", timeout=5).text)
                return {labels["connection_id"] for labels, up in
                        scrape.series("reflexdb_connection_up") if up == 1}

            # Its first polls are spread over a few seconds: wait for all of them, then
            # check that nothing else is exported.
            wait_until(lambda url=url, mine=mine: exported(url) >= set(mine), 30,
                       f"shard {ordinal}")
            assert exported(url) == set(mine)
    finally:
        for pod in pods:
            pod.stop()
        sim.close()


def _remapped(text: str, remap: dict[str, str]) -> str:
    """``text`` with each mount path replaced by its local folder."""
    for remote, local in remap.items():
        text = text.replace(remote, local)
    return text


def _start_pods(docs: list[Doc], tmp: Path, pods: list[Process]) -> Iterator[str]:
    """Write the ConfigMap and Secret where the pod mounts them (under ``tmp``), start each
    pod's command, and yield its URL."""
    controller = one(docs, "StatefulSet")
    spec = container(docs)
    volumes = {v["name"]: v for v in controller["spec"]["template"]["spec"]["volumes"]}
    files = {"config": one(docs, "ConfigMap")["data"],
             "api-token": {k: base64.b64decode(v).decode()
                           for k, v in one(docs, "Secret")["data"].items()}}
    remap = {}
    for mount in spec["volumeMounts"]:
        assert mount["name"] in volumes
        remap[mount["mountPath"]] = str(tmp / mount["name"])
    for volume, contents in files.items():
        (tmp / volume).mkdir()
        for key, text in contents.items():
            (tmp / volume / key).write_text(_remapped(text, remap), encoding="utf-8")
    env = {e["name"]: e["value"] for e in spec["env"] if "value" in e}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    for ordinal in range(controller["spec"]["replicas"]):
        port = free_port()
        listen = f"--web.listen-address=:{spec['ports'][0]['containerPort']}"
        words = [_remapped(word, remap).replace(listen, f"--web.listen-address=127.0.0.1:{port}")
                 for word in [*spec["command"], *spec["args"]]]
        pod = f"{controller['metadata']['name']}-{ordinal}"
        pods.append(Process(words, tmp / f"{pod}.log", {**env, "POD_NAME": pod}))
        yield f"http://127.0.0.1:{port}"


def test_notes_warn_when_token_or_connections_are_missing(helm: Path, tmp_path: Path) -> None:
    """NOTES.txt warns when there is no token or no connection, and not otherwise."""
    # helm prints NOTES only on install, which needs a cluster; so a copy of the chart has
    # NOTES.txt as a named template, rendered into a YAML string helm template can print.
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy, symlinks=False)
    notes = (copy / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (copy / "templates" / "notes-check.yaml").write_text(
        '{{- define "notes-check" }}' + notes + "{{- end }}\n"
        'text: {{ include "notes-check" . | toJson }}\n', encoding="utf-8")

    def rendered(*flags: str) -> str:
        done = run_helm(helm, "template", "r", str(copy), "--show-only",
                        "templates/notes-check.yaml", *flags)
        assert done.returncode == 0, done.stderr
        return str(yaml.safe_load(done.stdout)["text"])

    bare = rendered()
    assert "WARNING: no API token" in bare
    assert "WARNING: no connections" in bare
    ready = rendered("--set", "token=t", "--set-json",
                     f'config.connections=[{{"id":"{CONNECTION}"}}]')
    assert "WARNING" not in ready
    assert "kubectl -n default port-forward svc/r-reflexdb-exporter 10510" in ready
    assert "exec <pod> -- kill -HUP 1" in ready
    sharded = rendered("--set", "shards=3", "--set", "existingSecret=s")
    assert "3 shards, pods r-reflexdb-exporter-0 to r-reflexdb-exporter-2" in sharded
    assert "WARNING: no API token" not in sharded


def test_probe_job_is_the_example_job_pointed_at_the_release(
        render: Callable[..., list[Doc]], tmp_path: Path) -> None:
    """endpointProbes renders examples/blackbox/prometheus.yml's job (read through a symlink)
    as a plain scrape config that promtool accepts, discovering from this release's Service
    with the statuses asked for and probing through the blackbox_exporter named."""
    link = CHART / "files" / "blackbox" / "prometheus.yml"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "examples" / "blackbox" / "prometheus.yml").resolve()
    docs = render(None, CHART / "ci" / "operator-values.yaml")
    secret = next(s for s in of_kind(docs, "Secret")
                  if s["metadata"]["name"].endswith("-probe-scrape-config"))
    job, = yaml.safe_load(secret["stringData"]["scrape-configs.yaml"])
    example, = yaml.safe_load(link.read_text(encoding="utf-8"))["scrape_configs"]
    sd, = job["http_sd_configs"]
    assert sd["url"] == ("http://reflexdb-reflexdb-exporter.monitoring.svc:10510/sd/databases"
                         "?status=running&status=degraded")
    address = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    assert address == [{"target_label": "__address__",
                        "replacement": "blackbox.monitoring.svc:9115"}]
    assert [r for r in job["relabel_configs"] if r not in address] == [
        r for r in example["relabel_configs"] if r.get("target_label") != "__address__"]
    assert (job["job_name"], job["metrics_path"]) == (example["job_name"], "/probe")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}), encoding="utf-8")
    done = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(s["metadata"]["name"].endswith("-probe-scrape-config")
                   for s in of_kind(render(), "Secret"))
