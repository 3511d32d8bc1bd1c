"""The Kubernetes manifests: well formed, hardened, wired together, and sharding that adds up."""

from __future__ import annotations

import random
import re
import shlex
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import parse_config
from exporter.sharding import owned, shard_of

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
PORT = 10510
UID = 10001
REGENERATE = "run: python deploy/kubernetes/generate_prometheusrule.py"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every YAML document under deploy/kubernetes, with the file it came from."""
    docs = []
    for path in sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def resources(kind: str) -> list[dict[str, Any]]:
    """Every manifest of one kind."""
    return [doc for _, doc in manifests() if doc.get("kind") == kind]


def only(kind: str) -> dict[str, Any]:
    """The one manifest of a kind."""
    found = resources(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    """The exporter container of the StatefulSet."""
    containers = only("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def shell_script() -> str:
    """The script the container's ``/bin/sh -c`` runs."""
    command = container()["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    assert len(command) == 3
    return str(command[2])


def cpu(quantity: str | int | float) -> float:
    """A CPU quantity (``250m``, ``1``) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(quantity: str | int) -> float:
    """A memory quantity (``256Mi``, ``1Gi``, ``500M``) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(quantity))
    assert match, f"unreadable memory quantity {quantity!r}"
    factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9, None: 1}
    return float(match.group(1)) * factor[match.group(2)]


def test_every_manifest_parses_and_is_named() -> None:
    """Every document parses with yaml.safe_load_all and has apiVersion, kind and metadata.name."""
    docs = manifests()
    assert docs
    for filename, doc in docs:
        assert isinstance(doc, dict), filename
        for key in ("apiVersion", "kind"):
            assert isinstance(doc.get(key), str), f"{filename}: no {key}"
            assert doc[key], f"{filename}: empty {key}"
        name = (doc.get("metadata") or {}).get("name")
        assert isinstance(name, str), f"{filename}: {doc['kind']} has no metadata.name"
        assert name, f"{filename}: {doc['kind']} has an empty metadata.name"
    kinds = Counter(doc["kind"] for _, doc in docs)
    for kind in ("ConfigMap", "Secret", "StatefulSet", "ServiceMonitor", "PrometheusRule"):
        assert kinds[kind] == 1, kind
    assert kinds["Service"] == 2


