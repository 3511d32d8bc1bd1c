"""The ReflexDB API client: one GET per connection, every failure named by a reason."""

from __future__ import annotations

import asyncio
import json

import httpx

from exporter import __version__
from exporter.models import Connection, InvalidResponse, parse_connection

# A connection's answer is a few KiB per database; anything near this is not a real answer.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


class PollFailure(Exception):
    """A failed poll, with a reason from ``metrics.FAILURE_REASONS`` and a token-free detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


class ApiClient:
    """Fetches connections over one pooled ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, timeout: float, max_connections: int,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._http = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,  # a redirect must not carry the bearer token elsewhere
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            headers={"User-Agent": f"reflexdb-exporter/{__version__}",
                     "Accept": "application/json"},
        )

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    async def get_connection(self, connection_id: str, token: str) -> Connection:
        """GET /connections/{id} and parse it, or raise PollFailure."""
        url = f"{self.base_url}/connections/{connection_id}"
        try:
            # httpx times each read separately; this bounds a slowly dripping answer too.
            async with asyncio.timeout(self.timeout):
                status, body = await self._fetch(url, token)
        except (TimeoutError, httpx.TimeoutException):
            raise PollFailure("timeout", f"no complete answer within {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise PollFailure("connect_error", type(exc).__name__) from None
        if status != 200:
            raise PollFailure(_status_reason(status), _error_detail(status, body))
        try:
            return parse_connection(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            raise PollFailure("invalid_response", "answer is not JSON") from None
        except InvalidResponse as exc:
            raise PollFailure("invalid_response", str(exc)) from None

    async def _fetch(self, url: str, token: str) -> tuple[int, bytes]:
        """Status and body, refusing a body over the size cap without reading it all."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self._http.stream("GET", url, headers=headers) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise PollFailure("invalid_response",
                                  f"answer of {declared} bytes is over the size cap")
            chunks, size = [], 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise PollFailure("invalid_response", "answer is over the size cap")
                    chunks.append(chunk)
            except httpx.TimeoutException:
                raise
            except httpx.TransportError:
                raise PollFailure("invalid_response", "answer was cut short") from None
            return response.status_code, b"".join(chunks)
