"""The event log end to end (SPEC 9): a real worker, a real Redis, real local sinks.

Find by every id, every attempt kept, pause and resume, replay and backfill.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay import pause, replay
from relay.keys import Keys
from relay.ledger import query
from tests.conftest import wait_for
from tests.sink_servers import SinkServer

KEY = "ivpay-test-api-key-0001"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"schedule": ["50ms", "50ms", "50ms"], "jitter": 0.1}
KEYS = Keys()
TX = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"


def config(server: SinkServer, *, with_new: bool = False, **shop: Any) -> dict[str, Any]:
    sinks: dict[str, Any] = {
        "shop": {
            "type": "http",
            "url": server.url("/shop"),
            "secret": WHSEC,
            "retry": FAST,
            **shop,
        },
        "ops": {"type": "slack", "url": server.slack_url(), "retry": FAST},
    }
    if with_new:
        sinks["new"] = {"type": "http", "url": server.url("/new"), "secret": WHSEC}
    return {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": sinks,
    }


def body(payment_id: str, status: str = "PAID", order: str = "order-77") -> bytes:
    return orjson.dumps(
        {
            "payment_id": payment_id,
            "status": status,
            "foreign_id": order,
            "network": "ETH",
            "tx_url": f"https://etherscan.io/tx/{TX}",
        }
    )


async def post(client: Any, payload: bytes) -> str:
    response = await client.post("/hooks/ivpay", data=payload, headers={"X-API-KEY": KEY})
    assert response.status == 200, await response.text()
    return str((await response.json())["id"])


def accepted(server: SinkServer, path: str) -> list[str]:
    return [r.headers["webhook-id"] for r in server.requests(path) if r.status == 200]


async def settled(redis: Any, event_id: str, sink: str, state: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        record = await query.show(redis, KEYS, event_id)
        if record is None:
            return None
        states = {d["sink"]: d["state"] for d in record["deliveries"]}
        return record if states.get(sink) == state else None

    found: dict[str, Any] = await wait_for(ready)
    return found


async def only_event(redis: Any, inbound_id: str) -> str:
    shown = await wait_for(lambda: query.show(redis, KEYS, inbound_id))
    assert len(shown["events"]) == 1
    return str(shown["events"][0]["id"])


async def test_an_event_is_found_by_each_of_its_ids(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    inbound_id = await post(client, body("pay-1"))
    event_id = await only_event(redis, inbound_id)
    record = await settled(redis, event_id, "shop", "delivered")
    assert record["inbound_id"] == inbound_id
    assert record["payment"]["reference"] == "order-77"
    assert record["event"]["id"] == event_id
    for ident in ("pay-1", "order-77", TX, inbound_id, event_id):
        [payment] = await query.find_payments(redis, KEYS, ident)
        assert payment["payment_id"] == "pay-1", ident
        assert [e["id"] for e in payment["events"]] == [event_id], ident
    assert await query.find_payments(redis, KEYS, "nothing-like-it") == []
    assert await query.show(redis, KEYS, "evt_" + "a" * 26) is None


async def test_a_failed_then_delivered_attempt_shows_both(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    sink_server.script("/shop", [503, 200])
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    event_id = await only_event(redis, await post(client, body("pay-2")))
    record = await settled(redis, event_id, "shop", "delivered")
    [shop] = [d for d in record["deliveries"] if d["sink"] == "shop"]
    first, second = shop["attempts"]
    assert (first["number"], first["outcome"], first["status"]) == (1, "retry", 503)
    assert first["next_attempt_at"] is not None
    assert first["duration_ms"] is not None
    assert (second["number"], second["outcome"], second["status"]) == (2, "delivered", 200)
    listed = await query.list_events(redis, KEYS, query.EventFilter(sink="shop", state="delivered"))
    assert [e["id"] for e in listed] == [event_id]


async def test_pause_holds_and_resume_releases_in_order(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    loaded = config_factory(raw)
    client = await ingress(raw)
    worker = await run_worker(loaded)
    await pause.pause(redis, KEYS, "shop")
    ids = [await only_event(redis, await post(client, body(f"pay-p{i}"))) for i in range(6)]
    for event_id in ids:
        await settled(redis, event_id, "shop", "paused")
        await settled(redis, event_id, "ops", "delivered")  # the other sink is not held
    assert (await pause.state(redis, KEYS, "shop")).held == len(ids)
    assert accepted(sink_server, "/shop") == []
    await run_worker.stop(worker)  # so the queue can be read as resume leaves it
    released = await pause.resume(redis, KEYS, loaded.config, "shop")
    assert released == len(ids)
    queued = [j.decode() for j in await redis.zrange(KEYS.queue, 0, -1)]
    assert [j.split("_")[2] for j in queued] == [i.split("_")[1] for i in ids]  # order received
    await run_worker(loaded)
    await wait_for(lambda: len(accepted(sink_server, "/shop")) == len(ids))
    assert sorted(accepted(sink_server, "/shop")) == sorted(ids)
    for event_id in ids:
        record = await settled(redis, event_id, "shop", "delivered")
        [shop] = [d for d in record["deliveries"] if d["sink"] == "shop"]
        assert [a["number"] for a in shop["attempts"]] == [1]  # no attempt used by the pause
    assert not (await pause.state(redis, KEYS, "shop")).paused


async def test_a_due_retry_of_a_paused_sink_is_held_with_its_attempt_number(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server, retry={"schedule": ["1s", "1s"], "jitter": 0})
    loaded = config_factory(raw)
    sink_server.script("/shop", [503])
    client = await ingress(raw)
    await run_worker(loaded)
    event_id = await only_event(redis, await post(client, body("pay-r")))
    await settled(redis, event_id, "shop", "retrying")
    await pause.pause(redis, KEYS, "shop")
    await settled(redis, event_id, "shop", "paused")
    await pause.resume(redis, KEYS, loaded.config, "shop")
    record = await settled(redis, event_id, "shop", "delivered")
    [shop] = [d for d in record["deliveries"] if d["sink"] == "shop"]
    assert [(a["number"], a["outcome"]) for a in shop["attempts"]] == [
        (1, "retry"),
        (2, "delivered"),
    ]


async def test_pause_for_a_while_resumes_by_itself(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    loaded = config_factory(raw)
    client = await ingress(raw)
    await run_worker(loaded)
    await pause.pause(redis, KEYS, "shop", for_s=1.0)
    event_id = await only_event(redis, await post(client, body("pay-f")))
    await settled(redis, event_id, "shop", "paused")
    await wait_for(lambda: pause.resume_expired(redis, KEYS, loaded.config), timeout=5)
    await settled(redis, event_id, "shop", "delivered")


async def test_replay_backfills_a_sink_added_later_and_dry_run_sends_nothing(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    client = await ingress(raw)
    worker = await run_worker(config_factory(raw))
    ids = [await only_event(redis, await post(client, body(f"pay-b{i}"))) for i in range(3)]
    for event_id in ids:
        await settled(redis, event_id, "shop", "delivered")
    await run_worker.stop(worker)
    later = config_factory(config(sink_server, with_new=True))
    flt = query.EventFilter(since=query.parse_when("1h", await _now(redis)))
    dry = await replay.plan(redis, later.config, flt=flt, sinks=["new"])
    assert sorted(p.event_id for p in dry.deliveries) == sorted(ids)
    assert sink_server.requests("/new") == []
    await run_worker(later)
    queued = await replay.run(redis, later.config, dry.deliveries)
    assert queued == len(ids)
    await wait_for(lambda: len(accepted(sink_server, "/new")) == len(ids))
    assert sorted(accepted(sink_server, "/new")) == sorted(ids)  # the original event ids
    assert len(accepted(sink_server, "/shop")) == len(ids)  # nothing resent elsewhere


async def test_a_resend_keeps_the_earlier_attempts(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    loaded = config_factory(raw)
    client = await ingress(raw)
    await run_worker(loaded)
    event_id = await only_event(redis, await post(client, body("pay-x")))
    await settled(redis, event_id, "shop", "delivered")
    planned = await replay.plan(redis, loaded.config, ids=[event_id], sinks=["shop"])
    assert [p.replay for p in planned.deliveries] == [1]
    await replay.run(redis, loaded.config, planned.deliveries)
    await wait_for(lambda: len(accepted(sink_server, "/shop")) == 2)
    assert accepted(sink_server, "/shop") == [event_id, event_id]

    async def both_rounds() -> bool:
        record = await query.show(redis, KEYS, event_id)
        [shop] = [d for d in record["deliveries"] if d["sink"] == "shop"] if record else [{}]
        return [(a["replay"], a["number"]) for a in shop.get("attempts", [])] == [(0, 1), (1, 1)]

    await wait_for(both_rounds)
    missing = await replay.plan(redis, loaded.config, ids=["evt_" + "b" * 26])
    assert missing.not_found == ["evt_" + "b" * 26]


async def _now(redis: Any) -> float:
    seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6
