"""Fault tests of issue 8: Redis gone or partitioned for longer than `job_timeout`, a hung sink,
host clocks that are wrong. Real processes, a real Redis stopped or cut for real, real sinks.

Each test prints its figures (sent, answered 2xx, delivered, missing, duplicates); the
figures are copied into docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.embedded import EmbeddedRedis
from relay.events import event_id
from relay.monitor import take_snapshot
from relay.redis import connect
from tests.conftest import TEST_SECRETS, make_config, wait_for
from tests.processes import RelayProcess, write_config
from tests.sink_servers import Reply
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
KEY = TEST_SECRETS["IVPAY_API_KEY"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Long enough that a sink failing through a whole outage is never dead-lettered.
PATIENT = {"schedule": ["500ms", "1s"] + ["2s"] * 40}


def sink(server: Any, name: str, timeout: str = "3s", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "url": server.url(f"/{name}"),
        "secret": WHSEC,
        "timeout": timeout,
        "retry": PATIENT,
        **extra,
    }


def relay_config(redis_url: str, sinks: dict[str, Any], **worker: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": sinks,
        "worker": {"job_timeout": "10s", **worker},
    }


def body(i: int, tag: str) -> bytes:
    return orjson.dumps({"payment_id": f"{tag}-{i}", "status": "PAID", "foreign_id": str(i)})


def evt(i: int, tag: str) -> str:
    return event_id("ivpay", f"{tag}-{i}:PAID")


def received(server: Any, name: str) -> Counter[str]:
    """How many times each event id was accepted (2xx) by one sink."""
    return Counter(
        r.headers["webhook-id"]
        for r in server.requests(f"/{name}")
        if r.status and 200 <= r.status < 300
    )


class Provider:
    """Posts webhooks like a provider: retries on 503 or a refused connection; remembers
    which were answered 2xx and when each was first sent."""

    def __init__(self, url: str, tag: str) -> None:
        self.url, self.tag = url, tag
        self.accepted: set[int] = set()
        self.answered_503 = 0
        self.sent_at: dict[str, float] = {}

    async def post(self, session: aiohttp.ClientSession, i: int, deadline: float) -> None:
        self.sent_at.setdefault(evt(i, self.tag), time.time())
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    f"{self.url}/hooks/ivpay", data=body(i, self.tag), headers={"X-API-KEY": KEY}
                ) as response:
                    if response.status == 200:
                        self.accepted.add(i)
                        return
                    self.answered_503 += response.status == 503
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.3)

    async def run(self, count: int, rate: float, seconds: float = 120.0) -> None:
        """`count` webhooks at `rate` per second (each retried until answered 2xx)."""
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            tasks = []
            for i in range(count):
                tasks.append(asyncio.create_task(self.post(session, i, deadline)))
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)

    def want(self) -> set[str]:
        return {evt(i, self.tag) for i in self.accepted}


def figures(label: str, provider: Provider, count: int, server: Any, names: list[str]) -> dict:
    want = provider.want()
    missing = {n: len(want - set(received(server, n))) for n in names}
    duplicates = {n: sum(c - 1 for c in received(server, n).values()) for n in names}
    print(
        f"\n{label}: sent={count} answered_2xx={len(provider.accepted)} "
        f"answered_503={provider.answered_503} delivered="
        f"{ {n: len(want & set(received(server, n))) for n in names} } "
        f"missing={missing} duplicates={duplicates}"
    )
    return missing


async def until_delivered(
    provider: Provider, server: Any, names: list[str], timeout: float, *processes: RelayProcess
) -> None:
    want = provider.want()
    try:
        await wait_for(
            lambda: all(set(received(server, n)) >= want for n in names),
            timeout=timeout,
            interval=0.5,
        )
    except AssertionError:
        missing = {n: len(want - set(received(server, n))) for n in names}
        logs = "\n".join(p.output()[-3000:] for p in processes)
        raise AssertionError(f"missing {missing} of {len(want)}\n{logs}") from None


async def test_redis_down_longer_than_job_timeout_loses_nothing(
    tmp_path: Path, sink_server: Any
) -> None:
    """Redis stopped for 15 s (job_timeout 10 s) under load, one sink answering 500 after 1 s:
    once Redis and the sink are back, every 2xx-answered webhook reaches every sink."""
    sink_server.script("/slow", [Reply(500, "busy", delay=1.0)] * 250)
    names = ["slow", "a", "b"]
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    try:
        config = write_config(
            tmp_path,
            relay_config(server.url, {n: sink(sink_server, n) for n in names}, concurrency=50),
        )
        web = RelayProcess("serve", config, tmp_path, server.url).start()
        worker = RelayProcess("worker", config, tmp_path, server.url).start()
        await web.ready()
        await worker.ready()
        provider = Provider(web.url, "outage")
        load = asyncio.create_task(provider.run(400, rate=40))
        await wait_for(lambda: len(provider.accepted) >= 120, timeout=30)
        await wait_for(lambda: len(sink_server.requests("/slow")) >= 30, timeout=30)
        server.stop()
        stopped = time.monotonic()
        await asyncio.sleep(15)
        server.start()
        await load
        await until_delivered(provider, sink_server, names, 150, worker, web)
        print(f"\nevery sink complete {time.monotonic() - stopped:.0f}s after Redis stopped")
        missing = figures("Redis down 15s (job_timeout 10s)", provider, 400, sink_server, names)
        assert not any(missing.values())
        client = connect(server.url)
        assert await client.zcard("relay:dlq:index") == 0
        await client.aclose()
        assert web.alive() and worker.alive()
    finally:
        for process in (locals().get("worker"), locals().get("web")):
            if process is not None:
                process.stop()
        server.stop()


async def test_half_open_partition_longer_than_job_timeout_loses_nothing(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    """The worker's path to Redis goes silent (sockets open, no bytes pass) for 15 s with jobs
    in flight (job_timeout 10 s); after the heal every 2xx-answered webhook is delivered."""
    sink_server.script("/slow", [Reply(500, "busy", delay=1.0)] * 250)
    names = ["slow", "a", "b"]
    proxy = TcpProxy.for_url(redis_url).start_in_thread()
    try:
        config = write_config(
            tmp_path,
            relay_config(redis_url, {n: sink(sink_server, n) for n in names}, concurrency=50),
        )
        web = RelayProcess("serve", config, tmp_path, redis_url).start()
        worker = RelayProcess("worker", config, tmp_path, proxy.proxied_url(redis_url)).start()
        await web.ready()
        await worker.ready()
        provider = Provider(web.url, "partition")
        load = asyncio.create_task(provider.run(400, rate=40))
        await wait_for(lambda: len(sink_server.requests("/slow")) >= 30, timeout=30)
        proxy.freeze()
        await asyncio.sleep(15)
        proxy.thaw()
        await load
        await until_delivered(provider, sink_server, names, 150, worker)
        missing = figures(
            "half-open partition 15s (job_timeout 10s)", provider, 400, sink_server, names
        )
        assert not any(missing.values())
        assert await redis.zcard("relay:dlq:index") == 0
        assert web.alive() and worker.alive()
    finally:
        for process in (locals().get("worker"), locals().get("web")):
            if process is not None:
                process.stop()
        proxy.close()


async def test_hung_sink_does_not_slow_the_others(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    """30 events/s for 15 s while one sink never answers (15 s timeout, default concurrency):
    a healthy sink's receipt-to-delivery p50 stays under a second."""
    sink_server.script("/hung", [Reply.hang(60)] * 2000)
    sinks = {"hung": sink(sink_server, "hung", timeout="15s"), "fast": sink(sink_server, "fast")}
    config = write_config(tmp_path, relay_config(redis_url, sinks, job_timeout="25s"))
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    try:
        await web.ready()
        await worker.ready()
        provider = Provider(web.url, "hung")
        await provider.run(450, rate=30)
        await until_delivered(provider, sink_server, ["fast"], 30, worker)
        arrivals = {r.headers["webhook-id"]: r.at for r in sink_server.requests("/fast")}
        latencies = sorted(arrivals[e] - provider.sent_at[e] for e in provider.want())
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
        hung = len(sink_server.requests("/hung"))
        print(
            f"\nhung sink: healthy sink p50={p50 * 1000:.0f}ms p99={p99 * 1000:.0f}ms over "
            f"{len(latencies)} events; {hung} requests reached the hung sink"
        )
        assert p50 < 1.0
    finally:
        worker.stop()
        web.stop()


async def test_workers_with_wrong_clocks_deliver_and_sign_with_the_right_time(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    """A worker 10 minutes behind and an ingress 10 minutes ahead: every event is delivered
    promptly, `webhook-timestamp` is the true time, and status sees the worker alive."""
    config = write_config(tmp_path, relay_config(redis_url, {"shop": sink(sink_server, "shop")}))
    web = RelayProcess("serve", config, tmp_path, redis_url, clock_shift_s=600).start()
    worker = RelayProcess("worker", config, tmp_path, redis_url, clock_shift_s=-600).start()
    try:
        await web.ready()
        await worker.ready()
        provider = Provider(web.url, "clock")
        await provider.run(30, rate=30)
        await until_delivered(provider, sink_server, ["shop"], 20, worker)
        requests = sink_server.requests("/shop")
        skew = max(abs(int(r.headers["webhook-timestamp"]) - r.at) for r in requests)
        print(
            f"\nclocks -600s/+600s: {len(requests)} delivered, webhook-timestamp off by at most "
            f"{skew:.1f}s"
        )
        assert skew < 5
        status = await take_snapshot(redis, make_config({"sinks": {}}, redis_url).config)
        assert len(status.workers) == 1
    finally:
        worker.stop()
        web.stop()
