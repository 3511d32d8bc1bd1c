"""Where the API token comes from: the environment, or a file re-read when it changes; a token
is registered for redaction and never appears in an error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from exporter.logs import SECRETS
from exporter.tokens import TOKEN_ENV, TokenError, TokenSource


def test_the_environment_variable_is_used_without_a_file() -> None:
    """Without api.token_file the token is $REFLEXDB_API_TOKEN, trimmed, and a secret."""
    source = TokenSource(None, {TOKEN_ENV: "  tok-from-env-1234 \n"})
    assert source.get() == "tok-from-env-1234"
    assert SECRETS.redact("x tok-from-env-1234 y") == "x <redacted> y"
    assert source.label == "env"
    assert source.describe() == "environment variable REFLEXDB_API_TOKEN"


@pytest.mark.parametrize("environ", [{}, {TOKEN_ENV: ""}, {TOKEN_ENV: "  \n"}])
def test_no_token_in_the_environment_is_an_error(environ: dict[str, str]) -> None:
    """A missing or blank variable raises TokenError naming both ways to give a token."""
    with pytest.raises(TokenError) as caught:
        TokenSource(None, environ).get()
    assert str(caught.value) == "no API token: set api.token_file or REFLEXDB_API_TOKEN"


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no mapping given, os.environ is read at each get."""
    monkeypatch.setenv(TOKEN_ENV, "tok-process-env-1")
    source = TokenSource(None)
    assert source.get() == "tok-process-env-1"
    monkeypatch.setenv(TOKEN_ENV, "tok-process-env-2")
    assert source.get() == "tok-process-env-2"


def test_a_token_file_is_read_trimmed_and_labelled(tmp_path: Path) -> None:
    """The file's token, trimmed, wins over the environment; the label is the file's path."""
    path = tmp_path / "token"
    path.write_text("\n tok-file-abcdef \n")
    source = TokenSource(path, {TOKEN_ENV: "tok-env-ignored"})
    assert source.get() == "tok-file-abcdef"
    # Redacted (other tests' secrets, such as a prefix of this one, may be known too).
    assert "tok-file-abcdef" not in SECRETS.redact("tok-file-abcdef")
    assert source.label == str(path)
    assert source.describe() == f"file {path}"


def test_a_changed_file_is_re_read_and_logged(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A new token in the file is used at the next get, with one info line and no token."""
    path = tmp_path / "token"
    path.write_text("tok-first-0001")
    source = TokenSource(path, {})
    with caplog.at_level(logging.INFO, logger="exporter.tokens"):
        assert source.get() == "tok-first-0001"
        assert not caplog.records  # the first read is no change
        path.write_text("tok-second-0002")
        os.utime(path, ns=(1, 1))  # a new stamp even on a coarse clock
        assert source.get() == "tok-second-0002"
    assert [r.getMessage() for r in caplog.records] == [
        "API token file changed; using the new token"]
    assert caplog.records[0].levelno == logging.INFO
    assert caplog.records[0].path == str(path)  # type: ignore[attr-defined]


def test_the_same_token_rewritten_is_not_logged_as_a_change(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rewriting the file with the same token re-reads it but logs nothing."""
    path = tmp_path / "token"
    path.write_text("tok-same-0001")
    source = TokenSource(path, {})
    source.get()
    path.write_text("tok-same-0001\n")
    with caplog.at_level(logging.INFO, logger="exporter.tokens"):
        assert source.get() == "tok-same-0001"
    assert not caplog.records


def test_an_unchanged_file_is_not_read_again(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """While the file's mtime and size stay, get() does not read it."""
    path = tmp_path / "token"
    path.write_text("tok-cached-0001")
    source = TokenSource(path, {})
    assert source.get() == "tok-cached-0001"
    reads: list[Path] = []
    real = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(Path, "read_text", counting)
    assert source.get() == "tok-cached-0001"
    assert reads == []
    path.write_text("tok-cached-0002")  # another size: a new stamp
    assert source.get() == "tok-cached-0002"
    assert reads == [path]


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    """A token file holding only whitespace raises TokenError naming the file."""
    path = tmp_path / "token"
    path.write_text(" \n")
    with pytest.raises(TokenError) as caught:
        TokenSource(path, {TOKEN_ENV: "tok-env"}).get()
    assert str(caught.value) == f"token file {path} is empty"


def test_a_missing_file_is_an_error_at_first(tmp_path: Path) -> None:
    """A token file that cannot be read before any token was had raises TokenError."""
    path = tmp_path / "absent"
    with pytest.raises(TokenError) as caught:
        TokenSource(path, {}).get()
    assert str(caught.value) == f"cannot read token file {path}: No such file or directory"


def test_a_file_that_goes_away_keeps_the_last_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once a token was read, a vanished file keeps it, with a warning naming the file."""
    path = tmp_path / "token"
    path.write_text("tok-kept-0001")
    source = TokenSource(path, {})
    source.get()
    path.unlink()
    with caplog.at_level(logging.INFO, logger="exporter.tokens"):
        assert source.get() == "tok-kept-0001"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "cannot re-read token file; keeping the token read before"
    assert record.path == str(path)  # type: ignore[attr-defined]
    assert record.err == "No such file or directory"  # type: ignore[attr-defined]


def test_an_empty_rewrite_after_a_token_is_still_an_error(tmp_path: Path) -> None:
    """Emptying the file later is refused too, not silently kept."""
    path = tmp_path / "token"
    path.write_text("tok-before-0001")
    source = TokenSource(path, {})
    source.get()
    path.write_text("")
    with pytest.raises(TokenError):
        source.get()
