"""`relay events list | show`: the event log from the command line (SPEC 9).

The answers are relay.operator's: `--json` prints exactly what it returns (the API gives the
same). Text fits 80 columns and never cuts an id: a part that does not fit starts a new,
indented line, and only free text (an answer, an error) is shortened, with "…". What the other
operator commands (payments, replay, sinks) share is here too: `operate` (config, Redis, exit
codes), `print_json`, `pack`, `when` and the lines of a delivery's attempts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from relay.cli.common import (
    CONFIG_HELP,
    EXIT_CONFIG,
    Subcommands,
    add_command,
    load,
    logs_to_stderr,
    need_redis,
    tool_config_path,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig

WIDTH = 80
INDENT = "    "
LABEL = 10  # the label column of `show`
REDIS_TIMEOUT_S = 5.0
EXIT_NOT_FOUND = 1
OPTIONAL = ("amount", "tx hash")  # rows `show` leaves out when the event has no such value
JSON_HELP = "print the JSON the operator API gives for the same question"
TIME_HELP = "a duration back from now (2h, 30m, 7d) or an RFC 3339 time"

Work = Callable[[Any, "LoadedConfig"], Awaitable[int]]


# --- what the operator commands share --------------------------------------------------------


def add_config(parser: argparse.ArgumentParser, *, inner: bool = False) -> None:
    """`--config`; `inner` for an action's parser, so that `relay events --config X list` and
    `relay events list --config X` both work (the inner default would overwrite the outer)."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if inner else {}
    parser.add_argument("--config", help=CONFIG_HELP, **extra)


def add_json(parser: argparse.ArgumentParser, *, inner: bool = False) -> None:
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if inner else {}
    parser.add_argument("--json", action="store_true", help=JSON_HELP, **extra)


def operate(args: argparse.Namespace, command: str, work: Work) -> int:
    """Load the config, find Redis and run `work(redis, loaded)`; its exit code, or 2 for a bad
    query or no Redis and 1 for an unknown id (the message on stderr). These commands only read
    or steer Redis: they need no provider or sink secret (SPEC 8), so unset `${VAR}`s are fine."""
    loaded = load(tool_config_path(args.config), unset_ok=True)
    redis_url = need_redis(loaded)
    logs_to_stderr(loaded.secrets)
    return asyncio.run(_operate(loaded, redis_url, command, work))


