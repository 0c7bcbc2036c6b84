"""One sick sink costs only itself: a hung sink holds at most `max_in_flight` slots, a 429
storm is answered with about one request a second, and absurd waits never dead-letter an
inbound request. Real worker, real Redis, real local HTTP sinks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from relay.events import event_id
from tests.conftest import wait_for
from tests.sink_servers import Reply

KEY = "ivpay-test-api-key-0001"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LONG = {"schedule": ["30s"] * 5, "jitter": 0.1}  # nothing comes back during a test


def raw_config(sinks: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": sinks,
    }


def http_sink(server: Any, path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "url": server.url(path), "secret": WHSEC, "retry": LONG, **extra}


async def post_many(client: Any, count: int, tag: str) -> set[str]:
    ids = set()
    for i in range(count):
        body = orjson.dumps({"payment_id": f"{tag}-{i}", "status": "PAID", "foreign_id": str(i)})
        response = await client.post("/hooks/ivpay", data=body, headers={"X-API-KEY": KEY})
        assert response.status == 200, await response.text()
        ids.add(event_id("ivpay", f"{tag}-{i}:PAID"))
    return ids


def accepted_ids(server: Any, path: str) -> set[str]:
    return {r.headers["webhook-id"] for r in server.requests(path) if 200 <= (r.status or 0) < 300}


async def stats(redis: Any) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall("relay:stats")).items()}


async def test_a_hung_sink_holds_at_most_its_in_flight_cap(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: Any, redis: Any
) -> None:
    """20 events, a sink that never answers with max_in_flight 3: three requests reach it, the
    other deliveries fail fast as `saturated` and wait for their retry, the healthy sink gets
    all 20 at once."""
    sink_server.script("/hung", [Reply.hang(20)] * 100)
    raw = raw_config(
        {
            "hung": http_sink(sink_server, "/hung", timeout="15s", max_in_flight=3),
            "fast": http_sink(sink_server, "/fast"),
        }
    )
    client = await ingress(raw)
    await run_worker(config_factory(raw), max_jobs=50)
    began = time.monotonic()
    want = await post_many(client, 20, "cap")
    await wait_for(lambda: accepted_ids(sink_server, "/fast") >= want, timeout=5)
    fast_done = time.monotonic() - began
    await wait_for(lambda: _field(redis, "dlv:hung:retry", 17), timeout=5)
    assert len(sink_server.requests("/hung")) == 3
    health = await redis.hget("relay:sink:hung", "last_error")
    assert b"saturated" in health
    assert await redis.zcard("relay:dlq:index") == 0
    assert fast_done < 5


async def _field(redis: Any, name: str, at_least: int) -> bool:
    value = await redis.hget("relay:stats", name)
    return int(value or 0) >= at_least


async def test_a_429_storm_costs_about_one_request_a_second(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: Any, redis: Any
) -> None:
    """A Discord webhook answering 429 with retry_after 0 to everything: after the first burst
    it is asked about once a second, the other sink gets every event, nothing dead-letters."""
    sink_server.script(
        sink_server.discord_url(), [Reply.discord_rate_limited(0, header="0")] * 5000
    )
    raw = raw_config(
        {
            "storm": {"type": "discord", "url": sink_server.discord_url(), "retry": LONG},
            "shop": http_sink(sink_server, "/shop"),
        }
    )
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    want = await post_many(client, 50, "storm")
    await wait_for(lambda: accepted_ids(sink_server, "/shop") >= want, timeout=5)
    burst = len(sink_server.requests(sink_server.discord_url()))
    began = time.monotonic()
    await asyncio.sleep(8)
    later = len(sink_server.requests(sink_server.discord_url())) - burst
    seconds = time.monotonic() - began
    print(
        f"\n429 storm: {burst} requests in the first burst (50 events), then {later} in "
        f"{seconds:.1f}s ({later / seconds:.1f}/s)"
    )
    assert burst <= 50  # each event's first attempt at most, before the first 429 was seen
    assert later <= 3 * seconds
    assert await redis.zcard("relay:dlq:index") == 0


async def test_absurd_retry_after_neither_dead_letters_nor_spins(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: Any, redis: Any
) -> None:
    """`Retry-After: inf`, `1e400`, `nan`, `-5` on a first attempt: the inbound request is not
    dead-lettered, the other sink has the event, and the sink is not asked again at once."""
    values = ["inf", "1e400", "nan", "-5"]
    sink_server.script(
        "/odd",
        [Reply.error(503, headers={"Retry-After": v}) for v in values]
        + [Reply.rate_limited(v) for v in values],
    )
    raw = raw_config(
        {"odd": http_sink(sink_server, "/odd"), "shop": http_sink(sink_server, "/shop")}
    )
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    want = await post_many(client, 8, "odd")
    await wait_for(lambda: accepted_ids(sink_server, "/shop") >= want, timeout=5)

    async def all_waiting() -> bool:
        counters = await stats(redis)
        return counters.get("dlv:odd:retry", 0) + counters.get("dlv:odd:rate_limited", 0) >= 8

    await wait_for(all_waiting, timeout=5)
    sent = len(sink_server.requests("/odd"))
    await asyncio.sleep(1.5)
    # Each waits its schedule (30 s) or, after a 429, the sink's gate: nothing is sent again.
    assert len(sink_server.requests("/odd")) == sent <= 8
    assert await redis.zcard("relay:dlq:index") == 0
    assert (await stats(redis)).get("in:ivpay:dead_lettered", 0) == 0
