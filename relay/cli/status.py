"""`relay status [--json] [--watch]`: queue depth and delivery health on the command line.

The report itself (rich tables) is drawn by relay.status; the figures come from relay.monitor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from relay.cli.common import (
    CONFIG_HELP,
    Subcommands,
    add_command,
    load,
    need_redis,
    tool_config_path,
)

if TYPE_CHECKING:
    from rich.console import Console

    from relay.config.model import LoadedConfig
    from relay.snapshot import Snapshot

WATCH_INTERVAL_S = 2.0
REDIS_TIMEOUT_S = 3.0  # a status command should fail fast, not ride out a long outage


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "status", run, "queue depth and delivery health")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    loaded = load(tool_config_path(args.config), unset_ok=True)
    return run_status(loaded, need_redis(loaded), as_json=args.json, watch=args.watch)


def run_status(loaded: LoadedConfig, redis_url: str, as_json: bool, watch: bool) -> int:
    """Print the snapshot (a table, or JSON); with `watch`, refresh until Ctrl-C. 1: no Redis."""
    try:
        return asyncio.run(_run(loaded, redis_url, as_json, watch))
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how --watch ends


async def _run(loaded: LoadedConfig, redis_url: str, as_json: bool, watch: bool) -> int:
    from redis.exceptions import RedisError
    from rich.console import Console

    from relay.monitor import take_snapshot
    from relay.redact import redact_url
    from relay.redis import connect
    from relay.status import render

    redis = connect(redis_url, timeout=REDIS_TIMEOUT_S, retry=False)
    try:
        try:
            snapshot = await take_snapshot(redis, loaded.config)
        except (RedisError, OSError) as exc:
            print(
                f"relay status: cannot reach Redis at {redact_url(redis_url)}: {exc}",
                file=sys.stderr,
            )
            return 1
        if as_json and not watch:
            sys.stdout.write(snapshot.to_json().decode() + "\n")
            return 0
        console = Console()
        if not watch:
            console.print(render(snapshot))
            return 0
        await _watch(redis, loaded, snapshot, console, as_json)
        return 0
    finally:
        await redis.aclose()


async def _watch(
    redis: Any, loaded: LoadedConfig, snapshot: Snapshot, console: Console, as_json: bool
) -> None:
    from redis.exceptions import RedisError
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from relay.monitor import take_snapshot
    from relay.status import render

    if as_json:  # one JSON document per line per refresh: easy to pipe into jq or a log
        while True:
            sys.stdout.write(snapshot.to_json(indent=False).decode() + "\n")
            sys.stdout.flush()
            await asyncio.sleep(WATCH_INTERVAL_S)
            snapshot = await take_snapshot(redis, loaded.config)
    with Live(render(snapshot), console=console, auto_refresh=False, screen=False) as live:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                snapshot = await take_snapshot(redis, loaded.config)
                live.update(render(snapshot), refresh=True)
            except (RedisError, OSError) as exc:
                # Keep watching through a Redis blip; say so instead of showing stale figures.
                live.update(
                    Group(render(snapshot), Text(f"Redis unreachable: {exc}", style="bold red")),
                    refresh=True,
                )
