"""`relay reconcile [--source S] [--payment ID] [--dry-run] [--json]`: a reconciliation pass
now (SPEC 11).

It asks the provider's status API about every payment the scheduler tracks (open, within
`give_up`), due or not, or only about `--payment ID`; a later stage than the relay has seen is
queued for the workers as a reconciled event, exactly as the workers' own scheduler does
(relay.reconcile). `--dry-run` asks the API and prints what would be emitted, and writes
nothing. It calls the providers, so unlike `relay status` it needs their credentials. Exit 1
when a payment is not tracked or an API call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from relay.cli.common import (
    EXIT_CONFIG,
    Subcommands,
    add_command,
    load,
    logs_to_stderr,
    need_redis,
    tool_config_path,
)
from relay.cli.events import add_config, pack, plural, print_json, print_lines

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig
    from relay.reconcile import Check

EXIT_PROBLEM = 1
REDIS_TIMEOUT_S = 5.0


def add_parser(sub: Subcommands) -> None:
    parser = add_command(
        sub, "reconcile", run, "ask the providers' status APIs about open payments now"
    )
    parser.add_argument("--source", metavar="S", help="only this source")
    parser.add_argument("--payment", metavar="ID", help="only this payment id")
    parser.add_argument(
        "--dry-run", action="store_true", help="ask and show what would be emitted; emit nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    loaded = load(tool_config_path(args.config))  # the providers' credentials are needed
    redis_url = need_redis(loaded)
    logs_to_stderr(loaded.secrets)
    return asyncio.run(_main(loaded, redis_url, args))


async def _main(loaded: LoadedConfig, redis_url: str, args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from relay.redact import redact_url
    from relay.redis import connect

    redis = connect(redis_url, timeout=REDIS_TIMEOUT_S, retry=False)
    try:
        return await reconcile_now(
            redis, loaded, args.source, args.payment, args.dry_run, args.json
        )
    except (RedisError, OSError) as exc:
        print(
            f"relay reconcile: cannot reach Redis at {redact_url(redis_url)}: {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    finally:
        await redis.aclose()


async def reconcile_now(
    redis: Any,
    loaded: LoadedConfig,
    source: str | None,
    payment: str | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    """The command's work, on an open Redis client (the tests call it directly)."""
    import os
    import socket

    import aiohttp

    from relay.clock import CLOCK
    from relay.reconcile import Reconciler

    await CLOCK.sync(redis)
    async with aiohttp.ClientSession() as session:
        owner = f"cli:{socket.gethostname()}:{os.getpid()}"
        reconciler = Reconciler(redis, loaded.config, session, owner)
        names = list(reconciler.settings)
        if source is not None:
            if source not in reconciler.settings:
                print(
                    f"relay reconcile: source {source!r} has no reconcile: section", file=sys.stderr
                )
                return EXIT_CONFIG
            names = [source]
        checks = await _checks(reconciler, names, payment, dry_run)
    if payment is not None:
        checks = [c for c in checks if c.outcome != "not_tracked"]
    if as_json:
        print_json({"dry_run": dry_run, "checks": [c.to_dict() for c in checks]})
    else:
        print_lines(_text(checks, dry_run, payment))
    if payment is not None and not checks:
        return EXIT_PROBLEM
    return EXIT_PROBLEM if any(c.outcome == "api_error" for c in checks) else 0


async def _checks(
    reconciler: Any, names: list[str], payment: str | None, dry_run: bool
) -> list[Check]:
    if payment is None:
        found = await asyncio.gather(
            *(reconciler.pass_source(n, dry_run=dry_run, every=True) for n in names)
        )
        return [check for checks in found for check in checks]
    return [await reconciler.check(n, payment, dry_run=dry_run, wait=True) for n in names]


def _text(checks: list[Check], dry_run: bool, payment: str | None) -> list[str]:
    if not checks:
        if payment is not None:
            why = "not open, past give_up, or its source does not reconcile"
            return [f"payment {payment} is not tracked: {why}"]
        return ["no open payment to reconcile"]
    lines: list[str] = []
    for check in checks:
        parts = [check.source, check.payment_id, f"relay {check.relay_status or '-'}"]
        if check.provider_status is not None:
            parts.append(f"provider {check.provider_status}")
        parts.append(check.outcome.replace("_", " "))
        if check.event_id is not None:
            parts += [str(check.event_type), check.event_id]
        lines += pack(parts)
        if check.error:
            lines.append(f"    {check.error}")
    emitted = sum(c.outcome in ("emitted", "would_emit") for c in checks)
    verb = "would be emitted (dry run: nothing sent)" if dry_run else "queued for the workers"
    lines += ["", f"{plural(len(checks), 'payment')} checked, {emitted} {verb}"]
    return lines
