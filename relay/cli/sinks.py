"""`relay sinks`, `relay sinks pause NAME [--for DURATION]`, `relay sinks resume NAME` (SPEC 9).

A paused sink receives nothing: its deliveries wait, use up no attempt, and go out in the order
received once it is resumed (or `--for` has passed). The pause is one Redis hash, so every
process sees it at once. `--json` prints relay.operator's answer.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from relay.cli.common import Subcommands, add_command
from relay.cli.events import (
    INDENT,
    WIDTH,
    add_config,
    add_json,
    operate,
    pack,
    plural,
    print_json,
    print_lines,
    shorten,
    when,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig

SINK = "sink"
NAME_MAX = 26  # the name column at most (the row is 54 more); a longer name gets a line
COUNT_WIDTHS = (9, 8, 6, 4)  # delivered, retrying, failed, held


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "sinks", run, "every sink with its state and counts; pause, resume")
    add_config(parser)
    add_json(parser)
    actions = parser.add_subparsers(dest="sinks_command", metavar="ACTION")
    q = actions.add_parser(
        "pause",
        help="hold a sink's deliveries (they use up no attempt) until resumed or --for passes",
    )
    q.add_argument("name", metavar="NAME")
    q.add_argument("--for", dest="for_", metavar="DURATION", help="then resume by itself: 2h")
    add_json(q, inner=True)
    add_config(q, inner=True)
    q = actions.add_parser("resume", help="send a paused sink's held deliveries, in order")
    q.add_argument("name", metavar="NAME")
    add_json(q, inner=True)
    add_config(q, inner=True)


def run(args: argparse.Namespace) -> int:
    work = {"pause": _pause, "resume": _resume}.get(args.sinks_command or "", _list)
    command = f"sinks {args.sinks_command}" if args.sinks_command else "sinks"
    return operate(args, command, lambda redis, loaded: work(redis, loaded, args))


async def _list(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    found = await operator.sinks_list(redis, loaded.config)
    if args.json:
        print_json(found)
        return 0
    if not found["sinks"]:
        print("no sink configured")
        return 0
    width = min(NAME_MAX, max(len(SINK), *(len(x["name"]) for x in found["sinks"])))
    lines = [_row(width, SINK, "type", "state", "delivered", "retrying", "failed", "held")]
    for sink in found["sinks"]:
        lines += sink_lines(sink, width)
    print_lines(lines)
    return 0


def _row(width: int, name: str, *cells: Any) -> str:
    kind, state, *counts = (str(c) for c in cells)
    numbers = "  ".join(f"{c:>{w}}" for c, w in zip(counts, COUNT_WIDTHS, strict=True))
    return f"{name:<{width}}  {kind:<7}  {state:<6}  {numbers}"


def sink_lines(sink: dict[str, Any], width: int) -> list[str]:
    """A sink's row (a name too long for its column on a line of its own, above the row); then
    how long a pause lasts, the last error when it came after the last success (else the last
    success), and whether the sink has left the config."""
    name = sink["name"]
    lines = [name] if len(name) > width else []
    cells = (sink["delivered"], sink["retrying"], sink["failed"], sink["held"])
    lines.append(_row(width, "" if lines else name, sink["type"] or "-", sink["state"], *cells))
    if sink["state"] == "paused":
        until = sink["paused_until"]
        lines.append(
            f"{INDENT}paused until {when(until)}, then resumes by itself"
            if until
            else f"{INDENT}paused until resumed: relay sinks resume {name}"
        )
    error_at, ok_at = sink["last_error_at"], sink["last_ok_at"]
    if sink["last_error"] and (ok_at is None or _later(error_at, ok_at)):
        head = f"{INDENT}last error {when(error_at)}: "
        lines.append(head + shorten(sink["last_error"], WIDTH - len(head)))
    elif ok_at:
        lines.append(f"{INDENT}last delivered {when(ok_at)}")
    if not sink["configured"]:
        lines.append(f"{INDENT}no longer in the config (seen in Redis)")
    return lines


def _later(a: str | None, b: str) -> bool:
    from relay.events import parse_iso

    return a is not None and parse_iso(a) > parse_iso(b)


async def _pause(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    found = await operator.sink_pause(redis, loaded.config, args.name, args.for_)
    if args.json:
        print_json(found)
        return 0
    name, until = found["sink"], found["paused_until"]
    how = f"until {when(until)}, then resumes by itself" if until else "until resumed"
    lines = pack([f"{name} paused", how, f"({found['held']} held now)"])
    lines.append("its deliveries wait, using up no attempt, and go out in the order received")
    lines += pack(["when it resumes", f"(now: relay sinks resume {name})"])
    print_lines(lines)
    return 0


async def _resume(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    found = await operator.sink_resume(redis, loaded.config, args.name)
    if args.json:
        print_json(found)
        return 0
    released = found["released"]
    lines = pack(
        [
            f"{found['sink']} resumed",
            f"{plural(released, 'held delivery', 'held deliveries')} released, in the order received",
        ]
    )
    if found["state"] == "paused":  # held deliveries arrived again while releasing
        lines.append(f"still paused: {found['held']} held")
    print_lines(lines)
    return 0
