"""Fault test: Redis nearly full under noeviction (issue 8, item 3), with real processes.

A `relay serve` child on a dedicated redis-server with a tiny maxmemory is flooded until it
sheds (503 + Retry-After, /readyz 503, the 503s counted, `relay status` degraded); no worker
runs yet, so the backlog only grows. Then a `relay worker` starts with a local HTTP sink and,
with no operator action (maxmemory untouched), drains it: every 2xx-answered webhook is
delivered, the ingress accepts again, and the webhooks answered 503 (re-sent as a provider
would) are delivered too. Redis never refuses a write: the headroom stayed free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.exceptions as redis_errors

from relay.embedded import EmbeddedRedis
from relay.events import event_id
from relay.redis import connect
from relay.redis_memory import memory_message, read_memory
from tests.conftest import TEST_SECRETS, wait_for
from tests.processes import RelayProcess, write_config

pytestmark = pytest.mark.slow
KEY = TEST_SECRETS["IVPAY_API_KEY"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADROOM_BYTES = 10 * 1024 * 1024  # maxmemory = an idle relay + this: sheds 4 MiB below it
PADDING = 4000  # bytes per body: fills Redis with few requests
SENDERS = 20


def body(i: int) -> bytes:
    return orjson.dumps(
        {"payment_id": f"full-{i}", "status": "PAID", "foreign_id": str(i), "note": "x" * PADDING}
    )


def expected(ids: set[int]) -> set[str]:
    return {event_id("ivpay", f"full-{i}:PAID") for i in ids}


def accepted_by_sink(server: Any) -> list[str]:
    return [
        r.headers["webhook-id"]
        for r in server.requests("/shop")
        if r.status and 200 <= r.status < 300
    ]


def delivered(server: Any) -> set[str]:
    return set(accepted_by_sink(server))


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


async def _no_latency_tracking(redis: Any) -> None:
    # Redis before 7 has no such setting (nor the histograms).
    with contextlib.suppress(redis_errors.ResponseError):
        await redis.config_set("latency-tracking", "no")


class Flood:
    """Senders that post new webhooks until told to stop; each is sent once here."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.next = 0
        self.accepted: set[int] = set()
        self.shed: set[int] = set()
        self.other: list[int] = []  # any other answer (there must be none)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(self._sender(session) for _ in range(SENDERS)))

    async def _sender(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            if await self.send_one(session) == 503:
                await asyncio.sleep(0.2)  # a provider backs off too

    async def send_one(self, session: aiohttp.ClientSession) -> int:
        """Post the next new webhook once and file it by its answer; returns the status."""
        i, self.next = self.next, self.next + 1
        status, retry_after = await post(session, self.url, i)
        if status == 200:
            self.accepted.add(i)
        elif status == 503 and retry_after == "5":
            self.shed.add(i)
        else:
            self.other.append(status)
        return status


async def post(session: aiohttp.ClientSession, url: str, i: int) -> tuple[int, str | None]:
    async with session.post(
        f"{url}/hooks/ivpay", data=body(i), headers={"X-API-KEY": KEY}
    ) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def resend(url: str, ids: set[int], deadline_s: float = 20.0) -> set[int]:
    """Post each id until it is answered 200, as a provider retries a 503."""
    done: set[int] = set()
    queue = list(ids)
    stop_at = time.monotonic() + deadline_s

    async def sender(session: aiohttp.ClientSession) -> None:
        while queue and time.monotonic() < stop_at:
            i = queue.pop()
            while time.monotonic() < stop_at:
                if (await post(session, url, i))[0] == 200:
                    done.add(i)
                    break
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))
    return done


