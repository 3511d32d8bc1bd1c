"""``--web.config.file`` in Prometheus exporter-toolkit's format: TLS and basic auth."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import ssl
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from exporter.config import parse_yaml
from exporter.exchange import Handler, Request, Response
from exporter.priority import Gate

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type values Python's ssl module can honour.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
REALM = 'Basic realm="reflexdb-exporter", charset="UTF-8"'
# Successful logins are remembered so a scrape does not pay bcrypt's cost every time.
AUTH_CACHE_SIZE = 256
BCRYPT_MAX_PASSWORD = 72  # bytes; bcrypt ignores or refuses the rest
# Checks queued behind the one running; past this a request gets 503 at once instead of
# waiting (with a cost-10 hash, 32 checks are about 2 s).
MAX_WAITING_CHECKS = 32
BCRYPT_NICE = 10


def _bcrypt_hash(value: str) -> str:
    if not value.startswith(("$2a$", "$2b$", "$2y$")) or len(value) != 60:
        raise ValueError("not a bcrypt hash")
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    """The ``tls_server_config`` block."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven",
                              "RequireAndVerifyClientCert"] | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"


class HTTPServerConfig(_Strict):
    """The ``http_server_config`` block; only extra response headers apply here."""

    headers: dict[str, str] = Field(default_factory=dict)
    http2: bool = True  # accepted for compatibility; this server speaks HTTP/1.1


class WebConfig(_Strict):
    """The whole web configuration file."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)


def parse_web_config(text: str) -> WebConfig:
    """Validate web config text; ConfigError names every bad key by its path."""
    return parse_yaml(text, WebConfig)


def server_ssl_context(tls: TLSServerConfig, base: Path) -> ssl.SSLContext:
    """An SSL context for serving, with client certificates checked as configured.

    Relative paths are taken from ``base``, the web config file's directory, as the
    exporter-toolkit does.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    context.load_cert_chain(str(base / tls.cert_file), str(base / tls.key_file))
    auth = tls.client_auth_type or (
        "RequireAndVerifyClientCert" if tls.client_ca_file else "NoClientCert")
    context.verify_mode = CLIENT_AUTH[auth]
    if tls.client_ca_file:
        context.load_verify_locations(cafile=str(base / tls.client_ca_file))
    return context


def _yield_to_serving() -> None:
    """Lower the bcrypt thread's priority (Linux schedules threads apart), so checks use
    spare CPU and a flood of them does not slow the event loop's answers."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_NICE)


# One worker: exporter-toolkit's one check at a time, on a core the answers do not need.
_BCRYPT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt",
                             initializer=_yield_to_serving)


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes, as exporter-toolkit does.

    One bcrypt check runs at a time, in a low-priority worker thread, so a flood of wrong
    passwords takes spare CPU and never the event loop; scrapers whose login succeeded before
    skip bcrypt.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # Unknown users are checked against a hash as costly as the costliest configured one,
        # so timing does not tell which users exist.
        cost = max((int(h[4:6]) for h in self._users.values()), default=10)
        self._decoy = bcrypt.hashpw(b"unknown user", bcrypt.gensalt(cost))
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._waiting = 0

    async def check(self, header: str | None) -> bool | None:
        """Whether the header carries a known user's right password; None when too many
        checks are already waiting for their turn."""
        credentials = _decode(header)
        if credentials is None:
            return False
        user, password = credentials
        if len(password) > BCRYPT_MAX_PASSWORD:
            return False  # bcrypt would refuse it; no configured password can be this long
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        if hashed is not None and key in self._cache:
            self._cache.move_to_end(key)
            return True
        if self._waiting >= MAX_WAITING_CHECKS:
            return None
        self._waiting += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                _BCRYPT, bcrypt.checkpw, password, hashed or self._decoy)
        finally:
            self._waiting -= 1
        if ok and hashed is not None:
            self._cache[key] = None
            while len(self._cache) > AUTH_CACHE_SIZE:
                self._cache.popitem(last=False)
            return True
        return False


def _decode(header: str | None) -> tuple[str, bytes] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        return (user.decode(), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def protect(handler: Handler, web: WebConfig, gate: Gate | None = None) -> Handler:
    """Wrap a handler with basic auth and the configured extra headers.

    A request waiting for its bcrypt check steps aside from scrape priority (``gate``): a
    flood of logins must not hold polls back.
    """
    auth = BasicAuth(web.basic_auth_users) if web.basic_auth_users else None
    extra = list(web.http_server_config.headers.items())
    aside = gate.aside if gate is not None else contextlib.nullcontext

    async def guarded(request: Request) -> Response:
        allowed: bool | None = True
        if auth is not None:
            with aside():
                allowed = await auth.check(request.headers.get("authorization"))
        if allowed is None:
            response = Response(503, b"Too many logins being checked; try again.\n",
                                headers=[("Retry-After", "1")])
        elif not allowed:
            response = Response(401, b"Unauthorized\n", headers=[("WWW-Authenticate", REALM)])
        else:
            response = await handler(request)
        response.headers.extend(extra)
        return response

    return guarded

