"""Command line: Prometheus exporter flags, config check and demo mode."""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import secrets
import ssl
import sys
from pathlib import Path

from exporter import __version__, logs, memory
from exporter.config import Config, ConfigError, parse_duration
from exporter.exchange import Limits
from exporter.fleet import Fleet
from exporter.http import RESERVED_PATHS
from exporter.layout import FULL, Layout
from exporter.preflight import preflight
from exporter.runtime import Options, Runtime, load_config
from exporter.selection import parse_selection
from exporter.server import parse_listen_address, serve
from exporter.simulator import CONTROL_LIMITS, SimulatorApp, exporter_config, run_fleet
from exporter.tokens import TOKEN_ENV, TokenSource
from exporter.webconfig import TLSServerConfig, WebConfig, parse_web_config, server_ssl_context

log = logging.getLogger("exporter")

DEFAULT_PORT = 10510
DEFAULTS = Limits()
TIMEOUT_FLAGS = {
    "read_timeout": "time a client has to speak after connecting (its TLS handshake "
                    "included), and then to send each whole request from its first byte",
    "write_timeout": "an answer that makes no progress this long is abandoned",
    "idle_timeout": "a kept-alive connection with no request this long is closed",
}
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
                        help="validate the config file (and --web.config.file) and exit")
    parser.add_argument("--web.listen-address", dest="listen_address",
                        help=f"[HOST]:PORT to serve on (default :{DEFAULT_PORT}, and "
                             f"127.0.0.1:{DEFAULT_PORT} with --demo)")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                        help="path of the metrics, starting with / (default /metrics)")
    parser.add_argument("--web.config.file", dest="web_config_file", type=Path,
                        help="exporter-toolkit web config: TLS and basic auth")
    parser.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                        help="serve POST/PUT /-/reload (SIGHUP always reloads)")
    parser.add_argument("--web.max-connections", dest="max_connections", type=int,
                        default=DEFAULTS.max_connections,
                        help="client connections at most; at the cap the idlest one is "
                             f"closed (default {DEFAULTS.max_connections})")
    for name, meaning in TIMEOUT_FLAGS.items():
        default = getattr(DEFAULTS, name)
        parser.add_argument(f"--web.{name.replace('_timeout', '')}-timeout", dest=name,
                            type=parse_duration, default=default,
                            help=f"{meaning} (default {default:g}s)")
    parser.add_argument("--metric-allowlist", dest="metric_allowlist", metavar="REGEXES",
                        help="serve only the families whose whole name matches one of these "
                             "comma-separated regular expressions")
    parser.add_argument("--metric-denylist", dest="metric_denylist", metavar="REGEXES",
                        help="serve every family but those whose whole name matches one of "
                             "these (not together with --metric-allowlist)")
    parser.add_argument("--shard", type=int, default=0,
                        help="which share of the connections this replica polls (0-based)")
    parser.add_argument("--total-shards", dest="total_shards", type=int, default=1,
                        help="how many replicas share the connections (default 1)")
    parser.add_argument("--log.level", dest="log_level", default="info", choices=logs.LEVELS)
    parser.add_argument("--log.format", dest="log_format", default="logfmt",
                        choices=("logfmt", "json"))
    parser.add_argument("--demo", action="store_true",
                        help="run against a built-in simulated fleet; needs no config or token")
    parser.add_argument("--version", action="version",
                        version=f"reflexdb-exporter, version {__version__} "
                                f"(python {platform.python_version()})")
    return parser


def _flag_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    try:
        parse_listen_address(args.listen_address)
    except ValueError as exc:
        problems.append(f"--web.listen-address: {exc}")
    if not args.telemetry_path.startswith("/") or args.telemetry_path in RESERVED_PATHS:
        problems.append(f"--web.telemetry-path: {args.telemetry_path!r} must start with / and "
                        f"not be one of {', '.join(RESERVED_PATHS)}")
    if not 0 <= args.shard < args.total_shards:
        problems.append("--shard: must be from 0 to --total-shards minus 1")
    if args.max_connections < 1:
        problems.append("--web.max-connections: must be at least 1")
    try:
        parse_selection(args.metric_allowlist, args.metric_denylist)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _layout(args: argparse.Namespace) -> Layout:
    """The families to serve; a pattern that matches none is worth a warning (a typo)."""
    selection = parse_selection(args.metric_allowlist, args.metric_denylist)
    for pattern in selection.unmatched(FULL.names):
        log.warning("a --metric-allowlist or --metric-denylist pattern matches no family",
                    extra={"pattern": pattern})
    return Layout.of(selection.keeps)


