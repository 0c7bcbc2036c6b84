"""The floor for receipt-to-delivery latency: the least a Redis-backed relay can do.

    python -m bench.floor server --redis URL --port N
    python -m bench.floor consumer --redis URL --sinks http://127.0.0.1:PORT

`server`: an aiohttp app; POST /hooks/<source> reads the body, does one `LPUSH` of the
receipt time (RFC 3339, ms), a newline and the body, and answers 200. No signature check, no
dedupe, no durability beyond Redis's own append-only file.

`consumer`: one `BRPOP` loop; each item is POSTed to the same three fake sinks as the relay's
(bench/sinks_server.py: http, discord, slack paths) concurrently, on one kept-alive aiohttp
session. The http sink gets `{"received_at": ..., "body": ...}` so the sink server measures from
the receipt time, as it does for the relay's canonical event JSON; discord and slack get the raw
body, measured from the client's send time in the payment id, as the relay's rendered messages
are. Same event loop as `relay serve` / `relay worker` (uvloop when installed).

`latency(...)` runs both, offers the load client's open-loop rate, and returns the same row as
bench.e2e.latency_at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

KEY = "floor:q"
SINK_PATHS = {
    "http": "/http",
    "discord": "/discord/api/webhooks/1/bench",
    "slack": "/slack/services/T0/B0/bench",
}


def rfc3339_ms(at: float) -> str:
    """As relay.events.rfc3339: UTC, milliseconds truncated, `Z`."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _loop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def server(redis_url: str, port: int) -> None:
    import redis.asyncio as aioredis
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        received = time.time()
        body = await request.read()
        await request.app["redis"].lpush(KEY, rfc3339_ms(received).encode() + b"\n" + body)
        return web.Response(status=200)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def startup(app: web.Application) -> None:
        app["redis"] = aioredis.Redis.from_url(redis_url)

    async def cleanup(app: web.Application) -> None:
        await app["redis"].aclose()

    app = web.Application()
    app.router.add_post("/hooks/{source}", hook)
    app.router.add_get("/healthz", healthz)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    _loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _consume(redis_url: str, sinks: str, concurrency: int) -> None:
    import aiohttp
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:

        async def post(path: str, data: bytes) -> None:
            async with session.post(sinks + path, data=data, headers=headers) as resp:
                await resp.read()

        async def fan_out(item: bytes) -> None:
            try:
                received, _, body = item.partition(b"\n")
                wrapped = b'{"received_at":"' + received + b'","body":' + body + b"}"
                await asyncio.gather(
                    post(SINK_PATHS["http"], wrapped),
                    post(SINK_PATHS["discord"], body),
                    post(SINK_PATHS["slack"], body),
                )
            finally:
                sem.release()

        while True:
            popped = await r.brpop([KEY], timeout=1)
            if popped is None:
                continue
            await sem.acquire()
            task = asyncio.create_task(fan_out(popped[1]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def consumer(redis_url: str, sinks: str, concurrency: int = 200) -> None:
    _loop()
    asyncio.run(_consume(redis_url, sinks, concurrency))


def latency(rig: Any, rate: float, seconds: float, seq_base: int) -> dict[str, Any]:
    """The floor at `rate`, measured like bench.e2e.latency_at: the relay's Rig gives the Redis,
    the fake sink server and the process group; the floor's two processes run only meanwhile."""
    from bench.common import HOST, PY, REPO, CpuNoise, log, wait_http
    from bench.e2e import SINKS, sink_post, sink_stats
    from relay.embedded import free_port

    port = free_port()
    rig.r.delete(KEY)
    sink_post(rig.sink_port, "/reset")
    srv = rig.procs.start(
        f"floor-server-{port}",
        [PY, "-m", "bench.floor", "server", "--redis", rig.redis_url, "--port", str(port)],
    )
    wait_http(port, "/healthz", proc=srv)
    con = rig.procs.start(
        f"floor-consumer-{port}",
        [
            PY,
            "-m",
            "bench.floor",
            "consumer",
            "--redis",
            rig.redis_url,
            "--sinks",
            f"http://{HOST}:{rig.sink_port}",
        ],
    )
    try:
        time.sleep(0.5)  # the consumer's imports and first BRPOP
        if not con.alive():
            raise RuntimeError(f"floor consumer exited:\n{con.tail()}")
        with CpuNoise() as noise:
            out = subprocess.run(
                [
                    PY,
                    "-m",
                    "bench.loadgen",
                    "rate",
                    "--url",
                    f"http://{HOST}:{port}",
                    "--source",
                    "ivpay",
                    "--rate",
                    str(rate),
                    "-d",
                    str(seconds),
                    "--seq-base",
                    str(seq_base),
                    "--repo",
                    str(REPO),
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                cwd=str(REPO),
            )
        load = json.loads(out.stdout.strip().splitlines()[-1])
        sent_done = time.monotonic()
        deadline = sent_done + 30
        sinks = sink_stats(rig.sink_port)
        while time.monotonic() < deadline:
            sinks = sink_stats(rig.sink_port)
            if all(sinks.get(s, {}).get("distinct", 0) >= load["accepted"] for s in SINKS):
                break
            time.sleep(0.05)
        drain_s = time.monotonic() - sent_done
    finally:
        rig.stop([con, srv])
    row = {
        "rate": rate,
        "seconds": seconds,
        "load": load,
        "other_cpus": noise.other_cpus,
        "drain_after_load_s": round(drain_s, 2),
        "sinks": {s: sinks.get(s, {}) for s in SINKS},
    }
    lat = {s: row["sinks"][s].get("latency", {}) for s in SINKS}
    log(
        f"floor (LPUSH/BRPOP) latency @ {rate:.0f}/s offered (achieved {load['achieved_rate']}/s, "
        f"{load['accepted']} accepted): "
        + "; ".join(
            f"{s} p50 {lat[s].get('p50_ms')} p99 {lat[s].get('p99_ms')} max {lat[s].get('max_ms')} ms"
            for s in SINKS
        )
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--redis", required=True)
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("consumer")
    c.add_argument("--redis", required=True)
    c.add_argument("--sinks", required=True, help="the fake sink server's base URL")
    c.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    if args.mode == "server":
        server(args.redis, args.port)
    else:
        consumer(args.redis, args.sinks, args.concurrency)


if __name__ == "__main__":
    main()
