"""`relay trigger SOURCE EVENT`: POST a correctly signed sample webhook, as the provider would."""

from __future__ import annotations

import os
import sys
import time

import aiohttp

from relay.config.model import LoadedConfig
from relay.providers import build_sources


async def run_trigger(loaded: LoadedConfig, source: str, event: str, url: str | None) -> int:
    sources = build_sources(loaded)
    provider = sources.get(source)
    if provider is None:
        print(f"unknown source {source!r}; configured: {', '.join(sources) or 'none'}", file=sys.stderr)
        return 2
    short = event.removeprefix("payment.")
    if short not in provider.sample_events:
        print(f"{source} ({provider.kind}) has no sample for {event!r}; "
              f"try one of: {', '.join(provider.sample_events)}", file=sys.stderr)
        return 2
    sample = provider.sample(short, time.time())
    base = (url or f"http://127.0.0.1:{os.environ.get('PORT') or 8000}").rstrip("/")
    target = f"{base}/hooks/{source}" + (f"/{sample.token}" if sample.token else "")
    shown = f"{base}/hooks/{source}" + ("/<token>" if sample.token else "")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(target, data=sample.body, headers=sample.headers,
                                    timeout=aiohttp.ClientTimeout(total=15)) as response:
                answer = await response.text()
    except aiohttp.ClientError as exc:
        print(f"could not reach the relay at {base}: {exc}\n(is `relay dev` or `relay serve` "
              f"running? use --url to point elsewhere)", file=sys.stderr)
        return 1
    print(f"POST {shown} ({provider.kind} {short}) -> {response.status} {answer}")
    return 0 if response.status == 200 else 1
