"""Fault tests: SIGKILLed workers, SIGTERM under load, a Redis restart. Nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.embedded import EmbeddedRedis
from relay.redis import connect
from tests.conftest import TEST_SECRETS, wait_for
from tests.processes import RelayProcess, write_config
from tests.sink_servers import Reply

pytestmark = pytest.mark.slow
KEY = TEST_SECRETS["IVPAY_API_KEY"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SINKS = ("a", "b", "c")


def relay_config(redis_url: str, server: Any, **worker: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            name: {
                "type": "http",
                "url": server.url(f"/{name}"),
                "secret": WHSEC,
                "timeout": "3s",
                "retry": {"schedule": ["200ms", "500ms", "1s", "2s"]},
            }
            for name in SINKS
        },
        "worker": {"job_timeout": "10s", **worker},
    }


def body(i: int) -> bytes:
    return orjson.dumps({"payment_id": f"fault-{i}", "status": "PAID", "foreign_id": str(i)})


def received(server: Any, sink: str) -> Counter[str]:
    """How many times each event id was accepted (2xx) by one sink."""
    return Counter(
        r.headers["webhook-id"]
        for r in server.requests(f"/{sink}")
        if r.status and 200 <= r.status < 300
    )


async def post_all(
    url: str, count: int, accepted: list[str], concurrency: int = 20, deadline_s: float = 90.0
) -> None:
    """Post `count` webhooks like a provider: retry on 503 or a refused connection."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    stop_at = time.monotonic() + deadline_s

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            while time.monotonic() < stop_at:
                try:
                    async with session.post(
                        f"{url}/hooks/ivpay", data=body(i), headers={"X-API-KEY": KEY}
                    ) as response:
                        if response.status == 200:
                            accepted.append((await response.json())["id"])
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))


def expected_ids(count: int) -> set[str]:
    from relay.events import event_id

    return {event_id("ivpay", f"fault-{i}:PAID") for i in range(count)}


async def test_sigkilled_workers_lose_nothing(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    """1000 events while the worker is SIGKILLed three times: every sink gets every event."""
    for name in SINKS:  # slow answers keep deliveries in flight when the kills land
        sink_server.script(f"/{name}", [Reply(200, "ok", delay=0.03)] * 4000)
    config = write_config(tmp_path, relay_config(redis_url, sink_server, concurrency=30))
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    await web.ready()
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await worker.ready()
    accepted: list[str] = []
    load = asyncio.create_task(post_all(web.url, 1000, accepted))
    kills = 0
    for threshold in (300, 1200, 2100):  # accepted sink requests, out of 3000
        await wait_for(lambda t=threshold: len(sink_server.requests()) >= t, timeout=60)
        worker.kill()
        kills += 1
        last_kill = time.monotonic()
        worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await load
    assert len(accepted) == 1000
    want = expected_ids(1000)

    def complete() -> bool:
        return all(set(received(sink_server, s)) >= want for s in SINKS)

    try:
        await wait_for(complete, timeout=120, interval=0.5)
    finally:
        worker.stop()
        web.stop()
    recovery = time.monotonic() - last_kill
    duplicates = sum(sum(n - 1 for n in received(sink_server, s).values()) for s in SINKS)
    missing = sum(len(want - set(received(sink_server, s))) for s in SINKS)
    print(
        f"\nSIGKILL x{kills}: missing={missing} duplicates={duplicates} "
        f"all delivered {recovery:.1f}s after the last kill"
    )
    assert missing == 0
    assert duplicates <= 30 * len(SINKS) * kills  # at most what was in flight at each kill
    assert recovery < 120


async def test_sigterm_under_load_loses_nothing(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    """SIGTERM to the ingress and the worker under load: both exit in time, nothing is lost."""
    for name in SINKS:
        sink_server.script(f"/{name}", [Reply(200, "ok", delay=0.05)] * 3000)
    config = write_config(tmp_path, relay_config(redis_url, sink_server, concurrency=20))
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    await web.ready()
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await worker.ready()
    accepted: list[str] = []
    load = asyncio.create_task(post_all(web.url, 600, accepted, concurrency=10))
    await wait_for(lambda: len(accepted) >= 150, timeout=30)

    # The ingress: SIGTERM mid-load; it finishes what it has and exits; a new one takes over.
    began = time.monotonic()
    web.signal(signal.SIGTERM)
    assert web.wait(30) == 0
    web_exit = time.monotonic() - began
    web = RelayProcess("serve", config, tmp_path, redis_url, port=web.port).start()
    await web.ready()

    # The worker: SIGTERM with deliveries in flight; it must exit well inside 30 s.
    await wait_for(lambda: len(sink_server.requests()) >= 300, timeout=30)
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    worker_exit = time.monotonic() - began
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await load
    want = expected_ids(600)
    try:
        await wait_for(
            lambda: all(set(received(sink_server, s)) >= want for s in SINKS),
            timeout=60,
            interval=0.5,
        )
    except AssertionError:
        missing = {s: len(want - set(received(sink_server, s))) for s in SINKS}
        queue = await redis.zrange("relay:queue", 0, 5, withscores=True)
        raise AssertionError(
            f"missing {missing}; queue head {queue}; now {time.time()}; "
            f"accepted {len(accepted)}\n{worker.output()}"
        ) from None
    finally:
        worker.stop()
        web.stop()
    assert len(accepted) == 600
    print(
        f"\nSIGTERM: ingress exited in {web_exit:.2f}s, worker in {worker_exit:.2f}s; "
        f"0 missing of {len(want)} x {len(SINKS)}"
    )
    assert worker_exit < 25


async def test_redis_restart_is_ridden_out(tmp_path: Path, sink_server: Any) -> None:
    """Redis restarts under both processes: ingress answers 503 meanwhile, neither crashes,
    and every webhook that got a 200 is delivered."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    try:
        config = write_config(tmp_path, relay_config(server.url, sink_server))
        web = RelayProcess("serve", config, tmp_path, server.url).start()
        await web.ready()
        worker = RelayProcess("worker", config, tmp_path, server.url).start()
        await worker.ready()
        accepted: list[str] = []
        await post_all(web.url, 50, accepted)
        server.stop()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{web.url}/hooks/ivpay", data=body(9999), headers={"X-API-KEY": KEY}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
            async with session.get(f"{web.url}/readyz") as response:
                assert response.status == 503
        await asyncio.sleep(2)
        server.start()
        await post_all(web.url, 100, accepted)  # 50 new; the first 50 are byte-identical repeats
        want = expected_ids(100)
        try:
            await wait_for(
                lambda: all(set(received(sink_server, s)) >= want for s in SINKS),
                timeout=60,
                interval=0.5,
            )
            assert web.alive() and worker.alive(), worker.output()
        except AssertionError:
            missing = {s: len(want - set(received(sink_server, s))) for s in SINKS}
            raise AssertionError(
                f"missing {missing}, accepted {len(accepted)}, worker alive "
                f"{worker.alive()}:\n{worker.output()}"
            ) from None
        finally:
            worker.stop()
            web.stop()
        client = connect(server.url)
        assert await client.zcard("relay:dlq:index") == 0
        await client.aclose()
    finally:
        server.stop()
