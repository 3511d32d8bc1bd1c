"""Config validation: every bad key named by its path, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import (
    ConfigError,
    _path,
    canonical_uuid,
    parse_config,
    parse_duration,
    parse_size,
)
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


@pytest.mark.parametrize(("text", "size"), [
    ("512KiB", 512 * 1024), ("32MiB", 32 * 1024**2), ("1GiB", 1024**3), ("2KB", 2000),
    ("3MB", 3 * 1000**2), ("1GB", 1000**3), ("2048B", 2048), (" 4096 ", 4096), ("1 KiB", 1024),
    (1024, 1024), (4096, 4096),
])
def test_sizes_parse(text: object, size: int) -> None:
    """Sizes accept B, KB, MB, GB, KiB, MiB, GiB and plain numbers of bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "message"), [
    (True, "not a size"), ("big", "not a size (use 512KiB"), ("1TB", "not a size"),
    ("1.5MiB", "not a size"), (1.5, "not a size"), (None, "not a size"),
    (1023, "must be at least 1KiB"), ("1000B", "must be at least 1KiB"),
    ("0", "must be at least 1KiB"),
])
def test_bad_sizes_are_refused(text: object, message: str) -> None:
    """Anything but a size of at least 1 KiB is refused, saying which."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_size(text)


def test_duration_messages_say_which_rule() -> None:
    """A non-duration and a non-positive one get different words."""
    with pytest.raises(ValueError, match=r"^not a duration \(use 500ms"):
        parse_duration("soon")
    with pytest.raises(ValueError, match=r"^not a duration$"):
        parse_duration(False)
    with pytest.raises(ValueError, match=r"^must be a positive duration$"):
        parse_duration("0s")
    with pytest.raises(ValueError, match=r"^must be a positive duration$"):
        parse_duration(float("nan"))
    assert parse_duration("1.25m") == 75
    assert parse_duration("250ms") == 0.25


@pytest.mark.parametrize("text", [GOOD_ID, GOOD_ID.lower(), f" {GOOD_ID} ",
                                  "{" + GOOD_ID + "}", GOOD_ID.replace("-", "")])
def test_connection_ids_become_canonical(text: str) -> None:
    """Any spelling of a UUID becomes lowercase canonical text."""
    assert canonical_uuid(text) == GOOD_ID.lower()


@pytest.mark.parametrize("value", ["nope", "", 5, None, GOOD_ID + "0"])
def test_bad_connection_ids_are_refused(value: object) -> None:
    """Anything else is "not a UUID", without the value."""
    with pytest.raises(ValueError, match=r"^not a UUID$"):
        canonical_uuid(value)


@pytest.mark.parametrize(("loc", "path"), [
    ((), "(top level)"), (("api", "url"), "api.url"), (("connections", 2, "id"),
                                                       "connections[2].id"),
    (("a-b", "c_d"), "a-b.c_d"), (("odd key",), '["odd key"]'),
    (("api", "x.y"), 'api["x.y"]'), (("1abc",), '["1abc"]'), ((0,), "[0]"),
    (("api", "function-after[x]", "url"), "api.url"),
    (("connections", "constrained-str", 1), "connections[1]"),
    (("clé",), '["clé"]'), ((True,), "True"),
])
def test_error_paths_are_written_as_in_the_file(loc: tuple[int | str, ...], path: str) -> None:
    """Locations become dotted keys and [index]; odd keys are quoted as JSON."""
    assert _path(loc) == path


def test_duplicate_keys_are_named_at_any_depth() -> None:
    """A key given twice in one mapping is named by its path, in lists too; merge keys
    (<<) and the same key in different mappings are fine."""
    text = f"""
api:
  url: http://a
  url: http://b
connections:
  - id: {GOOD_ID}
    token_file: /a
    token_file: /b
  - id: {GOOD_ID.lower()}
poll_interval: 1m
poll_interval: 2m
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems == ["api.url: duplicate key",
                                     "connections[0].token_file: duplicate key",
                                     "poll_interval: duplicate key"]
    merged = f"""
base: &base {{id: {GOOD_ID}}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(merged + "connections:\n  - <<: *base\n    <<: *base\n")
    assert caught.value.problems == ["base: unknown key"]
    config = parse_config(f"connections:\n  - id: {GOOD_ID}\n  - id: "
                          "0b7d4c2e-9a51-4f7e-8c1e-3f5a6b7c8d90\n")
    assert len(config.connections) == 2


def test_odd_yaml_keys_are_named_not_crashed_on() -> None:
    """A non-string key, a nested odd key and an empty document each give a clear line."""
    with pytest.raises(ConfigError) as caught:
        parse_config(f"connections:\n  - id: {GOOD_ID}\n1: x\n")
    assert caught.value.problems == ["[1]: Keys should be strings"]
    with pytest.raises(ConfigError) as caught:
        parse_config("")
    assert caught.value.problems == ["connections: required key is missing"]
    with pytest.raises(ConfigError) as caught:
        parse_config("api:\n  url: [unclosed\n")
    problem = caught.value.problems[0]
    assert re.match(r"^line \d+, column \d+: ", problem), problem


def test_config_error_lists_its_problems() -> None:
    """ConfigError keeps the list and reads as one line per problem."""
    error = ConfigError(["a: x", "b: y"])
    assert error.problems == ["a: x", "b: y"]
    assert str(error) == "a: x\nb: y"


def test_values_are_never_echoed_in_problems() -> None:
    """A wrong-typed value is described, not repeated: it may be a secret."""
    secret = "tok-" + "s" * 20
    with pytest.raises(ConfigError) as caught:
        parse_config(f"api:\n  max_concurrency: {secret}\nconnections:\n  - id: {GOOD_ID}\n")
    assert secret not in str(caught.value)
    assert caught.value.problems[0].startswith("api.max_concurrency: ")


def test_model_level_problems_keep_their_own_paths() -> None:
    """Duplicates found by the whole-config check are split into one line each."""
    third = "0b7d4c2e-9a51-4f7e-8c1e-3f5a6b7c8d90"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"connections:\n  - id: {GOOD_ID}\n  - id: {GOOD_ID.lower()}\n"
                     f"  - id: {third}\n  - id: {third.upper()}\n")
    assert caught.value.problems == ["connections[1].id: duplicate of connections[0]",
                                     "connections[3].id: duplicate of connections[2]"]


def test_yaml_syntax_errors_name_the_place_and_the_problem() -> None:
    """A YAML error says where (line, column) and what PyYAML found; one with no place says
    (yaml), and one with no description says invalid YAML."""
    with pytest.raises(ConfigError) as caught:
        parse_config("connections: [\n")
    assert caught.value.problems == ["line 2, column 1: expected the node content, but found "
                                     "'<stream end>'"]
    with pytest.raises(ConfigError) as caught:
        parse_config("a: 1\x07\n")  # a control character: PyYAML's reader names no place
    assert caught.value.problems == ["(yaml): invalid YAML"]


def test_a_connections_value_that_is_no_list_is_not_called_empty() -> None:
    """Only an empty list is "at least one connection is required"."""
    with pytest.raises(ConfigError) as caught:
        parse_config("connections: 5\n")
    assert caught.value.problems == ["connections: Input should be a valid list"]


def test_a_duplicate_under_a_complex_key_is_named_by_its_own_key() -> None:
    """A mapping under a non-string key does not put that key in the path."""
    with pytest.raises(ConfigError) as caught:
        parse_config("? [a]\n: {x: 1, x: 2}\n")
    assert caught.value.problems == ["x: duplicate key"]
