"""The running exporter: wires store, client, poller and server; reloads and shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exporter import memory, preflight
from exporter.client import ApiClient, tls_verification
from exporter.config import Config, ConfigError, parse_config
from exporter.exchange import Handler, Limits
from exporter.http import ExporterApp
from exporter.layout import FULL, Layout
from exporter.logs import Throttle
from exporter.poller import Poller
from exporter.priority import Gate
from exporter.server import HTTPServer, parse_listen_address, serve
from exporter.sharding import owned
from exporter.store import Store
from exporter.tokens import TokenError, TokenSource
from exporter.webconfig import WebConfig, protect

log = logging.getLogger("exporter")

TRIM_INTERVAL = 10.0  # seconds; a trim of a few hundred MiB of heap takes about a millisecond
# How often changed families are reassembled off the event loop: the output may lag a landed
# poll by this much (plus the assembly, tens of ms at 10,000 databases). Each assembly
# re-checksums every family changed since the last; measured at 10,000 databases, a 0.5 s
# period cost a fifth of the exporter's CPU (py-spy), and checksumming on the scrape's time
# instead left the worst-case gzip p99 at 104 ms. 1 s keeps a change within poll_interval + 2 s.
ASSEMBLY_PERIOD = 1.0  # seconds
# File descriptors never handed to clients: polling's sockets, token and config files, logs.
RESERVED_FDS = 128


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one, as Go programs do; the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class Options:
    """What the command line decides; unlike the config file, it does not change on reload."""

    listen_address: str
    telemetry_path: str = "/metrics"
    config_file: Path | None = None
    web: WebConfig | None = None
    tls: ssl.SSLContext | None = None
    limits: Limits = field(default_factory=Limits)
    enable_lifecycle: bool = False
    shard: int = 0
    total_shards: int = 1
    warn_short_interval: bool = True
    demo: bool = False  # the landing page says so
    layout: Layout = FULL  # the families served (--metric-allowlist, --metric-denylist)


def load_config(path: Path) -> Config:
    """Read and validate the config file; ConfigError names every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([f"--config.file: cannot read {path}: {reason}"]) from None
    return parse_config(text)


def token_sources(config: Config, connection_ids: list[str]) -> dict[str, TokenSource]:
    """A token source per polled connection, shared where connections share a token file.

    Reads every token once, so a missing one fails now rather than at the first poll.
    """
    default = TokenSource(config.api.token_file)
    by_path: dict[Path, TokenSource] = {}
    files = {c.id: c.token_file for c in config.connections}
    sources = {}
    for connection_id in connection_ids:
        path = files[connection_id]
        sources[connection_id] = default if path is None else by_path.setdefault(
            path, TokenSource(path))
    for source in {id(s): s for s in sources.values()}.values():
        source.get()
    return sources


