"""API tokens from a file (re-read when it changes) or the environment, registered as secrets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from exporter.logs import SECRETS

log = logging.getLogger(__name__)

TOKEN_ENV = "REFLEXDB_API_TOKEN"  # noqa: S105 - the variable's name, not a token


class TokenError(Exception):
    """No token can be had; the message never contains the token."""


class TokenSource:
    """Hands out the current token, re-reading ``path`` whenever its mtime or size changes."""

    def __init__(self, path: Path | None, environ: dict[str, str] | None = None) -> None:
        self.path = path
        self._environ = os.environ if environ is None else environ
        self._stamp: tuple[int, int] | None = None
        self._token: str | None = None

    @property
    def label(self) -> str:
        """The ``token_source`` label: ``env``, or the token file's path; never the token."""
        return str(self.path) if self.path else "env"

    def describe(self) -> str:
        """Where the token comes from, for logs and the landing page."""
        return f"file {self.path}" if self.path else f"environment variable {TOKEN_ENV}"

    def get(self) -> str:
        """The token to send now; raises TokenError if there is none."""
        if self.path is None:
            token = self._environ.get(TOKEN_ENV, "").strip()
            if not token:
                raise TokenError(f"no API token: set api.token_file or {TOKEN_ENV}")
            SECRETS.add(token)
            return token
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                token = self.path.read_text(encoding="utf-8").strip()
                if not token:
                    raise TokenError(f"token file {self.path} is empty")
                SECRETS.add(token)
                if self._token is not None and token != self._token:
                    log.info("API token file changed; using the new token",
                             extra={"path": str(self.path)})
                self._token, self._stamp = token, stamp
        except OSError as exc:
            if self._token is None:
                raise TokenError(f"cannot read token file {self.path}: {exc.strerror}") from None
            log.warning("cannot re-read token file; keeping the token read before",
                        extra={"path": str(self.path), "err": exc.strerror})
        assert self._token is not None
        return self._token
