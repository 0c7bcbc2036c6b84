"""What the command modules share: config loading, finding Redis, exit codes, the event loop.

Imports of the relay's own machinery stay inside the functions: `relay --help` loads none of it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig

EXIT_CONFIG = 2
EXIT_UNSAFE_REDIS = 3  # Redis's maxmemory-policy may evict queued webhooks (relay.redis_memory)

CONFIG_HELP = "config file (default: $RELAY_CONFIG, else config/relay.yaml)"

# `relay dev`: its config, and where it keeps the embedded Redis's data and URL.
DEV_CONFIG = "config/relay.dev.yaml"
STATE_DIR = Path(".relay")
URL_FILE = STATE_DIR / "redis.url"  # lets `relay status` / `relay dlq` find the embedded Redis
INGRESS_FILE = STATE_DIR / "ingress.url"  # lets `relay trigger` find the `relay dev` ingress
LOCK_FILE = STATE_DIR / "dev.pid"  # one `relay dev` per .relay/: the running one's pid

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # noqa: SLF001 - what add_subparsers() returns; argparse names no public type
Handler = Callable[[argparse.Namespace], int]


def add_command(
    sub: Subcommands, name: str, handler: Handler, help: str
) -> argparse.ArgumentParser:
    """The subparser of one command; `main` runs `handler` when it is chosen."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=closed_pipe_ok(handler))
    return parser


def closed_pipe_ok(handler: Handler) -> Handler:
    """`relay status --watch --json | head -1`: a reader that goes away ends the command
    quietly (exit 0), with no BrokenPipeError traceback, now or when Python flushes at exit."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            code = handler(args)
            sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)  # what the final flush writes to
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        return code

    return run


def load(path: str | None, *, unset_ok: bool = False) -> LoadedConfig:
    """The validated config, or every error on stderr and exit 2. `unset_ok` for commands
    that only read or steer Redis (SPEC 8): unset `${VAR}`s are no error, since an operator's
    laptop holds no provider or sink secret (such a config must never verify or send)."""
    from relay.config.model import ConfigError, load_config

    try:
        return load_config(path, unset_ok=unset_ok)
    except ConfigError as exc:
        print(f"{exc.path}: invalid configuration ({len(exc.errors)} error(s))", file=sys.stderr)
        for where, message in exc.errors:
            print(f"  {where}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def need_redis(loaded: LoadedConfig) -> str:
    """The configured Redis URL, else a running `relay dev`'s; else exit 2 saying so."""
    if loaded.redis_url:
        return loaded.redis_url
    url = embedded_redis_url()  # a `relay dev` running in this directory
    if not url:
        print(
            "no Redis configured: set REDIS_URL (or redis_url in the config), "
            "or use `relay dev`, which starts one",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)
    return url


def tool_config_path(explicit: str | None) -> str:
    """For status, dlq and trigger: as everywhere, but with no config/relay.yaml yet, the dev
    config (the quick start runs `relay dev` in one terminal and these in another)."""
    from relay.config.model import DEFAULT_PATH

    path = explicit or os.environ.get("RELAY_CONFIG")
    if not path and not Path(DEFAULT_PATH).exists():
        return DEV_CONFIG
    return path or DEFAULT_PATH


def embedded_redis_url() -> str | None:
    """The URL of a running `relay dev`'s embedded Redis, if there is one."""
    try:
        return URL_FILE.read_text().strip() or None
    except OSError:
        return None


def dev_ingress_url() -> str | None:
    """The base URL of the running `relay dev`'s ingress, if one runs in this directory."""
    try:
        return INGRESS_FILE.read_text().strip() or None
    except OSError:
        return None


def fast_event_loop() -> None:
    """Uvloop where it is installed (measured ~10% less CPU per request and per event)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def logs_to_stderr(secrets: Iterable[str]) -> None:
    """The relay's own log lines (warnings and worse only: a replay would log each delivery) as
    JSON on stderr, redacted as everywhere: stdout is the command's answer, `--json` a document."""
    import logging

    import structlog

    from relay import logs

    logs.configure(secrets, "WARNING")
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sys.stderr))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
