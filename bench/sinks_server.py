"""A fake sink server: fast 2xx for every sink, counting and timing what arrives.

    python -m bench.sinks_server --port N

POST /<sink>/...          a delivery (answers 200; 503 while the sink is set `down`)
GET  /stats               per sink: received, distinct events, duplicates, latency percentiles
GET  /ids/<sink>          the distinct payment ids delivered to that sink (JSON list)
POST /mode/<sink>/<mode>  `ok`, `down` or `hang` (never answer: the relay's timeout ends it)
POST /reset               forget everything

Latency of one delivery is its arrival time minus:
- the event's `received_at` (the ingress's receipt time, RFC 3339 ms) when the body is the
  canonical event JSON (the http sink), else
- the send time the load client wrote into the payment id (`bp<unix ns>x<seq>`), which every
  rendered message (Discord, Slack) repeats.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from aiohttp import web

TOKEN = re.compile(rb"bp(\d{16,20})x(\d+)")
RECEIVED = re.compile(rb'"received_at":"([^"]+)"')


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received: dict[str, int] = defaultdict(int)
        self.refused: dict[str, int] = defaultdict(int)
        self.seen: dict[str, dict[str, int]] = defaultdict(dict)
        self.lat_receipt: dict[str, list[float]] = defaultdict(list)
        self.lat_client: dict[str, list[float]] = defaultdict(list)
        self.unmatched: dict[str, int] = defaultdict(int)
        self.mode: dict[str, str] = getattr(self, "mode", {})
        self.first_at: dict[str, float] = {}
        self.last_at: dict[str, float] = {}


STATE = State()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": _pct(values, 50),
        "p90_ms": _pct(values, 90),
        "p99_ms": _pct(values, 99),
        "max_ms": round(max(values), 2) if values else None,
    }


async def deliver(request: web.Request) -> web.Response:
    now = time.time()
    sink = request.match_info["sink"]
    body = await request.read()
    if STATE.mode.get(sink) == "down":
        STATE.refused[sink] += 1
        return web.Response(status=503, text="down for the benchmark")
    if STATE.mode.get(sink) == "hang":
        STATE.refused[sink] += 1
        await asyncio.sleep(3600)  # the client's timeout closes the connection first
    STATE.received[sink] += 1
    STATE.first_at.setdefault(sink, now)
    STATE.last_at[sink] = now
    match = TOKEN.search(body)
    if match is None:
        STATE.unmatched[sink] += 1
    else:
        key = match.group(0).decode()
        seen = STATE.seen[sink]
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            STATE.lat_client[sink].append((now - int(match.group(1)) / 1e9) * 1000)
            received = RECEIVED.search(body)
            if received is not None:
                try:
                    at = datetime.fromisoformat(received.group(1).decode()).timestamp()
                    STATE.lat_receipt[sink].append((now - at) * 1000)
                except ValueError:
                    pass
    if sink == "discord":
        return web.json_response({"id": "1", "channel_id": "1"})
    if sink == "slack":
        return web.Response(text="ok")
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    out: dict[str, Any] = {}
    for sink in sorted(set(STATE.received) | set(STATE.refused) | set(STATE.mode)):
        seen = STATE.seen.get(sink, {})
        receipt = STATE.lat_receipt.get(sink, [])
        out[sink] = {
            "received": STATE.received.get(sink, 0),
            "refused": STATE.refused.get(sink, 0),
            "distinct": len(seen),
            "duplicates": sum(c - 1 for c in seen.values()),
            "unmatched": STATE.unmatched.get(sink, 0),
            "mode": STATE.mode.get(sink, "ok"),
            "first_at": STATE.first_at.get(sink),
            "last_at": STATE.last_at.get(sink),
            # receipt->delivery when the body carries received_at, else client send->delivery
            "latency_from": "received_at" if receipt else "client send time",
            "latency": _summary(receipt or STATE.lat_client.get(sink, [])),
        }
    return web.json_response(out)


async def ids(request: web.Request) -> web.Response:
    return web.json_response(sorted(STATE.seen.get(request.match_info["sink"], {})))


async def mode(request: web.Request) -> web.Response:
    STATE.mode[request.match_info["sink"]] = request.match_info["mode"]
    return web.json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    STATE.reset()
    return web.json_response({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=4 * 2**20)
    app.router.add_get("/stats", stats)
    app.router.add_get("/ids/{sink}", ids)
    app.router.add_post("/mode/{sink}/{mode}", mode)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{sink}", deliver)
    app.router.add_post("/{sink}/{rest:.*}", deliver)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
