"""The real worker against a real Redis and real local merchant, Discord and Slack servers."""

from __future__ import annotations

from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from relay.dlq import DeadLetterQueue
from relay.keys import Keys
from tests.conftest import wait_for
from tests.sink_servers import Reply, SinkServer, discord_pings

KEY = "ivpay-test-api-key-0001"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCHEDULE = ["50ms", "50ms", "50ms", "50ms"]
FAST = {"schedule": SCHEDULE, "jitter": 0.1}


def config(server: Any, **sink_overrides: Any) -> dict[str, Any]:
    sinks: dict[str, Any] = {
        "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC, "retry": FAST},
        "ops": {
            "type": "discord",
            "url": server.discord_url(),
            "project": "Acme Store",
            "retry": FAST,
        },
        "sales": {"type": "slack", "url": server.slack_url(), "retry": FAST},
    }
    for name, override in sink_overrides.items():
        sinks[name] = {**sinks[name], **override}
    return {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": sinks,
    }


def paid(payment_id: str, status: str = "PAID", note: str = "") -> bytes:
    return orjson.dumps(
        {
            "payment_id": payment_id,
            "status": status,
            "foreign_id": "o-1",
            "network": "ETH",
            "note": note,
            "tx_url": "https://etherscan.io/tx/0xabc",
        }
    )


async def post(client: Any, body: bytes) -> dict[str, Any]:
    response = await client.post("/hooks/ivpay", data=body, headers={"X-API-KEY": KEY})
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def accepted(server: Any, path: str) -> list[Any]:
    """The requests the endpoint answered with 2xx."""
    return [r for r in server.requests(path) if 200 <= (r.status or 0) < 300]


def delivered_ids(server: Any, path: str) -> list[str]:
    """Merchant event ids accepted, one entry per accepted request (duplicates show twice)."""
    return [r.headers["webhook-id"] for r in accepted(server, path)]


async def start(ingress: Any, run_worker: Any, config_factory: Any, raw: dict[str, Any]) -> Any:
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    return client


async def test_delivers_to_all_three_kinds(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer
) -> None:
    """One payment reaches the merchant (signed), Discord and Slack once each."""
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    await post(client, paid("p-all"))
    for url in (sink_server.url("/shop"), sink_server.discord_url(), sink_server.slack_url()):
        await sink_server.wait_for_requests(1, url)
    (merchant,) = sink_server.requests("/shop")
    event = Webhook(WHSEC).verify(merchant.body, dict(merchant.headers))
    assert event["type"] == "payment.paid" and event["payment"]["id"] == "p-all"
    assert merchant.headers["webhook-id"] == event["id"]
    (discord,) = sink_server.requests(sink_server.discord_url())
    assert discord.query.get("wait") == "true"
    assert discord.json()["allowed_mentions"] == {"parse": []}
    assert not discord.violations
    (slack,) = sink_server.requests(sink_server.slack_url())
    assert slack.json()["text"] and not slack.violations