async def _over_the_line_at_rest(redis: Any, flood: Flood) -> None:
    """Once the senders are gone Redis frees their connections' buffers, which on a loaded
    machine can take its reading back under the shed line: send single webhooks (as a provider
    would, each once) until Redis reads over the line with no flood running."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(200):
            await asyncio.sleep(0.3)  # let the last connections close
            if memory_message(await read_memory(redis), 0.9):
                return
            await flood.send_one(session)
    raise AssertionError("Redis never read over the shed line at rest")


async def readyz(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def relay_status(config: Path, redis_url: str) -> dict[str, Any]:
    env = {**os.environ, **TEST_SECRETS, "REDIS_URL": redis_url, "RELAY_CONFIG": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "status",
        "--json",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_full_redis_sheds_then_drains_without_operator(
    tmp_path: Path, full_redis: EmbeddedRedis, sink_server: Any
) -> None:
    started = time.monotonic()
    url = full_redis.url
    redis = connect(url)
    config = write_config(
        tmp_path,
        {
            "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
            "sinks": {
                "shop": {
                    "type": "http",
                    "url": sink_server.url("/shop"),
                    "secret": WHSEC,
                    "timeout": "3s",
                }
            },
        },
    )
    web = RelayProcess("serve", config, tmp_path, url).start()
    worker: RelayProcess | None = None
    try:
        await web.ready()
        # Redis 7 allocates a ~22 KB latency histogram the first time each command runs: that
        # is Redis's bookkeeping, not what the relay stores, and would blur the headroom.
        await _no_latency_tracking(redis)
        limit = (await read_memory(redis)).used_bytes + HEADROOM_BYTES  # type: ignore[operator]
        await redis.config_set("maxmemory", limit)

        # 1. Flood with no worker until Redis itself reads over 90% and 503s keep coming.
        flood = Flood(web.url)
        senders = asyncio.create_task(flood.run())

        async def shedding() -> bool:
            return bool(memory_message(await read_memory(redis), 0.9)) and len(flood.shed) >= 50

        await wait_for(shedding, timeout=30, interval=0.1)
        shed_from = time.monotonic()
        await asyncio.sleep(1.5)  # keep flooding through one more reading of the ingress
        flood.stop.set()
        await senders
        shed_s = time.monotonic() - shed_from
        await _over_the_line_at_rest(redis, flood)
        assert not flood.other, flood.other
        memory = await read_memory(redis)
        assert memory.used_bytes is not None and memory.used_bytes < limit  # headroom kept

        # 2. Shedding is visible: /readyz names why, the 503s are counted, status is degraded.
        async def not_ready() -> Any:
            status_code, answer = await readyz(web.url)  # at the ingress's next reading
            return status_code == 503 and answer.get("error") == "redis_memory_high"

        await wait_for(not_ready, timeout=10, interval=0.2)

        async def counted() -> bool:
            raw = await redis.hget("relay:stats", "in:ivpay:unavailable")
            return raw is not None and int(raw) == len(flood.shed)

        await wait_for(counted, timeout=5)
        status = await relay_status(config, url)
        assert status["degraded"] is True and status["redis"]["shedding"] is True
        assert status["sources"]["ivpay"]["inbound"]["unavailable"] == len(flood.shed)

        # 3. A worker drains the backlog, with maxmemory untouched.
        drain_from = time.monotonic()
        worker = RelayProcess("worker", config, tmp_path, url).start()
        await worker.ready()
        want = expected(flood.accepted)
        try:
            await wait_for(lambda: delivered(sink_server) >= want, timeout=30, interval=0.2)
        except AssertionError:
            print(worker.output()[-3000:])
            raise
        drained_s = time.monotonic() - drain_from

        # 4. The ingress accepts again by itself; what it answered 503 is re-sent and delivered.
        async def ready() -> bool:
            return (await readyz(web.url))[0] == 200

        await wait_for(ready, timeout=10, interval=0.2)
        resent = await resend(web.url, flood.shed)
        assert resent == flood.shed
        everything = expected(flood.accepted | flood.shed)
        await wait_for(lambda: delivered(sink_server) >= everything, timeout=30, interval=0.2)

        errors = await redis.info("errorstats")
        assert "errorstat_OOM" not in errors, errors  # no write was ever refused
        sent = len(flood.accepted) + len(flood.shed)
        got = delivered(sink_server)
        print(
            f"\nfull Redis (noeviction, maxmemory {limit / 1048576:.1f} MiB): sent={sent} "
            f"answered_2xx={len(flood.accepted)} answered_503={len(flood.shed)} "
            f"delivered_of_2xx={len(want & got)} missing_of_2xx={len(want - got)} "
            f"duplicates={len(accepted_by_sink(sink_server)) - len(got)}; "
            f"backlog drained {drained_s:.1f}s after the worker started; the 503s re-sent: "
            f"{len(resent)} accepted, all delivered={everything <= got}; "
            f"shedding for {shed_s:.1f}s at {memory.fraction:.0%} of maxmemory, "
            f"OOM refusals 0; "
            f"test {time.monotonic() - started:.0f}s"
        )
        assert want - got == set()
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
        await redis.aclose()
