"""The ReflexDB API client: one GET per connection, every failure named by a reason."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from exporter import __version__
from exporter.budget import Budget
from exporter.models import Connection, InvalidResponse, read_connection

# A connection's answer is a few KiB per database; anything near this is not a real answer.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Backoff before retry n (1-based) is a random share of BASE * 2^(n-1): "full jitter".
RETRY_BASE_SECONDS = 0.5
# A Retry-After longer than this is taken as this, so one odd header cannot stop polling.
MAX_RETRY_AFTER_SECONDS = 3600.0
RETRIED_REASONS = frozenset({"server_error", "connect_error"})


@dataclass(frozen=True, slots=True)
class Answer:
    """A good answer: the connection (None when byte-identical to the previous answer),
    the body's digest, and the retries it took."""

    connection: Connection | None
    digest: bytes
    retries: int = 0
    waited: float = 0.0  # seconds spent waiting for the token's budget


class PollFailure(Exception):
    """A failed poll, with a reason from ``metrics.FAILURE_REASONS`` and a token-free detail."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.status = status  # the HTTP status, None when no answer came
        self.retries = 0
        self.waited = 0.0


def _status_reason(status: int) -> str:
    """The failure reason for a non-200 HTTP status."""
    named = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}
    if status in named:
        return named[status]
    if status >= 500:
        return "server_error"
    if 400 <= status < 500:
        return "client_error"
    return "invalid_response"


def _error_detail(status: int, body: bytes) -> str:
    """``HTTP 404: not_found: connection not found`` from an ``{error, message}`` body."""
    try:
        payload = json.loads(body[:4096])
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        message = payload.get("message")
        suffix = f": {message[:200]}" if isinstance(message, str) else ""
        return f"HTTP {status}: {payload['error'][:100]}{suffix}"
    return f"HTTP {status}"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it, and so on, exception groups opened up."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def connect_detail(exc: BaseException, host: str) -> str:
    """What failed on the way to the API, naming the host: name resolution, a refusal, TLS."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {host}: {cause.strerror or 'name resolution failed'}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification of {host} failed: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {host} failed: {cause.reason or 'handshake error'}"
        if isinstance(cause, ConnectionRefusedError):
            return f"{host} refused the connection"
        if isinstance(cause, ConnectionResetError):
            return f"{host} reset the connection"
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect to {host}: {cause.strerror}"
    return f"cannot connect to {host}: {type(exc).__name__}"


def tls_verification(ca_file: Path | None, insecure: bool) -> ssl.SSLContext | bool:
    """What httpx should verify the API's certificate against."""
    if insecure:
        return False
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return True


class ApiClient:
    """Fetches connections over one pooled ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, timeout: float, max_connections: int, *,
                 retries: int = 2, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self._host = httpx.URL(self.base_url).netloc.decode("ascii", "replace")
        self.timeout = timeout
        self.retries = retries
        self.max_response_bytes = max_response_bytes
        # Requests in flight at most; a request waiting for its token's budget holds no slot,
        # so a paused token cannot keep the other tokens' connections waiting.
        self._slots = asyncio.Semaphore(max_connections)
        self._http = httpx.AsyncClient(
            timeout=timeout,
            verify=verify,
            follow_redirects=False,  # a redirect must not carry the bearer token elsewhere
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            headers={"User-Agent": f"reflexdb-exporter/{__version__}",
                     "Accept": "application/json"},
        )

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    async def get_connection(self, connection_id: str, token: str,
                             previous: bytes | None = None, budget: Budget | None = None) -> Answer:
        """GET /connections/{id} and parse it, retrying 5xx and connection errors a few times.

        An answer whose digest equals ``previous`` is not parsed again. Raises PollFailure,
        whose ``retries`` says how many retries it took; 401, 403, 404, 429 and bad answers
        are never retried. Every attempt, retries included, waits for ``budget`` first, and
        a 429 pauses or cuts it.
        """
        attempt, waited = 0, 0.0
        while True:
            if budget is not None:
                before = budget.waited
                await budget.acquire()
                waited += budget.waited - before
            sent = asked = time.monotonic()
            try:
                async with self._slots:
                    sent = time.monotonic()
                    waited += sent - asked  # for a slot: the poll's duration is the API's time
                    answer = await self._attempt(connection_id, token, previous)
                if budget is not None:
                    budget.answered("200", time.monotonic() - sent)
                    budget.recover()
                return replace(answer, retries=attempt, waited=waited)
            except PollFailure as failure:
                if budget is not None:
                    code = "error" if failure.status is None else str(failure.status)
                    budget.answered(code, time.monotonic() - sent)
                if budget is not None and failure.status == 429:
                    if failure.retry_after is not None:
                        budget.pause(failure.retry_after)
                    else:
                        budget.cut()
                if (failure.reason not in RETRIED_REASONS or failure.retry_after is not None
                        or attempt >= self.retries):
                    failure.retries, failure.waited = attempt, waited
                    raise
            attempt += 1
            backoff = RETRY_BASE_SECONDS * 2 ** (attempt - 1)
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not crypto

    async def _attempt(self, connection_id: str, token: str, previous: bytes | None) -> Answer:
        url = f"{self.base_url}/connections/{connection_id}"
        try:
            # httpx times each read separately; this bounds a slowly dripping answer too.
            async with asyncio.timeout(self.timeout):
                status, headers, body = await self._fetch(url, token)
        except (TimeoutError, httpx.TimeoutException):
            raise PollFailure("timeout", f"no complete answer within {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise PollFailure("connect_error", connect_detail(exc, self._host)) from None
        if status != 200:
            retry_after = (parse_retry_after(headers.get("retry-after"), time.time())
                           if status in (429, 503) else None)
            raise PollFailure(_status_reason(status), _error_detail(status, body), retry_after,
                              status)
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest == previous:
            return Answer(None, digest)
        try:
            return Answer(read_connection(body), digest)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise PollFailure("invalid_response", "answer is not JSON", status=200) from None
        except InvalidResponse as exc:
            raise PollFailure("invalid_response", str(exc), status=200) from None

    async def _fetch(self, url: str, token: str) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body, refusing a body over the size cap without reading it all."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self._http.stream("GET", url, headers=headers) as response:
            declared = response.headers.get("content-length", "")
            code = response.status_code
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise PollFailure("invalid_response",
                                  f"answer of {declared} bytes is over the size cap", status=code)
            chunks, size = [], 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise PollFailure("invalid_response", "answer is over the size cap",
                                          status=code)
                    chunks.append(chunk)
            except httpx.TimeoutException:
                raise
            except httpx.TransportError:
                raise PollFailure("invalid_response", "answer was cut short",
                                  status=code) from None
            return response.status_code, response.headers, b"".join(chunks)
