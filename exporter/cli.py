"""Command line: Prometheus exporter flags, config check, demo mode and the run loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import platform
import secrets
import signal
import sys
from pathlib import Path

from exporter import __version__, logs
from exporter.client import ApiClient
from exporter.config import RATE_LIMIT_WARNING_SECONDS, Config, ConfigError, parse_config
from exporter.http import ExporterApp
from exporter.poller import Poller
from exporter.server import parse_listen_address, serve
from exporter.simulator import Fleet, SimulatorApp, exporter_config, run_fleet
from exporter.snapshot import Store
from exporter.tokens import TokenError, TokenSource

log = logging.getLogger("exporter")

DEFAULT_PORT = 10510
DEMO_POLL_INTERVAL = "2s"
DEMO_TICK = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reflexdb-exporter",
        description="Prometheus exporter for ReflexDB Cloud: polls the control-plane API in the "
                    "background and serves every database as labelled gauges.")
    parser.add_argument("--config.file", dest="config_file", type=Path,
                        default=Path("config.yaml"), help="YAML config (default: config.yaml)")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the config file and exit")
    parser.add_argument("--web.listen-address", dest="listen_address",
                        default=f":{DEFAULT_PORT}",
                        help=f"[HOST]:PORT to serve on (default :{DEFAULT_PORT})")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                        help="path of the metrics (default /metrics)")
    parser.add_argument("--log.level", dest="log_level", default="info", choices=logs.LEVELS)
    parser.add_argument("--log.format", dest="log_format", default="logfmt",
                        choices=("logfmt", "json"))
    parser.add_argument("--demo", action="store_true",
                        help="run against a built-in simulated fleet; needs no config or token")
    parser.add_argument("--version", action="version",
                        version=f"reflexdb-exporter, version {__version__} "
                                f"(python {platform.python_version()})")
    return parser


def load_config(path: Path) -> Config:
    """Read and validate the config file; ConfigError names every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([f"--config.file: cannot read {path}: {reason}"]) from None
    return parse_config(text)


def token_sources(config: Config) -> dict[str, TokenSource]:
    """A token source per connection, shared where connections share a token file."""
    default = TokenSource(config.api.token_file)
    by_path: dict[Path, TokenSource] = {}
    sources = {}
    for connection in config.connections:
        if connection.token_file is None:
            sources[connection.id] = default
        else:
            sources[connection.id] = by_path.setdefault(
                connection.token_file, TokenSource(connection.token_file))
    for source in {id(s): s for s in sources.values()}.values():
        source.get()  # fail at start, not at the first poll, when a token is missing
    return sources


async def run(config: Config, sources: dict[str, TokenSource], args: argparse.Namespace,
              demo_url_note: bool = False) -> int:
    """Serve and poll until SIGTERM or SIGINT."""
    store = Store((c.id for c in config.connections), config.stale_after)
    client = ApiClient(config.api.url, config.api.timeout, config.api.max_concurrency)
    poller = Poller(store, client, sources, config.poll_interval, config.api.max_concurrency)
    host, port = parse_listen_address(args.listen_address)
    try:
        server = await serve(ExporterApp(store, args.telemetry_path), host, port)
    except OSError as exc:
        log.error("cannot listen", extra={"address": args.listen_address, "err": exc.strerror})
        await client.close()
        return 1
    bound = server.sockets[0].getsockname()[1]
    log.info("listening", extra={"address": args.listen_address, "port": bound,
                                 "telemetry_path": args.telemetry_path,
                                 "connections": len(config.connections),
                                 "poll_interval_seconds": config.poll_interval})
    if demo_url_note:
        print(f"\nReflexDB exporter demo: open http://localhost:{bound}/ "
              f"(metrics at http://localhost:{bound}{args.telemetry_path}); Ctrl-C stops.\n",
              flush=True)
    poller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.close()
    await poller.stop()
    await client.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)
    return 0


async def run_demo(args: argparse.Namespace) -> int:
    """Start a simulated fleet on loopback and export it."""
    token = secrets.token_urlsafe(24)
    logs.SECRETS.add(token)
    fleet = Fleet(connections=4, databases=6, seed=7, token=token)
    sim = await serve(SimulatorApp(fleet), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{sim.sockets[0].getsockname()[1]}/v1"
    ticker = asyncio.create_task(run_fleet(fleet, DEMO_TICK))
    config = Config.model_validate(exporter_config(url, fleet, DEMO_POLL_INTERVAL))
    sources = {c.id: TokenSource(None, {"REFLEXDB_API_TOKEN": token})
               for c in config.connections}
    log.info("demo: simulator started", extra={"url": url})
    try:
        return await run(config, sources, args, demo_url_note=True)
    finally:
        ticker.cancel()
        sim.close()


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run; returns the process exit code."""
    args = _parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        parse_listen_address(args.listen_address)
    except ValueError as exc:
        print(f"--web.listen-address: {exc}", file=sys.stderr)
        return 2
    if args.demo:
        return asyncio.run(run_demo(args))
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"{args.config_file}: invalid config:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.config_check:
        print(f"{args.config_file}: config OK, {len(config.connections)} "
              f"connection(s), polled every {config.poll_interval:g}s")
        return 0
    if config.poll_interval < RATE_LIMIT_WARNING_SECONDS:
        log.warning("poll_interval is short enough to strain a real account's API rate limit",
                    extra={"poll_interval_seconds": config.poll_interval})
    try:
        sources = token_sources(config)
    except TokenError as exc:
        log.error(str(exc))
        return 1
    return asyncio.run(run(config, sources, args))
