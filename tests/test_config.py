"""Config validation: every bad key named by its path, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config, parse_duration
from tests.conftest import ROOT

GOOD_ID = "2489E9AD-2EE2-8E00-8EC9-32D5F69181C0"


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), (" 2 s ", 2),
    (45, 45), (0.25, 0.25), ("10", 10),
])
def test_durations_parse(text: object, seconds: float) -> None:
    """Durations accept ms, s, m, h suffixes and plain numbers of seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "5d", "-1s", "0", 0, True, None, "1e400", [1]])
def test_bad_durations_are_refused(text: object) -> None:
    """Anything but a positive duration is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_minimal_config_gets_defaults() -> None:
    """Only connections are required; IDs become lowercase; defaults match the README."""
    config = parse_config(f"connections:\n  - id: {GOOD_ID}\n")
    assert config.connections[0].id == GOOD_ID.lower()
    assert config.api.url == "https://api.reflexdb.cloud/v1"
    assert config.api.timeout == 10
    assert config.api.max_concurrency == 8
    assert config.poll_interval == 60
    assert config.stale_after == 300


def test_every_problem_is_named_by_path() -> None:
    """All problems are reported together, each as path: message, values never echoed."""
    text = f"""
bogus_key: 1
api:
  url: ftp://nope
  timeout: soon
  token: tok-very-secret
poll_interval: 0
connections:
  - id: {GOOD_ID}
  - id: {GOOD_ID.lower()}
  - id: not-a-uuid
  - id: 0b7d4c2e-9a51-4f7e-8c1e-3f5a6b7c8d90
    extra: yes
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    problems = caught.value.problems
    assert "bogus_key: unknown key" in problems
    assert "api.token: unknown key" in problems
    assert "connections[2].id: not a UUID" in problems
    assert "connections[3].extra: unknown key" in problems
    assert any(p.startswith("api.url: ") for p in problems)
    assert any(p.startswith("api.timeout: ") for p in problems)
    assert any(p.startswith("poll_interval: ") for p in problems)
    assert "tok-very-secret" not in str(caught.value)


def test_duplicate_connection_is_named() -> None:
    """The same connection twice, in any case, names the second by its index."""
    with pytest.raises(ConfigError) as caught:
        parse_config(f"connections:\n  - id: {GOOD_ID}\n  - id: {GOOD_ID.lower()}\n")
    assert caught.value.problems == ["connections[1].id: duplicate of connections[0]"]


@pytest.mark.parametrize(("text", "problem"), [
    ("connections: []\n", "connections: at least one connection is required"),
    ("{}\n", "connections: required key is missing"),
    ("- a list\n", "(top level): expected a mapping of keys"),
    ("connections: [\n", "line 2, column 1: "),
])
def test_structural_problems(text: str, problem: str) -> None:
    """Empty, missing, non-mapping and unparsable configs each get one clear line."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems[0].startswith(problem)


def _check(path: Path, token: str | None = "tok-check",  # noqa: S107 - a throwaway test token
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXDB_")}
    if token is not None:
        env["REFLEXDB_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False, env=env)


def test_config_check_flag_reports_and_exits(tmp_path: Path) -> None:
    """--config.check exits 0 on a good file and 1 listing every bad key, with no traceback."""
    good = tmp_path / "good.yaml"
    good.write_text(f"connections:\n  - id: {GOOD_ID}\npoll_interval: 500ms\n")
    result = _check(good)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_key: 1\nconnections:\n  - id: x\n  - id: y\n  - id: nope\n")
    result = _check(bad)
    assert result.returncode == 1
    assert "connections[2].id: not a UUID" in result.stderr
    assert "bogus_key: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    missing = _check(tmp_path / "absent.yaml")
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_example_config_is_valid_and_complete() -> None:
    """config.example.yaml passes --config.check and mentions every config key."""
    result = _check(ROOT / "config.example.yaml")
    assert result.returncode == 0, result.stderr
    text = (ROOT / "config.example.yaml").read_text()
    from exporter.config import ApiConfig, Config, ConnectionConfig  # noqa: PLC0415
    for model in (ApiConfig, Config, ConnectionConfig):
        for key in model.model_fields:
            assert f"{key}:" in text, key
