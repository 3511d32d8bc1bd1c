"""What start-up needs beyond a valid config: readable token and CA files, and a token at all.

``--config.check``, start-up and reload all ask this, so a config the check passes is a config
the exporter starts with, and every problem is named by its key path.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

from exporter.config import RATE_LIMIT_WARNING_SECONDS, Config
from exporter.tokens import TOKEN_ENV, TokenError, TokenSource


def preflight(config: Config, environ: Mapping[str, str] | None = None,
              ) -> tuple[list[str], list[str]]:
    """Problems that stop start-up, and warnings worth reading, each as ``path: message``."""
    return problems(config, environ), warnings(config)


def problems(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """What start-up would refuse: unreadable token or CA files, or no token at all."""
    env = os.environ if environ is None else environ
    problems = []
    if any(c.token_file is None for c in config.connections):
        if config.api.token_file is not None:
            problems.extend(_token_problem("api.token_file", TokenSource(config.api.token_file)))
        elif not env.get(TOKEN_ENV, "").strip():
            problems.append(f"api.token_file: not set, and neither is the {TOKEN_ENV} "
                            "environment variable; one of them must give the API token")
    for index, connection in enumerate(config.connections):
        if connection.token_file is not None:
            problems.extend(_token_problem(f"connections[{index}].token_file",
                                           TokenSource(connection.token_file)))
    if config.api.ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(config.api.ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or "not a PEM CA bundle"
            problems.append(f"api.ca_file: cannot load {config.api.ca_file}: {reason}")
    return problems


def warnings(config: Config) -> list[str]:
    """Settings that work but that a user should know about."""
    warnings = []
    if config.poll_interval < RATE_LIMIT_WARNING_SECONDS:
        warnings.append(f"poll_interval: {config.poll_interval:g}s is short enough to strain a "
                        f"real account's API rate limit (below {RATE_LIMIT_WARNING_SECONDS:g}s)")
    warnings.extend(_budget_warnings(config))
    if config.api.insecure_skip_verify:
        warnings.append("api.insecure_skip_verify: TLS verification of the API is off; anyone "
                        "on the network path can read the API token")
    return warnings


def _budget_warnings(config: Config) -> list[str]:
    """Tokens whose connections need more polls than ``api.requests_per_second`` allows."""
    rate = config.api.requests_per_second
    if rate is None:
        return []
    by_token: dict[str, list[str]] = {}
    for connection in config.connections:
        source = TokenSource(connection.token_file or config.api.token_file)
        by_token.setdefault(source.label, []).append(connection.id)
    out = []
    for label, ids in by_token.items():
        effective = len(ids) / rate
        if effective > config.poll_interval:
            named = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            out.append(f"api.requests_per_second: {rate:g} per token lets the {len(ids)} "
                       f"connections on token {label} ({named}) be polled every "
                       f"{effective:g}s, not every {config.poll_interval:g}s (poll_interval); "
                       "their polls are spread evenly at that pace")
    return out


def _token_problem(path: str, source: TokenSource) -> list[str]:
    try:
        source.get()
    except TokenError as exc:
        return [f"{path}: {exc}"]
    return []