async def test_sink_down_for_a_while_gets_every_event_once(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """A merchant answering 500 for a while receives every event after it recovers, once each."""
    sink_server.script("/shop", [500] * 12)
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    ids = [(await post(client, paid(f"p-down-{i}")))["id"] for i in range(6)]
    await wait_for(lambda: len(delivered_ids(sink_server, "/shop")) >= 6, timeout=15)
    got = delivered_ids(sink_server, "/shop")
    assert len(got) == len(set(got)) == 6
    assert len(ids) == 6 and len(sink_server.requests("/shop")) > 6  # failures happened first
    assert await redis.zcard("relay:dlq:index") == 0


async def test_permanent_failure_is_dead_lettered_then_replayed(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """A 404 goes straight to the dead-letter queue with its status; replay delivers it."""
    sink_server.script("/shop", [Reply.error(404, "no such hook")])
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    await post(client, paid("p-404"))
    await wait_for(lambda: redis.zcard("relay:dlq:index"))
    dlq = DeadLetterQueue(redis, Keys())
    (letter,) = await dlq.recent()
    assert (letter.sink, letter.last_status, letter.attempts) == ("shop", 404, 1)
    assert "no such hook" in letter.excerpt
    assert await redis.hget("relay:sink:shop", "gone") == b"1"
    assert await dlq.replay([letter]) == 1
    await wait_for(lambda: len(delivered_ids(sink_server, "/shop")) == 1)
    assert await dlq.size() == 0
    await wait_for(lambda: redis.hget("relay:sink:shop", "gone"), timeout=5)
    assert await redis.hget("relay:sink:shop", "gone") == b"0"  # flag cleared by the success


async def test_exhausted_schedule_is_dead_lettered(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """After every attempt of the schedule fails, the delivery is dead-lettered with the count."""
    sink_server.script("/shop", [503] * 50)
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    await post(client, paid("p-exhaust"))
    await wait_for(lambda: redis.zcard("relay:dlq:index"), timeout=15)
    (letter,) = await DeadLetterQueue(redis, Keys()).recent()
    assert letter.attempts == len(SCHEDULE) + 1
    assert letter.last_status == 503
    assert len(sink_server.requests("/shop")) == len(SCHEDULE) + 1


async def test_retry_after_is_respected(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer
) -> None:
    """A 503 with Retry-After: 1 is not retried sooner than a second later."""
    sink_server.script("/shop", [Reply.error(503, headers={"Retry-After": "1"})])
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    await post(client, paid("p-ra"))
    await wait_for(lambda: len(sink_server.requests("/shop")) >= 2, timeout=10)
    first, second = sink_server.requests("/shop")[:2]
    assert second.at - first.at >= 0.95


async def test_rate_limit_429_uses_no_attempt(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """Discord 429s many times over are waited out, never dead-lettered (schedule of one retry)."""
    sink_server.script(sink_server.discord_url(), [Reply.discord_rate_limited(0.05)] * 8)
    raw = config(sink_server, ops={"retry": {"schedule": ["50ms"]}})
    client = await start(ingress, run_worker, config_factory, raw)
    await post(client, paid("p-429"))
    await wait_for(lambda: len(accepted(sink_server, sink_server.discord_url())) == 1, timeout=15)
    assert await redis.zcard("relay:dlq:index") == 0
    assert int(await redis.hget("relay:stats", "dlv:ops:rate_limited")) == 8


async def test_burst_to_rate_limited_discord_is_slowed_not_dead_lettered(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """50 payments to a Discord sink limited to 10 per 0.5 s all arrive, spread out, none lost."""
    raw = config(sink_server, ops={"rate_limit": "10/500ms"})
    raw["sinks"] = {"ops": raw["sinks"]["ops"]}
    client = await start(ingress, run_worker, config_factory, raw)
    for i in range(50):
        await post(client, paid(f"p-burst-{i}"))
    url = sink_server.discord_url()
    await wait_for(lambda: len(accepted(sink_server, url)) == 50, timeout=30)
    times = sorted(r.at for r in sink_server.requests(url))
    assert times[-1] - times[0] >= 2.0  # 50 at 10 per 0.5 s cannot take less than 2 s
    for i in range(len(times) - 10):
        # never more than 10 in any half second (less a little: the limiter grants a slot a few
        # ms before the request reaches the server)
        assert times[i + 10] - times[i] >= 0.4
    assert await redis.zcard("relay:dlq:index") == 0


async def test_semantic_duplicate_reaches_no_sink_twice(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    """The same payment status re-sent with different bytes is delivered once per sink."""
    client = await start(ingress, run_worker, config_factory, config(sink_server))
    first = await post(client, paid("p-dup", note="first"))
    second = await post(client, paid("p-dup", note="second"))
    assert first["id"] != second["id"] and "duplicate" not in second
    await wait_for(lambda: redis.hget("relay:stats", "evt:ivpay:duplicate"))
    await wait_for(lambda: len(accepted(sink_server, sink_server.slack_url())) >= 1)
    assert len(sink_server.requests("/shop")) == 1
    assert len(sink_server.requests(sink_server.discord_url())) == 1
    assert len(sink_server.requests(sink_server.slack_url())) == 1


async def test_hostile_text_reaches_discord_within_limits_and_pings_no_one(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer
) -> None:
    """A signed payment whose description is `@everyone` plus 5000 characters goes through the
    worker to Discord inside every Discord limit, and can ping no one."""
    import hashlib
    import hmac

    secret = "shop-hmac-secret-123"
    raw = {
        "sources": {
            "shop": {
                "provider": "hmac",
                "secret": secret,
                "signature_header": "X-Sig",
                "fields": {
                    "payment_id": "id",
                    "event": "type",
                    "amount": "amount",
                    "currency": "currency",
                    "description": "description",
                },
                "event_types": {"paid": "payment.paid"},
            }
        },
        "sinks": {
            "ops": {
                "type": "discord",
                "url": sink_server.discord_url(),
                "project": "@here Acme",
                "retry": FAST,
            }
        },
    }
    body = orjson.dumps(
        {
            "id": "p-hostile",
            "type": "paid",
            "amount": "0.86",
            "currency": "SOL",
            "description": "@everyone <@123456789> " + "x" * 5000,
        }
    )
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    client = await start(ingress, run_worker, config_factory, raw)
    response = await client.post("/hooks/shop", data=body, headers={"X-Sig": signature})
    assert response.status == 200, await response.text()
    (request,) = await sink_server.wait_for_requests(1, sink_server.discord_url())
    payload = request.json()
    assert request.violations == []  # content <= 2000, description <= 4096, total <= 6000, ...
    assert request.status == 200
    assert payload["allowed_mentions"] == {"parse": []}
    assert discord_pings(payload) == []
    assert len(payload["content"]) <= 2000
    assert "0.86 SOL" in payload["content"]