def test_kustomization_lists_every_manifest_but_the_secret() -> None:
    """kustomization.yaml names every manifest but secret.yaml, whose placeholder must not win."""
    listed = set(only("Kustomization")["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert listed == files


def test_prometheusrule_groups_equal_the_rules_file() -> None:
    """The PrometheusRule's spec.groups are exactly prometheus/alerts.yml's groups."""
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    rule = only("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == rules["groups"], f"prometheusrule.yaml is stale; {REGENERATE}"


def test_the_generator_reproduces_the_committed_file() -> None:
    """generate_prometheusrule.py --check finds the committed file current."""
    result = subprocess.run(
        [sys.executable, str(K8S / "generate_prometheusrule.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr + REGENERATE


def test_security_context_is_non_root_and_read_only() -> None:
    """The container runs as non-root UID 10001, read-only, unprivileged, seccomp RuntimeDefault."""
    pod = only("StatefulSet")["spec"]["template"]["spec"]
    effective = {**pod.get("securityContext", {}), **container().get("securityContext", {})}
    assert effective["runAsNonRoot"] is True
    assert effective["runAsUser"] == UID
    assert effective["readOnlyRootFilesystem"] is True
    assert effective["allowPrivilegeEscalation"] is False
    assert effective["capabilities"]["drop"] == ["ALL"]
    assert not effective["capabilities"].get("add")
    assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not effective.get("privileged")
    assert pod.get("automountServiceAccountToken") is False


def test_probes_ports_and_services() -> None:
    """Liveness and readiness probe /-/healthy and /-/ready on 10510; Services reach that port."""
    exporter = container()
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": PORT}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": PORT}
    ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
    assert ports == {"metrics": PORT}
    statefulset = only("StatefulSet")
    selector = statefulset["spec"]["selector"]["matchLabels"]
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    services = {s["metadata"]["name"]: s for s in resources("Service")}
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert service["spec"]["selector"].items() <= template_labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]


def test_service_monitor_scrapes_each_pod_once_as_the_alerts_job() -> None:
    """The ServiceMonitor selects one Service, by its metrics port, as job="reflexdb"."""
    monitor = only("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in resources("Service")
                if wanted.items() <= s["metadata"].get("labels", {}).items()]
    assert len(selected) == 1, "a second selected Service would scrape every pod twice"
    service = selected[0]
    endpoints = monitor["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    assert endpoints[0].get("path", "/metrics") == "/metrics"
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    alerts = (ROOT / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    jobs = set(re.findall(r'\bjob="([^"]+)"', alerts))
    assert jobs <= {job}, f"alerts select job {jobs}, the ServiceMonitor makes job={job!r}"


def test_shard_flags_follow_the_pod_ordinal() -> None:
    """Pod reflexdb-exporter-<i> runs --shard=<i> --total-shards=<replicas>."""
    statefulset = only("StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    env = {e["name"]: e for e in container()["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    script = shell_script()
    assert script.startswith("exec reflexdb-exporter ")
    echo = script.replace("exec reflexdb-exporter ", "printf '%s\\n' ", 1)
    name = statefulset["metadata"]["name"]
    for ordinal in range(replicas):
        result = subprocess.run(["/bin/sh", "-c", echo], capture_output=True, text=True,
                                timeout=10, check=True, env={"POD_NAME": f"{name}-{ordinal}"})
        args = result.stdout.split()
        assert f"--shard={ordinal}" in args
        assert f"--total-shards={replicas}" in args


def test_config_map_is_a_valid_config_reading_the_mounted_token() -> None:
    """The ConfigMap's config.yaml is valid, is --config.file, and reads the Secret's token."""
    config_text = only("ConfigMap")["data"]["config.yaml"]
    config = parse_config(config_text)
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in only("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    config_file = next(a.split("=", 1)[1] for a in shlex.split(shell_script())
                       if a.startswith("--config.file="))
    config_mount = next(m for m in mounts.values()
                        if volumes[m["name"]].get("configMap", {}).get("name")
                        == only("ConfigMap")["metadata"]["name"])
    assert config_file == f"{config_mount['mountPath']}/config.yaml"
    secret = only("Secret")
    token_mount = next(m for m in mounts.values()
                       if volumes[m["name"]].get("secret", {}).get("secretName")
                       == secret["metadata"]["name"])
    assert "subPath" not in token_mount, "a subPath mount never sees a rotated token"
    assert config.api.token_file is not None
    assert str(config.api.token_file.parent) == token_mount["mountPath"]
    keys = {*secret.get("stringData", {}), *secret.get("data", {})}
    assert config.api.token_file.name in keys
    for mount in mounts.values():
        assert mount.get("readOnly") is True


def test_resources_have_requests_and_limits() -> None:
    """CPU and memory have requests and limits, each request no larger than its limit."""
    limits = container()["resources"]
    for key, unit in (("cpu", cpu), ("memory", memory)):
        assert unit(limits["requests"][key]) <= unit(limits["limits"][key]), key
    assert memory(limits["requests"]["memory"]) >= 64 * 2**20


def uuids(count: int, seed: int) -> list[str]:
    """Reproducible random version-4 UUIDs."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


@pytest.mark.parametrize("total", range(1, 9))
def test_shards_cover_every_connection_exactly_once(total: int) -> None:
    """For 1 to 8 shards, 1,000 random connections each land in one shard, sizes within ±35%."""
    ids = uuids(1000, seed=total)
    shards = [owned(ids, shard, total) for shard in range(total)]
    counts = Counter(cid for shard in shards for cid in shard)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    expected = len(ids) / total
    for shard, members in enumerate(shards):
        assert abs(len(members) - expected) <= 0.35 * expected, (shard, len(members), expected)
        member_set = set(members)
        assert members == [cid for cid in ids if cid in member_set], "config order is kept"


def test_shard_of_ignores_case_and_whitespace() -> None:
    """An ID in upper case or with spaces lands in the same shard as its canonical form."""
    for cid in uuids(50, seed=99):
        for total in (2, 3, 7):
            assert shard_of(f" {cid.upper()} ", total) == shard_of(cid, total)
