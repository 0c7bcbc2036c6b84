"""`relay trigger SOURCE EVENT`: POST a correctly signed sample webhook, as the provider would."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING

from relay.cli.common import (
    CONFIG_HELP,
    Subcommands,
    add_command,
    dev_ingress_url,
    load,
    tool_config_path,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "trigger", run, "send a correctly signed sample webhook to the relay")
    parser.add_argument("source", help="a configured source name, e.g. ivpay")
    parser.add_argument("event", help="paid, completed, pending, created, expired, ...")
    parser.add_argument(
        "--url",
        help="the relay's base URL (default: the `relay dev` running here, "
        "else http://127.0.0.1:$PORT, else port 8000)",
    )
    parser.add_argument("--config", help=CONFIG_HELP)


def run(args: argparse.Namespace) -> int:
    loaded = load(tool_config_path(args.config))
    return asyncio.run(run_trigger(loaded, args.source, args.event, args.url))


async def run_trigger(loaded: LoadedConfig, source: str, event: str, url: str | None) -> int:
    import aiohttp

    from relay.providers import build_sources

    sources = build_sources(loaded)
    provider = sources.get(source)
    if provider is None:
        print(
            f"unknown source {source!r}; configured: {', '.join(sources) or 'none'}",
            file=sys.stderr,
        )
        return 2
    short = event.removeprefix("payment.")
    if short not in provider.sample_events:
        print(
            f"{source} ({provider.kind}) has no sample for {event!r}; "
            f"try one of: {', '.join(provider.sample_events)}",
            file=sys.stderr,
        )
        return 2
    sample = provider.sample(short, time.time())
    base = (url or _default_base()).rstrip("/")
    target = f"{base}/hooks/{source}" + (f"/{sample.token}" if sample.token else "")
    shown = f"{base}/hooks/{source}" + ("/<token>" if sample.token else "")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                target,
                data=sample.body,
                headers=sample.headers,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response,
        ):
            answer = await response.text()
    except aiohttp.ClientError as exc:
        print(
            f"could not reach the relay at {base}: {exc}\n(is `relay dev` or `relay serve` "
            f"running? use --url to point elsewhere)",
            file=sys.stderr,
        )
        return 1
    print(f"POST {shown} ({provider.kind} {short}) -> {response.status} {answer}")
    return 0 if response.status == 200 else 1


def _default_base() -> str:
    """The running `relay dev`'s ingress (it writes its URL beside .relay/redis.url), else
    $PORT on this machine, else port 8000."""
    return dev_ingress_url() or f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"
