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
NEW_DEAD_LETTERS_S = 3600.0  # `--check`: dead letters this recent make the relay degraded


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "status", run, "queue depth and delivery health")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    parser.add_argument(
        "--check",
        action="store_true",
        help="health check (SPEC 8): exit 0 healthy, 1 degraded, 2 Redis unreachable",
    )


def run(args: argparse.Namespace) -> int:
    loaded = load(tool_config_path(args.config), unset_ok=True)
    if args.check:
        return asyncio.run(run_check(loaded, need_redis(loaded)))
    return run_status(loaded, need_redis(loaded), as_json=args.json, watch=args.watch)


async def run_check(loaded: LoadedConfig, redis_url: str) -> int:
    """One line per problem on stdout (or `healthy`); 0 healthy, 1 degraded, 2 no Redis."""
    from redis.exceptions import RedisError

    from relay.keys import Keys
    from relay.monitor import take_snapshot
    from relay.redact import redact_url
    from relay.redis import connect

    redis = connect(redis_url, timeout=REDIS_TIMEOUT_S, retry=False)
    try:
        snapshot = await take_snapshot(redis, loaded.config)
        since = snapshot.taken_at - NEW_DEAD_LETTERS_S
        new_dead = int(await redis.zcount(Keys(loaded.config.key_prefix).dlq_index, since, "+inf"))
    except (RedisError, OSError) as exc:
        print(f"unhealthy: cannot reach Redis at {redact_url(redis_url)}: {exc}")
        return 2
    finally:
        await redis.aclose()
    found = problems(snapshot, new_dead)
    for problem in found:
        print(f"degraded: {problem}")
    if not found:
        print("healthy")
    return 1 if found else 0


def problems(snapshot: Snapshot, new_dead_letters: int) -> list[str]:
    """SPEC 8's degraded: a sink failing, paused or gone, new dead letters, a stale worker."""
    from relay.keys import HEARTBEAT_S

    found = list(snapshot.degraded_reasons)
    for sink in snapshot.sinks:
        if not sink.configured:
            continue
        if sink.gone:
            found.append(f"sink {sink.name} is gone (its endpoint answered 404/410)")
        elif sink.paused:
            found.append(f"sink {sink.name} is paused ({sink.held} held)")
        elif not sink.healthy:
            found.append(f"sink {sink.name} is failing: {sink.last_error or '?'}")
    if new_dead_letters:
        found.append(f"{new_dead_letters} new dead letter(s) in the last hour")
    if not snapshot.workers:
        found.append("no worker is running: nothing is being delivered")
    stale = 2 * HEARTBEAT_S  # two beats missed (the heartbeat itself lives WORKER_TTL_S)
    found.extend(
        f"worker {w.id} is stale: no heartbeat for over {stale} s"
        for w in snapshot.workers
        if w.at is not None and snapshot.taken_at - w.at > stale
    )
    return found


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
    if not console.is_terminal:  # piped: each refresh printed whole (Live draws only at exit)
        while True:
            console.print(render(snapshot))
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
