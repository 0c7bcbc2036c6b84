"""The default ~27 h retry schedule really runs: arq's expiry, tries and our state TTLs fit it."""

from __future__ import annotations

import random
import time
from typing import Any

from arq.constants import job_key_prefix, retry_key_prefix

from relay.attempt import Attempt, next_delay
from relay.config.types import RetryConfig
from relay.delivery import Pipeline
from relay.events import PaymentEvent, StoredEvent
from relay.keys import Keys
from relay.queue import deserialize
from relay.sinks import SINKS, RetryLater
from relay.sinks.client import SinkClient
from tests.conftest import TEST_SECRETS, wait_for, worker_idle
from workers.settings import MAX_TRIES

DEFAULT = RetryConfig()


def test_default_schedule_spans_more_than_a_day() -> None:
    """Eight attempts over about 27.5 hours, each delay within the jitter of its step."""
    assert len(DEFAULT.schedule) + 1 == 8
    assert 27 * 3600 < sum(DEFAULT.schedule) < 28 * 3600
    rng = random.Random(7)
    for attempt, base in enumerate(DEFAULT.schedule, start=1):
        delay = next_delay(DEFAULT, attempt, rng)
        assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert next_delay(DEFAULT, len(DEFAULT.schedule) + 1) is None


async def test_arq_try_budget_outlasts_restarts(
    ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """Arq counts every SIGTERM cancel and SIGKILL recovery as a try and drops a job past its
    `max_tries` (default 5). A stored webhook whose job was already tried 10,000 times (arq's
    own retry counter, as many restarts would leave it) is still delivered by a real worker."""
    raw = {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {"console": {"type": "log"}},
    }
    client = await ingress(raw)
    body = b'{"payment_id": "p-tries", "status": "PAID"}'
    response = await client.post(
        "/hooks/ivpay", data=body, headers={"X-API-KEY": TEST_SECRETS["IVPAY_API_KEY"]}
    )
    assert response.status == 200
    tries = 10_000
    assert tries < MAX_TRIES
    await redis.set(retry_key_prefix + (await response.json())["id"], tries)
    worker = await run_worker(config_factory(raw))
    await wait_for(lambda: worker_idle(worker, redis))
    assert await redis.hget("relay:stats", "dlv:console:delivered") == b"1"
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)  # not "max tries exceeded"


async def test_every_retry_job_outlives_its_wait(config_factory: Any, redis: Any) -> None:
    """Walking the whole default schedule, every queued retry job expires only a day after it is
    due, the delivery state outlives the schedule, and the last failure is dead-lettered."""
    shop = {
        "type": "http",
        "url": "https://shop.example/x",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
    loaded = config_factory({"sinks": {"shop": shop}})
    sinks = {name: SINKS[cfg.type](name, cfg) for name, cfg in loaded.config.sinks.items()}
    async with SinkClient() as client:
        pipeline = Pipeline(redis, loaded.config, sinks, client)
        event = PaymentEvent.build(
            source="ivpay",
            provider="ivpay",
            dedupe_key="k",
            type="payment.paid",
            provider_event="PAID",
            received_at=time.time(),
        )
        attempt = Attempt(StoredEvent(event.to_json()), "shop", 1, 0, time.time())
        keys = Keys()
        for step, base in enumerate(DEFAULT.schedule, start=1):
            await pipeline.record([(attempt, RetryLater("HTTP 503", 503))])
            state = (await redis.hget(keys.deliveries(event.id), "shop")).decode()
            job_id = state.removeprefix("job:")
            due_in = (await redis.zscore(keys.queue, job_id)) / 1000 - time.time()
            assert base * 0.8 - 1 <= due_in <= base * 1.2 + 1
            ttl = await redis.pttl(job_key_prefix + job_id) / 1000
            assert ttl >= due_in + 86_400 - 5  # arq's "job expired" cannot happen first
            remaining = sum(DEFAULT.schedule[step:])
            assert await redis.ttl(keys.deliveries(event.id)) > remaining
            job = deserialize(await redis.get(job_key_prefix + job_id))
            assert job["f"] == "deliver" and job["k"]["attempt"] == step + 1
            attempt = Attempt(attempt.event, "shop", step + 1, 0, attempt.received_at)
        await pipeline.record([(attempt, RetryLater("HTTP 503", 503))])
    assert (await redis.hget(keys.deliveries(event.id), "shop")) == b"dlq"
    (letter,) = await pipeline.dlq.recent()
    assert letter.attempts == 8 and letter.last_status == 503
