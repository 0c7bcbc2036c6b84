"""`relay replay ID... | [filters] [--sink S ...] [--dry-run] [--yes]`: deliver logged events
again (SPEC 9).

Events are chosen by id (`evt_…`, or `in_…` for what an inbound request became) or by the
filters; `--sink` names the sinks to deliver to (repeatable), else routing picks them now. So
`relay replay --since 24h --sink NEW` backfills a sink added later. The plan comes first:
`--dry-run` prints it and sends nothing; more than ASK_ABOVE deliveries asks on the terminal
unless `--yes` (no terminal and no `--yes`: refused, exit 2). Each delivery carries the
original event id (`webhook-id`), so a receiver drops what it already has.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relay.cli.common import EXIT_CONFIG, Subcommands, add_command
from relay.cli.events import (
    EXIT_NOT_FOUND,
    INDENT,
    add_config,
    add_filters,
    add_json,
    operate,
    pack,
    plural,
    print_json,
    print_lines,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig
    from relay.replay import Plan

ASK_ABOVE = 10  # deliveries: more than this asks first (SPEC 9)
PROGRESS_ABOVE = 100  # deliveries: more than this shows a progress bar (on a terminal)
EXIT_DECLINED = 1


def add_parser(sub: Subcommands) -> None:
    parser = add_command(
        sub,
        "replay",
        run,
        "deliver logged events again: by id, or every event the filters select",
    )
    parser.add_argument("ids", nargs="*", metavar="ID", help="evt_… or in_… ids")
    add_filters(parser)
    parser.add_argument(
        "--sink",
        dest="sinks",
        action="append",
        metavar="S",
        help="deliver to this sink (repeatable; default: the sinks routing picks now)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    parser.add_argument(
        "--yes", action="store_true", help=f"do not ask before more than {ASK_ABOVE} deliveries"
    )
    add_json(parser)
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    return operate(args, "replay", lambda redis, loaded: _replay(redis, loaded, args))


async def _replay(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import clock, operator

    filters = (args.since, args.until, args.source, args.type, args.state)
    if args.ids and any(filters):
        raise operator.BadQuery("give event ids or filters (--since, --state, ...), not both")
    flt = None
    if not args.ids and any(filters):
        flt = await operator.event_filter(
            redis,
            since=args.since,
            until=args.until,
            source=args.source,
            type=args.type,
            state=args.state,
        )
    plan = await operator.replay_plan(
        redis, loaded.config, ids=args.ids or None, flt=flt, sinks=args.sinks
    )
    for ident in plan.not_found:
        print(f"relay replay: no logged event or inbound request with id {ident}", file=sys.stderr)
    missing = EXIT_NOT_FOUND if plan.not_found else 0
    if not args.dry_run and len(plan.deliveries) > ASK_ABOVE and not args.yes:
        refused = _ask(plan)
        if refused is not None:
            return refused
    await clock.CLOCK.sync(redis)  # replayed jobs carry Redis's time, as every other job does
    with _progress(0 if args.dry_run else len(plan.deliveries)) as progress:
        result = await operator.replay_run(
            redis, loaded.config, plan, dry_run=args.dry_run, progress=progress
        )
    if args.json:
        print_json(result)
    elif plan.deliveries or not plan.not_found:  # else stderr has said what was not found
        print_lines(plan_lines(result) if args.dry_run else done_lines(result))
    return missing


def _ask(plan: Plan) -> int | None:
    """None to go ahead; else the exit code (no terminal to ask on: 2; declined: 1)."""
    count, events = len(plan.deliveries), len({p.event_id for p in plan.deliveries})
    if not sys.stdin.isatty():
        print(
            f"relay replay: {_what(count, events)}, and no terminal to ask on:\n"
            f"pass --yes to replay more than {ASK_ABOVE} without asking "
            "(--dry-run shows the plan)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    sys.stderr.write(f"Replay {_what(count, events)}? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return None
    print("nothing replayed", file=sys.stderr)
    return EXIT_DECLINED


@contextmanager
def _progress(count: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a long replay, when stderr is a terminal."""
    if count <= PROGRESS_ABOVE or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replaying", total=count)
        yield lambda queued: progress.update(task, completed=queued)


def _what(deliveries: int, events: int) -> str:
    """`12 deliveries of 12 events`."""
    return f"{plural(deliveries, 'delivery', 'deliveries')} of {plural(events, 'event')}"


def _was(state: str) -> str:
    return "never sent" if state == "none" else f"was {state}"


def plan_lines(result: dict[str, Any]) -> list[str]:
    """`--dry-run`: each delivery the replay would queue (event, sink, its state before)."""
    deliveries = result["deliveries"]
    count, events = len(deliveries), result["events"]
    lines = [f"dry run: would replay {_what(count, events)} (nothing sent)"]
    for item in deliveries:
        parts = [item["event_id"], item["sink"], _was(item["state"])]
        lines += pack([*parts, item["type"] or "-", item["source"] or "-"])
    return lines


def done_lines(result: dict[str, Any]) -> list[str]:
    """After a replay: how many deliveries were queued, to which sinks."""
    queued = result["queued"]
    if not queued:
        return ["nothing to replay: no logged event and sink match"]
    per_sink = Counter(item["sink"] for item in result["deliveries"])
    lines = [f"queued {_what(queued, result['events'])} for delivery again"]
    lines += pack([f"{sink} {count}" for sink, count in sorted(per_sink.items())], lead=INDENT)
    lines.append("each carries its original event id: receivers drop what they already have")
    return lines
