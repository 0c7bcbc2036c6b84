r"""Load client processes (aiohttp), one JSON summary line on stdout when done.

closed loop (the fallback when wrk is missing), C connections for D seconds, bodies from a pool
file of `<header value>\\t<body>` lines:
    python -m bench.loadgen closed --url URL --pool FILE --header NAME -c 50 -d 10

open loop at a fixed offered rate, fresh distinct webhook per request:
    python -m bench.loadgen rate --url BASE --source ivpay --rate 500 -d 10 [--retry]
        [--accepted-out FILE]
With --retry each webhook is re-sent (byte-identical, as a provider does) until it is answered
2xx, honouring Retry-After, for at most --retry-for seconds; only 2xx counts as accepted.
Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 3)


async def closed(args: argparse.Namespace) -> dict[str, Any]:
    pool: list[tuple[str, bytes]] = []
    with open(args.pool, "rb") as fh:
        for line in fh:
            value, _, body = line.rstrip(b"\n").partition(b"\t")
            pool.append((value.decode(), body))
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors = 0
    next_index = 0
    stop_at = time.monotonic() + args.duration
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_connection() -> None:
            nonlocal next_index, errors
            while time.monotonic() < stop_at:
                value, body = pool[next_index % len(pool)]
                next_index += 1
                started = time.perf_counter()
                try:
                    async with session.post(
                        args.url,
                        data=body,
                        headers={"Content-Type": "application/json", args.header: value},
                    ) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except (TimeoutError, aiohttp.ClientError, OSError):
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(args.connections)))
        elapsed = time.monotonic() - started
    total = sum(statuses.values())
    return {
        "requests": total,
        "seconds": round(elapsed, 3),
        "rps": round(total / elapsed, 1),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "errors": errors,
        "non_2xx": sum(c for s, c in statuses.items() if not 200 <= s < 300),
        "wrapped": max(0, next_index - len(pool)),
        "client": "aiohttp",
    }


async def rate(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, args.repo)
    from bench.common import REQUESTS

    make = REQUESTS[args.source]
    url = f"{args.url}/hooks/{args.source}"
    statuses: Counter[int] = Counter()
    answer_ms: list[float] = []
    accepted: list[str] = []
    errors = retries = gave_up = skipped = 0
    inflight = 0
    connector = aiohttp.TCPConnector(limit=args.max_connections)
    timeout = aiohttp.ClientTimeout(total=10)

    async def send(seq: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors, retries, gave_up, inflight
        sent_ns = time.time_ns()
        body, headers = make(seq, sent_ns)
        token = f"bp{sent_ns}x{seq}"
        give_up_at = time.monotonic() + (args.retry_for if args.retry else 0)
        try:
            while True:
                started = time.perf_counter()
                wait = 1.0
                try:
                    async with session.post(
                        url, data=body, headers=headers, timeout=timeout
                    ) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                        if 200 <= resp.status < 300:
                            answer_ms.append((time.perf_counter() - started) * 1000)
                            accepted.append(token)
                            return
                        try:
                            wait = min(5.0, float(resp.headers.get("Retry-After", "1")))
                        except ValueError:
                            wait = 1.0
                except (TimeoutError, aiohttp.ClientError, OSError):
                    errors += 1
                if not args.retry or time.monotonic() + wait > give_up_at:
                    gave_up += 1
                    return
                retries += 1
                await asyncio.sleep(wait)
        finally:
            inflight -= 1

    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        total = int(args.rate * args.duration)
        for seq in range(total):
            due = started + seq / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if inflight >= args.max_inflight:  # bounded: a stuck server cannot grow us forever
                skipped += 1
                continue
            inflight += 1
            task = asyncio.create_task(send(args.seq_base + seq, session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        send_seconds = time.monotonic() - started
        if tasks:
            await asyncio.wait(tasks, timeout=args.retry_for + 15 if args.retry else 15)
        for task in tasks:
            task.cancel()
    if args.accepted_out:
        with open(args.accepted_out, "w") as fh:
            json.dump(accepted, fh)
    return {
        "offered_rate": args.rate,
        "planned": total,
        "send_seconds": round(send_seconds, 2),
        "achieved_rate": round((total - skipped) / send_seconds, 1),
        "accepted": len(accepted),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "retries": retries,
        "gave_up": gave_up,
        "skipped_overload": skipped,
        "answer_p50_ms": pct(answer_ms, 50),
        "answer_p99_ms": pct(answer_ms, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("closed")
    c.add_argument("--url", required=True)
    c.add_argument("--pool", required=True)
    c.add_argument("--header", required=True)
    c.add_argument("-c", "--connections", type=int, default=50)
    c.add_argument("-d", "--duration", type=float, default=10)
    r = sub.add_parser("rate")
    r.add_argument("--url", required=True)
    r.add_argument("--source", default="ivpay")
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("-d", "--duration", type=float, default=10)
    r.add_argument("--retry", action="store_true")
    r.add_argument("--retry-for", type=float, default=120)
    r.add_argument("--accepted-out")
    r.add_argument("--seq-base", type=int, default=0)
    r.add_argument("--max-inflight", type=int, default=2000)
    r.add_argument("--max-connections", type=int, default=100)
    r.add_argument("--repo", default=".")
    args = parser.parse_args()
    result = asyncio.run(closed(args) if args.mode == "closed" else rate(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
