"""Requests before background work: polls wait their turn while a request is being answered.

Polling and serving share one event loop, and Python runs one of them at a time. A scrape
hands a large body to the transport in slices, and every poll that lands meanwhile (parse,
render, compress: milliseconds each) would run between two slices and stretch the scrape. So
the server marks each request in flight, and background work takes a turn only when none is,
one piece of work per turn so a new request is noticed between two pieces. The wait is
bounded: once requests have kept the server busy for ``patience`` without a break (a stalled
client, scrapes back to back), background work goes ahead beside them until the next break,
so requests can delay polls but never stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

# Long enough to cover a 70 MB scrape on a slow client; short beside any poll interval.
PATIENCE = 1.0


class Gate:
    """Counts requests in flight and hands background work its turns."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._in_flight = 0
        self._busy_since = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        self._turn = asyncio.Lock()

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        return self._in_flight

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Mark a request in flight from when it is read until its answer is written."""
        if not self._in_flight:
            self._busy_since = time.monotonic()
            self._idle.clear()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Within ``serving``: stop counting this request while its client is too slow to
        keep up, so a stalled reader does not hold polls back for the patience every time."""
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()
        try:
            yield
        finally:
            if not self._in_flight:
                self._busy_since = time.monotonic()
                self._idle.clear()
            self._in_flight += 1

    async def idle(self) -> None:
        """Wait until no request is in flight, or until the server has been busy ``patience``."""
        if not self._in_flight:
            return
        remaining = self._busy_since + self.patience - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one piece of background work when no request is in flight, one at a time."""
        async with self._turn:
            await self.idle()
            yield
