"""A user's first real run: the README's steps, --config.check, and start-up's refusals."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from exporter.client import ApiClient, PollFailure
from exporter.config import parse_config
from exporter.preflight import preflight
from tests.certs import make_certs
from tests.conftest import ROOT, Process, Simulator, free_port, parse_exposition, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE_IDS = ("2489E9AD-2EE2-8E00-8EC9-32D5F69181C0", "0b7d4c2e-9a51-4f7e-8c1e-3f5a6b7c8d90")


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXDB_")}
    if token is not None:
        env["REFLEXDB_API_TOKEN"] = token
    return env


def _run(args: list[str], token: str | None, cwd: Path = ROOT,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=_env(token), check=False)


def _readme_steps() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Running against your account", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the section has a shell block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()
            if line.split("#", 1)[0].strip()]


def test_readme_real_account_steps_work_when_followed_literally(
        tmp_path: Path, simulator: Simulator, token: str) -> None:
    """Exporting the token, copying the example config and editing only the connection IDs
    (and the API URL, here pointing at the simulator) gives a config the check passes and
    an exporter that polls every connection."""
    steps = _readme_steps()
    assert steps[1].startswith("export REFLEXDB_API_TOKEN=")
    assert steps[2] == "cp config.example.yaml config.yaml"
    assert steps[3] == "reflexdb-exporter --config.check"
    assert steps[4] == "reflexdb-exporter --config.file=config.yaml"
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    for example, real in zip(EXAMPLE_IDS, simulator.connection_ids[:2], strict=True):
        text = text.replace(example, real)
    text = text.replace("https://api.reflexdb.cloud/v1", simulator.config["api"]["url"])
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    check = _run(["--config.check"], token, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "config OK, 2 connection(s)" in check.stdout
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file=config.yaml",
         f"--web.listen-address=127.0.0.1:{port}"], cwd=tmp_path,
        env={**_env(token), "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)

    def both_up() -> bool:
        scrape = parse_exposition(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        up = scrape.series("reflexdb_connection_up")
        return len(up) == 2 and all(value == 1 for _, value in up)

    try:
        wait_until(both_up, timeout=20, what="both connections up")
    finally:
        exporter.terminate()
        exporter.wait(10)


def test_config_check_reports_what_start_up_would_refuse(tmp_path: Path) -> None:
    """Unreadable token and CA files and a missing token are named by their key paths, by
    --config.check and by start-up alike, each exiting 1 with no traceback."""
    (tmp_path / "empty").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "api": {"token_file": str(tmp_path / "absent"), "ca_file": str(tmp_path / "no-ca.pem")},
        "poll_interval": "5s",
        "connections": [{"id": EXAMPLE_IDS[0]},
                        {"id": EXAMPLE_IDS[1], "token_file": str(tmp_path / "empty")}]}))
    expected = ["api.token_file: cannot read token file", "connections[1].token_file: token file",
                "api.ca_file: cannot load"]
    check = _run(["--config.check", f"--config.file={config}"], "tok-env")
    start = _run([f"--config.file={config}", f"--web.listen-address=127.0.0.1:{free_port()}"],
                 "tok-env")
    for result in (check, start):
        assert result.returncode == 1
        for line in expected:
            assert line in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert "warning: poll_interval: 5s is short" in check.stderr

    config.write_text(f"connections:\n  - id: {EXAMPLE_IDS[0]}\n")
    for args in (["--config.check"], [f"--web.listen-address=127.0.0.1:{free_port()}"]):
        result = _run([*args, f"--config.file={config}"], None)
        assert result.returncode == 1
        assert "REFLEXDB_API_TOKEN" in result.stderr
        assert "api.token_file: not set" in result.stderr


def test_a_token_file_for_every_connection_needs_no_default_token(tmp_path: Path) -> None:
    """When every connection names its own token file, neither api.token_file nor the
    environment variable is needed."""
    (tmp_path / "tok").write_text("tok-file\n")
    config = parse_config(f"connections:\n  - id: {EXAMPLE_IDS[0]}\n"
                          f"    token_file: {tmp_path / 'tok'}\n")
    assert preflight(config, {}) == ([], [])


def test_duplicate_yaml_keys_are_errors_by_path(tmp_path: Path) -> None:
    """A key given twice (which YAML would silently resolve to the last) is an error."""
    config = tmp_path / "config.yaml"
    config.write_text(f"poll_interval: 30s\nconnections:\n  - id: {EXAMPLE_IDS[0]}\n"
                      f"poll_interval: 60s\nconnections:\n  - id: {EXAMPLE_IDS[1]}\n")
    result = _run(["--config.check", f"--config.file={config}"], "tok-env")
    assert result.returncode == 1
    assert "poll_interval: duplicate key" in result.stderr
    assert "connections: duplicate key" in result.stderr


@pytest.mark.parametrize("path", ["metrics", "/", "/-/healthy"])
def test_telemetry_path_must_be_an_absolute_free_path(path: str) -> None:
    """A telemetry path without a leading slash, or one the exporter serves itself, is
    refused before anything starts."""
    result = _run(["--config.check", f"--web.telemetry-path={path}"], "tok-env")
    assert result.returncode == 1
    assert "--web.telemetry-path" in result.stderr


def test_listen_address_in_use_is_one_line(tmp_path: Path) -> None:
    """A port already taken ends with exit 1 and one log line naming the flag and address."""
    (tmp_path / "config.yaml").write_text(f"connections:\n  - id: {EXAMPLE_IDS[0]}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _run([f"--config.file={tmp_path / 'config.yaml'}",
                       f"--web.listen-address={address}"], "tok-env")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"--web.listen-address={address}" in lines[0]
    assert "address already in use" in lines[0]


def test_make_demo_listens_on_loopback_and_takes_args(tmp_path: Path) -> None:
    """``make demo ARGS=...`` runs the demo on the address given; without it, 127.0.0.1."""
    make = shutil.which("make")
    assert make
    port = free_port()
    demo = Process([make, "-s", "demo", f"ARGS=--web.listen-address=127.0.0.1:{port}"],
                   tmp_path / "demo.log", _env(None))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200,
                   timeout=60, what="the demo")
        assert "ReflexDB Exporter" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        demo.stop()
    defaults = _run(["--demo", "--help"], None)
    assert "127.0.0.1:10510 with --demo" in defaults.stdout


def test_connect_errors_say_what_failed(tmp_path: Path, token: str) -> None:
    """A refused connection, a name that does not resolve and an untrusted certificate each
    get a detail naming the failure and the host."""
    certs = make_certs(tmp_path / "pki")
    (tmp_path / "sim").mkdir()
    sim = Simulator(tmp_path / "sim", token, extra_args=[
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    cases = [(f"http://127.0.0.1:{refused_port}/v1", "refused the connection"),
             ("http://no-such-host.invalid/v1", "cannot resolve no-such-host.invalid"),
             (sim.config["api"]["url"], "TLS verification of 127.0.0.1")]
    try:
        for url, expected in cases:
            started = time.monotonic()
            with pytest.raises(PollFailure) as caught:
                asyncio.run(_poll_once(url, sim.connection_ids[0], token))
            assert caught.value.reason == "connect_error"
            assert expected in caught.value.detail, url
            assert time.monotonic() - started < 10
    finally:
        sim.close()


async def _poll_once(url: str, connection_id: str, token: str) -> None:
    client = ApiClient(url, 5, 1, retries=0)
    try:
        await client.get_connection(connection_id, token)
    finally:
        await client.close()


def test_license_is_apache_2() -> None:
    """The repository carries the Apache-2.0 licence pyproject.toml names."""
    assert "Apache License\n                           Version 2.0" in (
        ROOT / "LICENSE").read_text(encoding="utf-8")
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
