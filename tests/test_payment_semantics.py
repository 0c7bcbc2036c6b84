"""Payment semantics (SPEC 11) with a real Redis, real workers and real local sinks:
`payment.sequence` in acceptance order, stale statuses flagged for http and dropped for Discord.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson

from relay.keys import Keys
from relay.ledger import query
from tests.conftest import wait_for
from tests.sink_servers import SinkServer

SECRET = "semantics-test-secret-0001"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEYS = Keys()
TYPES = ("created", "pending", "paid", "completed", "expired")


def config(server: SinkServer) -> dict[str, Any]:
    return {
        "sources": {
            "shop-psp": {
                "provider": "hmac",
                "secret": SECRET,
                "signature_header": "X-Sig",
                "fields": {
                    "payment_id": "id",
                    "event": "type",
                    "amount": "amount",
                    "event_id": "delivery",  # each delivery its own event (dedupe key)
                },
                "event_types": {t: f"payment.{t}" for t in TYPES},
            }
        },
        "sinks": {
            "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC},
            "ops": {"type": "discord", "url": server.discord_url(), "project": "Acme"},
        },
    }


async def post(client: Any, payment_id: str, kind: str, note: str = "") -> None:
    delivery = f"{payment_id}-{kind}-{note}"
    body = orjson.dumps({"id": payment_id, "type": kind, "amount": "0.1", "delivery": delivery})
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = await client.post("/hooks/shop-psp", data=body, headers={"X-Sig": signature})
    assert response.status == 200, await response.text()


def shop_events(server: SinkServer) -> list[dict[str, Any]]:
    return [r.json() for r in server.requests("/shop") if r.status == 200]


async def test_sequence_counts_in_acceptance_order_across_two_workers(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    client = await ingress(raw)
    loaded = config_factory(raw)
    await run_worker(loaded)
    await run_worker(loaded)
    await asyncio.gather(*(post(client, "pay-seq", "pending", note=str(i)) for i in range(12)))
    await wait_for(lambda: len(shop_events(sink_server)) == 12)
    numbers = sorted(e["payment"]["sequence"] for e in shop_events(sink_server))
    assert numbers == list(range(1, 13))
    [payment] = await query.find_payments(redis, KEYS, "pay-seq")
    assert [e["sequence"] for e in payment["events"]] == list(range(1, 13))  # accepted order


async def test_a_late_pending_after_paid_is_stale_flagged_for_http_dropped_for_discord(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = config(sink_server)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    await post(client, "pay-st", "paid")
    await wait_for(lambda: len(shop_events(sink_server)) == 1)
    await post(client, "pay-st", "pending")
    await wait_for(lambda: len(shop_events(sink_server)) == 2)
    paid, pending = shop_events(sink_server)
    assert (paid["type"], paid["stale"], paid["payment"]["sequence"]) == ("payment.paid", False, 1)
    assert (pending["type"], pending["stale"]) == ("payment.pending", True)
    assert pending["payment"]["sequence"] == 2
    [payment] = await wait_for(lambda: query.find_payments(redis, KEYS, "pay-st"))
    assert payment["status"] == "paid"  # a stale status never moves the payment back
    stale = payment["events"][1]
    assert stale["stale"] is True
    states = {d["sink"]: d["state"] for d in stale["deliveries"]}
    assert states["ops"] == "dropped"
    assert [d["attempts"] for d in stale["deliveries"] if d["sink"] == "ops"] == [[]]
    discord = [r for r in sink_server.requests() if "/api/webhooks/" in r.path]
    assert len(discord) == 1  # only the paid event reached Discord


async def test_a_late_completed_after_expired_is_news_not_stale(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer
) -> None:
    raw = config(sink_server)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    await post(client, "pay-late", "expired")
    await wait_for(lambda: len(shop_events(sink_server)) == 1)
    await post(client, "pay-late", "completed")
    await wait_for(lambda: len(shop_events(sink_server)) == 2)
    assert [e["stale"] for e in shop_events(sink_server)] == [False, False]
