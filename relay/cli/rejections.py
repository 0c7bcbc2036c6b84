"""`relay rejections list | show | replay`: rejected requests with their raw bytes (SPEC 9).

The figures are relay.rejected's query functions; `--json` prints exactly what they return (the
JSON API gives the same). Text fits 80 columns and never cuts an id: a part that does not fit
goes to the next line, and only a reason is shortened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
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
MIN_REASON = 24  # fewer columns left on a line than this: the reason starts a new one
REDIS_TIMEOUT_S = 5.0
FAILED = ("not_found", "still_rejected", "cannot_verify")
OUTCOMES = (  # replay's summary line, in this order
    ("stored", "stored (queued for the worker)"),
    ("duplicate", "already stored (duplicate)"),
    ("still_rejected", "still rejected"),
    ("cannot_verify", "cannot be verified again"),
    ("not_found", "not found"),
)


def add_parser(sub: Subcommands) -> None:
    parser = add_command(
        sub, "rejections", run, "rejected requests with their raw bytes: list, show, replay"
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    actions = parser.add_subparsers(dest="rejections_command", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="kept rejected requests, newest first")
    q.add_argument("--source", help="only this source's")
    q.add_argument("--limit", type=_positive, default=50, help="at most N (default 50)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q = actions.add_parser("show", help="one rejected request: headers and body")
    q.add_argument("id", metavar="ID")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q = actions.add_parser(
        "replay", help="verify again with the current config; store those that pass"
    )
    q.add_argument("ids", nargs="+", metavar="ID")
    q.add_argument("--json", action="store_true", help="machine-readable output")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    # Replay verifies with the sources' secrets; list and show need none (SPEC 8).
    loaded = load(tool_config_path(args.config), unset_ok=args.rejections_command != "replay")
    logs_to_stderr(loaded.secrets)  # stdout is the answer (and with --json, a document)
    return asyncio.run(run_rejections(loaded, need_redis(loaded), args))


async def run_rejections(loaded: LoadedConfig, redis_url: str, args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from relay.keys import Keys
    from relay.ledger.query import BadQuery
    from relay.redact import redact_url
    from relay.redis import connect

    commands: dict[str, Callable[[Any, LoadedConfig, Keys, argparse.Namespace], Awaitable[int]]]
    commands = {"list": _list, "show": _show, "replay": _replay}
    redis = connect(redis_url, timeout=REDIS_TIMEOUT_S, retry=False)
    try:
        command = commands[args.rejections_command]
        return await command(redis, loaded, Keys(loaded.config.key_prefix), args)
    except BadQuery as exc:
        print(f"relay rejections: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (RedisError, OSError) as exc:
        where = redact_url(redis_url)
        print(f"relay rejections: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        await redis.aclose()


def _print_json(value: Any) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _when(text: str | None) -> str:
    """`2026-12-02T10:00:00.123Z` -> `2026-12-02 10:00:00Z` (the list's columns)."""
    if not text:
        return "-"
    return text.replace("T", " ").partition(".")[0].removesuffix("Z") + "Z"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def pack(
    parts: list[str], reason: str = "", width: int = WIDTH, reason_line: bool = False
) -> list[str]:
    """Parts joined by two spaces, a part that does not fit starting a new indented line (a
    part is never cut); then the reason, shortened to what is left of the last line (or of a
    line of its own)."""
    lines: list[str] = []
    line = ""
    for part in parts:
        if line and len(line) + 2 + len(part) > width:
            lines.append(line)
            line = INDENT + part
        else:
            line = f"{line}  {part}" if line else part
    if reason:
        if reason_line or width - len(line) - 2 < MIN_REASON:
            lines.append(line)
            line = INDENT
        else:
            line += "  "
        line += _shorten(reason, width - len(line))
    lines.append(line)
    return lines


async def _list(redis: Any, loaded: LoadedConfig, keys: Any, args: argparse.Namespace) -> int:
    from relay.rejected import list_rejected, rejected_usage

    found = await list_rejected(redis, keys, limit=args.limit, source=args.source)
    if args.json:
        _print_json(found)
        return 0
    usage = await rejected_usage(redis, keys)
    cap = loaded.config.log.rejected_max_bytes
    if not found:
        print("no rejected request kept" if not usage["count"] else "no rejected request matches")
        return 0
    print(
        f"{usage['count']} rejected request(s) kept, {_size(usage['bytes'])} of {_size(cap)}; "
        "newest first"
    )
    for item in found:
        parts = [
            item["id"],
            _when(item["received_at"]),
            f"{item['status']} {item['error']}",
            item["source"],
            item["client_ip"] or "-",
            f"{item['body_bytes']} B" if item["body_kept"] else "body not kept",
        ]
        print("\n".join(pack(parts, item["reason"])))
    return 0


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


async def _show(redis: Any, loaded: LoadedConfig, keys: Any, args: argparse.Namespace) -> int:
    from relay.rejected import get_rejected

    found = await get_rejected(redis, keys, args.id)
    if found is None:
        hours = loaded.config.log.rejected_retention / 3600
        print(f"no rejected request with id {args.id}", file=sys.stderr)
        print(
            f"(kept {hours:g} h, the oldest dropped first past log.rejected_max_bytes)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        _print_json(found)
        return 0
    print("\n".join(_detail_lines(found)))
    return 0


def _detail_lines(found: dict[str, Any]) -> list[str]:
    import textwrap

    lines = [found["id"]]
    rows = [
        ("source", found["source"]),
        ("received", found["received_at"]),
        ("answered", f"{found['status']} {found['error']}: {found['reason']}"),
        ("from", found["client_ip"] or "-"),
        ("request", f"{found['method']} {found['path']}"),
    ]
    if found["dropped_headers"]:
        rows.append(("not kept", ", ".join(found["dropped_headers"]) + " (secret headers)"))
    for label, value in rows:
        lines += textwrap.wrap(
            value, WIDTH, initial_indent=f"  {label:<10}", subsequent_indent=" " * 12
        )
    lines.append("headers")
    for name, value in found["headers"].items():
        lines += textwrap.wrap(
            f"{name}: {value}", WIDTH, initial_indent="  ", subsequent_indent=INDENT
        ) or [f"  {name}:"]
    if not found["body_kept"]:
        lines.append("body not kept (the request was refused before it was read in full)")
    elif found["body"] is None:
        lines.append(f"body ({found['body_bytes']} bytes, not UTF-8: --json gives it in base64)")
    else:
        lines.append(f"body ({found['body_bytes']} bytes)")
        step = WIDTH - 2  # cut at a fixed width: the lines joined give the body back
        for text in found["body"].splitlines() or [""]:
            lines += ["  " + text[i : i + step] for i in range(0, len(text), step)] or ["  "]
    return lines


async def _replay(redis: Any, loaded: LoadedConfig, keys: Any, args: argparse.Namespace) -> int:
    from relay import clock
    from relay.rejected import replay_rejected

    await clock.CLOCK.sync(redis)  # the stored job's times are Redis's, as the ingress's are
    results = await replay_rejected(redis, loaded, args.ids)
    failed = [r for r in results if r["result"] in FAILED]
    if args.json:
        _print_json(results)
        return 1 if failed else 0
    for r in results:
        parts = [r["id"], r["result"]]
        reason = ""
        if r["result"] in ("stored", "duplicate"):
            parts.append(r["inbound_id"])
        elif r["result"] == "still_rejected":
            parts.append(f"{r['status']} {r['error']}")
            reason = r["reason"]
        elif r["result"] == "cannot_verify":
            reason = r["reason"]
        print("\n".join(pack(parts, reason, reason_line=True)))
    counts = Counter(r["result"] for r in results)
    print(", ".join(f"{counts[result]} {words}" for result, words in OUTCOMES if counts[result]))
    return 1 if failed else 0