class Runtime:
    """One exporter process: serves continuously, polls under the current config."""

    def __init__(self, options: Options, config: Config,
                 sources: dict[str, TokenSource] | None = None) -> None:
        self.options = options
        self.config = config
        self.store = Store(self._owned(config), config.stale_after, options.layout)
        self.store.set_exporter(replace(self.store.exporter, reload_time=time.time(),
                                        shard=options.shard, total_shards=options.total_shards))
        self._sources = sources
        self._client: ApiClient | None = None
        self._poller: Poller | None = None
        self._server: HTTPServer | None = None
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._gate = Gate()
        self._assembler: asyncio.Task[None] | None = None
        self._loop_errors = Throttle(60.0)

    def _limits(self) -> Limits:
        """The flags' limits, with client connections capped below the open-files limit."""
        limits = self.options.limits
        room = max(1, raise_open_files_limit() - RESERVED_FDS - self.config.api.max_concurrency)
        if room < limits.max_connections:
            log.warning("the open-files limit leaves room for fewer client connections than "
                        "--web.max-connections", extra={"max_connections": room})
            limits = replace(limits, max_connections=room)
        return limits

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own complaints, at most one line a minute each, never one per client."""
        exc = context.get("exception")
        self._loop_errors.log(log, f"event loop: {context.get('message', 'error')}",
                              exc_info=exc if isinstance(exc, BaseException) else False)

    def _owned(self, config: Config) -> list[str]:
        return owned([c.id for c in config.connections], self.options.shard,
                     self.options.total_shards)

    async def start(self) -> int:
        """Bind the listener and start polling; returns the bound port."""
        handler: Handler = ExporterApp(
            self.store, self.options.telemetry_path,
            reload=self.reload if self.options.enable_lifecycle else None,
            refresh=lambda: self.config.poll_interval, demo=self.options.demo)
        context = self.options.tls
        web = self.options.web
        if web is not None:
            handler = protect(handler, web, self._gate)
        host, port = parse_listen_address(self.options.listen_address)
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        self._server = await serve(handler, host, port, ssl_context=context, gate=self._gate,
                                   limits=self._limits())
        self._assembler = asyncio.create_task(
            self.store.assemble_in_background(ASSEMBLY_PERIOD, self._gate))
        bound = int(self._server.sockets[0].getsockname()[1])
        self._apply(self.config, self._sources or token_sources(
            self.config, self._owned(self.config)))
        log.info("listening", extra={
            "address": self.options.listen_address, "port": bound, "tls": context is not None,
            "basic_auth": bool(web and web.basic_auth_users),
            "telemetry_path": self.options.telemetry_path,
            "connections": len(self.store.states), "shard": self.options.shard,
            "total_shards": self.options.total_shards,
            "poll_interval_seconds": self.config.poll_interval})
        return bound

    def _apply(self, config: Config, sources: dict[str, TokenSource]) -> None:
        """Poll under ``config``: connections whose settings did not change keep their
        schedule, state and pooled API connections; the rest start or stop."""
        for warning in preflight.warnings(config):
            if self.options.warn_short_interval or not warning.startswith("poll_interval"):
                log.warning(warning)
        same_api = self._poller is not None and config.api == self.config.api
        self.config = config
        self.store.stale_after = config.stale_after
        self.store.set_connections(sources)
        if same_api and self._poller is not None:
            self._poller.update(sources, config.poll_interval)
            return
        api = config.api
        self._client = ApiClient(api.url, api.timeout, api.max_concurrency, retries=api.retries,
                                 max_response_bytes=api.max_response_size,
                                 verify=tls_verification(api.ca_file, api.insecure_skip_verify))
        self._poller = Poller(self.store, self._client, sources, config.poll_interval,
                              api.max_concurrency, gate=self._gate,
                              requests_per_second=api.requests_per_second)
        self._poller.start()

    async def _stop_polling(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
        if self._client is not None:
            await self._client.close()

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a bad one is refused and the old config keeps running."""
        async with self._reload_lock:
            try:
                if self.options.config_file is None:
                    raise ConfigError(["--config.file: this exporter runs without a config file"])
                config = load_config(self.options.config_file)
                if problems := preflight.problems(config):
                    raise ConfigError(problems)
                sources = token_sources(config, self._owned(config))
            except (ConfigError, TokenError) as exc:
                problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
                self.store.set_exporter(replace(self.store.exporter, reload_ok=False))
                log.error("config reload refused; the previous config keeps running",
                          extra={"problems": "; ".join(problems)})
                return False, "\n".join(problems)
            if config.api != self.config.api:
                await self._stop_polling()
                self._poller = None
            self._apply(config, sources)
            self.store.set_exporter(replace(self.store.exporter, reload_ok=True,
                                            reload_time=time.time()))
            log.info("config reloaded", extra={"connections": len(self.store.states)})
            return True, "config reloaded"

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        reloads: set[asyncio.Task[tuple[bool, str]]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        trimmer = asyncio.create_task(self._trim_memory())
        await self._stop.wait()
        trimmer.cancel()
        log.info("shutting down")
        await self.close()
        return 0

    async def _trim_memory(self) -> None:
        """Every TRIM_INTERVAL, settle the collector and hand heap pages freed by
        re-rendering back to the system."""
        while not self.store.ready:  # the first, full collection before anyone scrapes much
            await asyncio.sleep(0.5)
        while True:
            async with self._gate.turn():  # not in the middle of a scrape
                memory.settle()
            memory.trim()
            await asyncio.sleep(TRIM_INTERVAL)

    async def close(self) -> None:
        """Stop listening, cancel in-flight polls, close connections."""
        if self._server is not None:
            self._server.close()
        if self._assembler is not None:
            self._assembler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._assembler
        await self._stop_polling()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
