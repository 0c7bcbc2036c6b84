"""`relay dlq list | replay | purge`: the dead-letter queue from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from relay.cli.common import (
    CONFIG_HELP,
    Subcommands,
    add_command,
    load,
    logs_to_stderr,
    need_redis,
    tool_config_path,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig
    from relay.dlq import DeadLetter, DeadLetterQueue


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "dlq", run, "inspect, replay and purge dead-lettered deliveries")
    parser.add_argument("--config", help=CONFIG_HELP)
    dlq = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    q = dlq.add_parser("list", help="list dead letters, newest first")
    q.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)  # either place
    q.add_argument("--sink")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    for action, verb in (("replay", "send again through the normal path"), ("purge", "delete")):
        q = dlq.add_parser(action, help=f"{verb}: by id, by sink or all")
        q.add_argument("ids", nargs="*", metavar="ID")
        q.add_argument("--sink")
        q.add_argument("--all", action="store_true")
        q.add_argument("--config", help=CONFIG_HELP, default=argparse.SUPPRESS)
        q.add_argument("--dry-run", action="store_true", help="list them; change nothing")
        if action == "purge":
            q.add_argument("--yes", action="store_true", help="delete without asking")


def run(args: argparse.Namespace) -> int:
    loaded = load(tool_config_path(args.config), unset_ok=True)
    logs_to_stderr(loaded.secrets)  # a replay logs each letter: stdout is the answer
    return asyncio.run(run_dlq(loaded, need_redis(loaded), args))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def run_dlq(loaded: LoadedConfig, redis_url: str, args: argparse.Namespace) -> int:
    from relay.dlq import DeadLetterQueue
    from relay.keys import Keys
    from relay.redis import connect

    redis = connect(redis_url)
    try:
        dlq = DeadLetterQueue(redis, Keys(loaded.config.key_prefix), loaded.config.dlq.max_entries)
        if args.dlq_command == "list":
            return await _list(dlq, args)
        if not (args.ids or args.sink or args.all):
            print(f"relay dlq {args.dlq_command}: give IDs, --sink NAME or --all", file=sys.stderr)
            return 2
        if args.sink and args.sink not in loaded.config.sinks:
            print(f"note: sink {args.sink!r} is not in the current config", file=sys.stderr)
        letters = await dlq.select(args.ids, args.sink, args.all)
        missing = set(args.ids or []) - {x.id for x in letters}
        for ident in sorted(missing):
            print(f"no dead letter with id {ident}", file=sys.stderr)
        if not letters:
            if not missing:
                print("no dead letters match: nothing to do")
            return 1 if missing else 0
        code = await _act(dlq, letters, args)
        return code or (1 if missing else 0)
    finally:
        await redis.aclose()


async def _act(dlq: DeadLetterQueue, letters: list[DeadLetter], args: argparse.Namespace) -> int:
    """Replay or purge `letters`: with --dry-run only list them; a purge asks unless --yes."""
    verb = "replay" if args.dlq_command == "replay" else "purge"
    if args.dry_run:
        for x in letters:
            print(f"would {verb} {x.id}  sink={x.sink or '-'}  source={x.source}  {x.reason}")
        print(f"dry run: would {verb} {len(letters)} dead letter(s); nothing changed")
        return 0
    if verb == "purge" and not args.yes:
        if not sys.stdin.isatty():
            print(
                f"relay dlq purge: would delete {len(letters)} dead letter(s); "
                "pass --yes to delete without a terminal to ask on",
                file=sys.stderr,
            )
            return 2
        answer = input(f"delete {len(letters)} dead letter(s) for good? [y/N] ")  # noqa: ASYNC250 - the CLI's one prompt
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    if verb == "replay":
        count = await dlq.replay(letters)
        print(f"replayed {count} dead letter(s): they are queued for delivery again")
    else:
        count = await dlq.purge(letters)
        print(f"purged {count} dead letter(s)")
    return 0


async def _list(dlq: DeadLetterQueue, args: argparse.Namespace) -> int:
    from relay.events import dumps
    from relay.operator import letter_json

    letters = await dlq.recent(limit=args.limit, sink=args.sink)
    if args.json:  # the same JSON as GET /api/dead-letters
        shown = {"dead_letters": [letter_json(x) for x in letters], "total": await dlq.size()}
        sys.stdout.write(dumps(shown, indent=True).decode() + "\n")
        return 0
    total = await dlq.size()
    if not letters:
        print("dead-letter queue is empty" if not total else "no dead letters match")
        return 0
    print(f"{total} dead letter(s); newest first")
    for x in letters:
        shown = letter_json(x)
        target = f"sink={x.sink}" if x.kind == "delivery" else "normalize"
        status = x.last_status or "-"
        print(
            f"{x.id}  {_when(x.failed_at)}  {target}  source={x.source}  "
            f"type={x.event_type or '-'}  attempts={x.attempts}  status={status}  {x.reason}"
            f"  payment={shown['payment_id'] or '-'}  reference={shown['reference'] or '-'}"
        )
    return 0
