"""Background polling: each connection on its own jittered schedule, a bounded number at once."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from exporter.budget import Budget
from exporter.client import Answer, ApiClient, PollFailure
from exporter.metrics import DURATION_BUCKETS
from exporter.priority import Gate
from exporter.spec import ApiView
from exporter.store import Store
from exporter.tokens import TokenError, TokenSource

log = logging.getLogger(__name__)

# First polls are spread over this long (or the poll interval if shorter), so the exporter is
# ready within seconds yet a large fleet does not hit the API in one burst.
FIRST_POLL_SPREAD = 5.0
# Each later poll comes up to 5% early so connections drift apart, not together; never late,
# so a change in the API shows within one poll interval (plus the poll and its assembly).
JITTER = 0.05


class Poller:
    """Runs one polling task per connection and records each result in the store."""

    def __init__(self, store: Store, client: ApiClient, tokens: dict[str, TokenSource],
                 interval: float, max_concurrency: int, *, gate: Gate | None = None,
                 requests_per_second: float | None = None) -> None:
        self.store = store
        self.client = client
        self.interval = interval
        self.rate = requests_per_second
        self.burst = max_concurrency
        self.gate = gate or Gate()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.budgets: dict[str, Budget] = {}  # by token source (see TokenSource.label)
        self.tokens: dict[str, TokenSource] = {}
        self._set_tokens(tokens)

    def _set_tokens(self, tokens: dict[str, TokenSource]) -> None:
        """One budget per token source, kept (pauses and cuts included) across reloads."""
        self.tokens = tokens
        users: dict[str, int] = {}
        for source in tokens.values():
            users[source.label] = users.get(source.label, 0) + 1
        # A cut never goes below one request per poll interval for each connection.
        self.budgets = {label: self.budgets.get(label)
                        or Budget(self.rate, self.burst, 0.0, bounds=DURATION_BUCKETS)
                        for label in users}
        for label, count in users.items():
            self.budgets[label].floor = count / self.interval

    def start(self) -> None:
        """Start a task for every connection that has none."""
        for connection_id in self.tokens:
            if connection_id not in self._tasks:
                self._tasks[connection_id] = asyncio.create_task(
                    self._loop(connection_id), name=f"poll {connection_id}")

    def api_views(self) -> tuple[ApiView, ...]:
        """Each token source's traffic and budget, as the metrics read them."""
        return tuple(ApiView(label, tuple(sorted(b.codes.items())), b.cumulative(),
                             b.duration_sum, b.limit, b.paused_until_unix(), b.waited,
                             b.recent_rate())
                     for label, b in sorted(self.budgets.items()))

    def update(self, tokens: dict[str, TokenSource], interval: float) -> None:
        """Poll these connections from now on; those already polled keep their schedule."""
        self.interval = interval
        self._set_tokens(tokens)
        for connection_id in [c for c in self._tasks if c not in tokens]:
            self._tasks.pop(connection_id).cancel()
        self.start()

    async def stop(self) -> None:
        """Cancel every task, in-flight requests included, and wait for them to end."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, connection_id: str) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, min(self.interval, FIRST_POLL_SPREAD)))  # noqa: S311 - jitter, not crypto
        while True:
            state = self.store.states.get(connection_id)
            if state is not None and state.not_before is not None:
                # The API said when to come back (Retry-After); not one request before then.
                await asyncio.sleep(max(0.0, state.not_before - time.time()))
            started = loop.time()
            await self.poll(connection_id)
            jitter = random.uniform(-JITTER, 0) * self.interval  # noqa: S311 - jitter
            await asyncio.sleep(max(0.0, started + self.interval + jitter - loop.time()))

    async def poll(self, connection_id: str) -> None:
        """Poll one connection now and record the outcome; never raises but for cancellation.

        Requests being answered come first (see priority.py): the request waits for a quiet
        moment, and so does the parsing and rendering of its answer.
        """
        await self.gate.idle()
        started = time.monotonic()
        outcome = await self._fetch(connection_id)
        duration = time.monotonic() - started - outcome.waited  # the API's time, not ours
        async with self.gate.turn():
            self.store.api = self.api_views()  # shown with the poll recorded next
            if isinstance(outcome, PollFailure):
                self._failed(connection_id, outcome, duration)
            else:
                self._succeeded(connection_id, outcome, duration)

    async def _fetch(self, connection_id: str) -> Answer | PollFailure:
        try:
            source = self.tokens[connection_id]
            token = source.get()
            state = self.store.states.get(connection_id)
            previous = state.answer_digest if state is not None else None
            return await self.client.get_connection(connection_id, token, previous,
                                                    self.budgets.get(source.label))
        except PollFailure as failure:
            return failure
        except TokenError as exc:
            return PollFailure("unauthorized", str(exc))
        except Exception as exc:  # a bug here must fail this connection only
            log.exception("unexpected error while polling", extra={
                "connection_id": connection_id})
            return PollFailure("invalid_response", type(exc).__name__)

    def _succeeded(self, connection_id: str, answer: Answer, duration: float) -> None:
        state = self.store.states.get(connection_id)
        if state is None:
            return
        was_up = state.up
        if answer.connection is None:
            self.store.unchanged(connection_id, duration, answer.retries)
        else:
            self.store.success(connection_id, answer.connection, duration, answer.retries)
        state.answer_digest = answer.digest
        data = state.data
        assert data is not None
        log.log(logging.DEBUG if was_up else logging.INFO, "poll succeeded", extra={
            "connection_id": connection_id, "databases": len(data.databases),
            "invalid_databases": data.invalid_databases, "retries": answer.retries,
            "changed": answer.connection is not None, "duration_seconds": round(duration, 3)})

    def _failed(self, connection_id: str, failure: PollFailure, duration: float) -> None:
        state = self.store.states.get(connection_id)
        repeated = (state is not None and not state.up
                    and state.last_failure_reason == failure.reason)
        self.store.failure(connection_id, failure.reason, duration, failure.retries)
        if state is not None:
            state.not_before = (None if failure.retry_after is None
                                else time.time() + failure.retry_after)
        log.log(logging.DEBUG if repeated else logging.WARNING, "poll failed", extra={
            "connection_id": connection_id, "reason": failure.reason, "detail": failure.detail,
            "retries": failure.retries, "retry_after_seconds": failure.retry_after})
