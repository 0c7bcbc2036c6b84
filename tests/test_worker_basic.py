"""The worker path with a log sink: normalize, dedupe, deliver, record."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.conftest import wait_for, worker_idle

KEY = "ivpay-test-api-key-0001"
CONFIG = {
    "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
    "sinks": {"console": {"type": "log"}},
}


def body(status: str = "PAID", extra: str = "") -> bytes:
    return orjson.dumps({"payment_id": "p1", "status": status, "foreign_id": "o1", "x": extra})


async def test_event_is_delivered_to_log_sink(
    ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """A stored webhook is normalized and marked delivered for the log sink."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/ivpay", data=body(), headers={"X-API-KEY": KEY})
    assert response.status == 200
    worker = await run_worker(config_factory(CONFIG))
    await wait_for(lambda: worker_idle(worker, redis))
    assert await redis.hget("relay:stats", "dlv:console:delivered") == b"1"
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)


async def test_semantic_duplicate_is_dropped(
    ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """Two different bodies carrying the same payment and status reach the sink once."""
    client = await ingress(CONFIG)
    for extra in ("a", "b"):
        response = await client.post(
            "/hooks/ivpay", data=body(extra=extra), headers={"X-API-KEY": KEY}
        )
        assert response.status == 200
    worker = await run_worker(config_factory(CONFIG))
    # Both jobs finished (not just the duplicate counted): nothing more can be delivered.
    await wait_for(lambda: worker_idle(worker, redis))
    stats = await redis.hgetall("relay:stats")
    assert stats[b"in:ivpay:stored"] == b"2" and stats[b"evt:ivpay:duplicate"] == b"1"
    assert stats[b"dlv:console:delivered"] == b"1"
    assert worker.jobs_complete == 2 and worker.jobs_failed == worker.jobs_retried == 0


async def test_an_idle_worker_wakes_on_enqueue_not_on_its_tick(
    ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """With a 30 s poll tick, a stored webhook still runs at once: the store pushes a wake
    token the idle worker blocks on (SPEC-free latency work of issue 16)."""
    client = await ingress(CONFIG)
    await run_worker(config_factory(CONFIG), poll_delay=30.0)
    await asyncio.sleep(0.3)  # the worker is now blocked between ticks
    response = await client.post(
        "/hooks/ivpay", data=body(extra="wake"), headers={"X-API-KEY": KEY}
    )
    assert response.status == 200

    async def delivered() -> bool:
        return await redis.hget("relay:stats", "dlv:console:delivered") == b"1"

    await wait_for(delivered, timeout=10)  # long before the 30 s tick
    assert await redis.llen("relay:wake") <= 1  # capped at one token