async def _operate(loaded: LoadedConfig, redis_url: str, command: str, work: Work) -> int:
    from redis.exceptions import RedisError

    from relay.operator import BadQuery, NotFound
    from relay.redact import redact_url
    from relay.redis import connect

    redis = connect(redis_url, timeout=REDIS_TIMEOUT_S, retry=False)
    try:
        return await work(redis, loaded)
    except BadQuery as exc:
        print(f"relay {command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NotFound as exc:
        print(f"relay {command}: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (RedisError, OSError) as exc:
        print(
            f"relay {command}: cannot reach Redis at {redact_url(redis_url)}: {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    finally:
        await redis.aclose()


def print_json(value: Any) -> None:
    """The operator's answer as JSON, indented; every decimal keeps its digits."""
    from relay.events import dumps

    sys.stdout.write(dumps(value, indent=True).decode() + "\n")


def print_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))


def when(text: str | None) -> str:
    """`2026-12-02T10:11:12.345Z` -> `2026-12-02 10:11:12Z`, the one time format of the text."""
    if not text:
        return "-"
    return text.replace("T", " ").partition(".")[0].removesuffix("Z") + "Z"


def plural(count: int, word: str, words: str = "") -> str:
    """`1 event`, `2 events`; `words` where the plural is not `word` + s (deliveries)."""
    return f"{count} {word if count == 1 else words or word + 's'}"


def shorten(text: str, width: int) -> str:
    """Free text on one line of at most `width` characters (never an id: ids are not cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def pack(
    parts: list[str], *, lead: str = "", indent: str = INDENT, width: int = WIDTH
) -> list[str]:
    """`parts` joined by two spaces after `lead`; a part that does not fit starts a new line at
    `indent`. A part is never cut (one longer than a line stands alone on its own)."""
    lines: list[str] = []
    line = lead
    for part in parts:
        if not line.strip():
            line += part
        elif len(line) + 2 + len(part) > width:
            lines.append(line)
            line = indent + part
        else:
            line += "  " + part
    lines.append(line)
    return lines


def labelled(label: str, value: str | None, lead: str = "  ") -> list[str]:
    """`  label     value`, or the value on a line of its own when the two do not fit."""
    head = f"{lead}{label:<{LABEL}} "
    text = "-" if value is None or value == "" else str(value)
    if len(head) + len(text) <= WIDTH:
        return [head + text]
    return [f"{lead}{label}", lead + INDENT + text]


def amount(payment: dict[str, Any]) -> str | None:
    if payment.get("amount") is None:
        return None
    return f"{payment['amount']} {payment.get('currency') or ''}".strip()


def attempt_lines(attempt: dict[str, Any], lead: str) -> list[str]:
    """One attempt: number (and replay round), time, outcome, HTTP status, duration, the next
    attempt's time; then the start of the answer, shortened, on a line of its own."""
    number = f"#{attempt['number']}"
    if attempt["replay"]:
        number = f"replay {attempt['replay']} {number}"
    parts = [number, when(attempt["at"]), attempt["outcome"]]
    if attempt["status"] is not None:
        parts.append(f"HTTP {attempt['status']}")
    if attempt["duration_ms"] is not None:
        parts.append(f"{attempt['duration_ms']} ms")
    if attempt.get("waits"):
        parts.append(plural(attempt["waits"], "wait"))
    if attempt["next_attempt_at"]:
        parts.append(f"next {when(attempt['next_attempt_at'])}")
    lines = pack(parts, lead=lead, indent=lead + INDENT)
    answer = " ".join(str(attempt.get("answer") or "").split())
    if answer:
        inner = lead + INDENT
        lines.append(inner + shorten(f"answer: {answer}", WIDTH - len(inner)))
    return lines


def delivery_lines(delivery: dict[str, Any], lead: str = "  ") -> list[str]:
    """A sink's state, then each of its attempts, oldest first."""
    lines = pack([delivery["sink"], delivery["state"]], lead=lead, indent=lead + INDENT)
    if not delivery["attempts"]:
        lines[-1] += "  (no attempt yet)"
    for attempt in delivery["attempts"]:
        lines += attempt_lines(attempt, lead + "  ")
    wait = delivery.get("rate_limit_wait")
    if wait is not None and delivery["state"] == "pending":
        lines += attempt_lines({**wait, "outcome": "waiting on the rate limit"}, lead + "  ")
    return lines


# --- relay events ----------------------------------------------------------------------------


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "events", run, "the event log: list events, show one")
    add_config(parser)
    actions = parser.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="logged events, newest first")
    add_filters(q)
    q.add_argument("--sink", metavar="S", help="only events routed to this sink")
    q.add_argument("--limit", metavar="N", type=int, default=50, help="at most N (default 50)")
    add_json(q)
    add_config(q, inner=True)
    q = actions.add_parser(
        "show", help="one event with every sink's state and attempts (ID: evt_… or in_…)"
    )
    q.add_argument("id", metavar="ID")
    add_json(q)
    add_config(q, inner=True)


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The filters `events list` and `replay` share (`--sink` differs: each adds its own)."""
    parser.add_argument("--since", metavar="T", help=f"accepted at or after T: {TIME_HELP}")
    parser.add_argument("--until", metavar="T", help="accepted at or before T")
    parser.add_argument("--source", metavar="S", help="only this source's events")
    parser.add_argument("--type", metavar="GLOB", help="event type, a glob: payment.*")
    parser.add_argument(
        "--state",
        help="a delivery in this state: pending, delivered, retrying, paused, failed, dropped",
    )


def run(args: argparse.Namespace) -> int:
    if args.events_command == "list":
        return operate(args, "events list", lambda redis, loaded: _list(redis, loaded, args))
    return operate(args, "events show", lambda redis, loaded: _show(redis, loaded, args))


async def _list(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    flt = await operator.event_filter(
        redis,
        since=args.since,
        until=args.until,
        source=args.source,
        type=args.type,
        sink=args.sink,
        state=args.state,
        limit=args.limit,
    )
    found = await operator.events_list(redis, loaded.config, flt)
    if args.json:
        print_json(found)
        return 0
    if not found["events"]:
        print("no logged event matches")
        return 0
    more = (
        f" (at most {found['limit']}: --limit N for more)"
        if found["count"] >= found["limit"]
        else ""
    )
    lines = [f"{plural(found['count'], 'event')}, newest first{more}"]
    for event in found["events"]:
        lines += summary_lines(event)
    print_lines(lines)
    return 0


def summary_lines(event: dict[str, Any]) -> list[str]:
    """One event of `events list`: id, time, type, source; then its payment; then each sink's
    delivery state."""
    lines = pack([event["id"], when(event["accepted_at"]), event["type"], event["source"]])
    parts = []
    if event["payment_id"]:
        parts.append(f"payment {event['payment_id']}")
    if event["reference"]:
        parts.append(f"ref {event['reference']}")
    money = amount(event)
    if money:
        parts.append(money)
    if parts:
        lines += pack(parts, lead=INDENT)
    sinks = [f"{sink} {state}" for sink, state in event["deliveries"].items()]
    return lines + pack(sinks or ["no sink routed"], lead=INDENT)


async def _show(redis: Any, loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from relay import operator

    found = await operator.event_show(redis, loaded.config, args.id)
    if args.json:
        print_json(found)
        return 0
    if "events" in found:  # an inbound id: what that request became
        count = len(found["events"])
        lines = [f"{found['inbound_id']} became {plural(count, 'event')}"]
        for event in found["events"]:
            lines += ["", *event_lines(event)]
    else:
        lines = event_lines(found)
    print_lines([*lines, "", "(--json for the full event)"])
    return 0


def event_lines(record: dict[str, Any]) -> list[str]:
    """`events show`: the event's ids and payment, then every sink with its attempts."""
    payment = record["payment"]
    lines = [record["id"]]
    for label, value in (
        ("type", record["type"]),
        ("source", record["source"]),
        ("accepted", when(record["accepted_at"])),
        ("inbound", record["inbound_id"]),
        ("payment", payment["id"]),
        ("reference", payment["reference"]),
        ("status", payment["status"]),
        ("amount", amount(payment)),
        ("tx hash", payment["tx_hash"]),
    ):
        if value is not None or label not in OPTIONAL:
            lines += labelled(label, value)
    lines.append("deliveries" if record["deliveries"] else "deliveries: none (no sink routed)")
    for delivery in record["deliveries"]:
        lines += delivery_lines(delivery)
    return lines