def _fail(title: str, problems: list[str]) -> int:
    print(f"{title}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def _web_config(path: Path | None) -> WebConfig | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"--web.config.file: cannot read {path}: {exc.strerror}"]) from None
    return parse_web_config(text)


def _tls_context(tls: TLSServerConfig, base: Path) -> ssl.SSLContext:
    try:
        return server_ssl_context(tls, base)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([f"tls_server_config: cannot load the certificate or CA: {reason}"]
                          ) from None


async def _serve(runtime: Runtime, demo: bool = False) -> int:
    try:
        port = await runtime.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        log.error(f"cannot listen on --web.listen-address={runtime.options.listen_address}: "
                  f"{reason.lower()}")
        await runtime.close()
        return 1
    except ConfigError as exc:
        await runtime.close()
        return _fail("cannot start", exc.problems)
    if demo:
        print(f"\nReflexDB exporter demo: open http://localhost:{port}/ "
              f"(metrics at http://localhost:{port}{runtime.options.telemetry_path}); "
              "Ctrl-C stops.\n", flush=True)
    return await runtime.run()


async def run_demo(options: Options) -> int:
    """Start a simulated fleet on loopback and export it."""
    token = secrets.token_urlsafe(24)
    logs.SECRETS.add(token)
    fleet = Fleet(connections=4, databases=6, seed=7, token=token)
    sim = await serve(SimulatorApp(fleet), "127.0.0.1", 0, limits=CONTROL_LIMITS)
    url = f"http://127.0.0.1:{sim.sockets[0].getsockname()[1]}/v1"
    ticker = asyncio.create_task(run_fleet(fleet, DEMO_TICK))
    config = Config.model_validate(exporter_config(url, fleet, DEMO_POLL_INTERVAL))
    source = TokenSource(None, {TOKEN_ENV: token})
    log.info("demo: simulator started", extra={"url": url})
    try:
        return await _serve(Runtime(options, config, {c.id: source for c in config.connections}),
                            demo=True)
    finally:
        ticker.cancel()
        sim.close()


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run; returns the process exit code."""
    args = _parser().parse_args(argv)
    memory.one_arena()
    logs.setup(args.log_level, args.log_format)
    if args.listen_address is None:
        # A demo is for the person at this machine; a real exporter is scraped from afar.
        args.listen_address = f"{'127.0.0.1' if args.demo else ''}:{DEFAULT_PORT}"
    problems = _flag_problems(args)
    if problems:
        return _fail("invalid flags", problems)
    try:
        web = _web_config(args.web_config_file)
        tls = None
        if web is not None and web.tls_server_config is not None:
            tls = _tls_context(web.tls_server_config, args.web_config_file.parent)
    except ConfigError as exc:
        return _fail(f"{args.web_config_file}: invalid web config", exc.problems)
    limits = Limits(read_timeout=args.read_timeout, write_timeout=args.write_timeout,
                    idle_timeout=args.idle_timeout, max_connections=args.max_connections)
    options = Options(listen_address=args.listen_address, telemetry_path=args.telemetry_path,
                      config_file=None if args.demo else args.config_file, web=web,
                      tls=tls, limits=limits, enable_lifecycle=args.enable_lifecycle,
                      shard=args.shard, total_shards=args.total_shards,
                      warn_short_interval=not args.demo, demo=args.demo, layout=_layout(args))
    if args.demo:
        return asyncio.run(run_demo(options))
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        return _fail(f"{args.config_file}: invalid config", exc.problems)
    problems, warnings = preflight(config)
    if args.config_check:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if problems:
            return _fail(f"{args.config_file}: config cannot start", problems)
        print(f"{args.config_file}: config OK, {len(config.connections)} "
              f"connection(s), polled every {config.poll_interval:g}s")
        return 0
    if problems:
        return _fail(f"{args.config_file}: config cannot start", problems)
    return asyncio.run(_serve(Runtime(options, config)))
