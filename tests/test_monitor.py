"""relay.monitor: every SPEC 8 figure read from a real Redis after real traffic.

The `realistic` fixture (tests/conftest.py) builds the state the monitoring tests (these,
metrics, status page, CLI) read: webhooks through the real ingress over HTTP, a real arq
worker delivering over HTTP to a local merchant server with one healthy sink, one failing
(503, retrying) and one gone (410, dead letters), a byte-identical provider retry and a
rejected request.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from arq.constants import in_progress_key_prefix

from relay.monitor import BUCKET_LABELS, take_snapshot
from tests.conftest import IVPAY_KEY, Realistic, ivpay_body, wait_for

# --- tests --------------------------------------------------------------------------------


async def test_snapshot_after_real_traffic(realistic: Realistic, redis: Any) -> None:
    """Inbound counts, per-sink outcomes, retries now, dead letters, gone flag, latency,
    workers and rejections all reflect what went through the ingress and the worker."""
    snap = await take_snapshot(redis, realistic.loaded.config)

    assert snap.queue.waiting == 0 and snap.queue.in_progress == 0
    assert snap.queue.scheduled == 3  # the three retries of `ops`
    assert snap.queue.oldest_waiting_age_s is None
    assert snap.dlq_size == 2
    assert len(snap.workers) == 1

    ivpay = snap.source("ivpay")
    assert ivpay is not None and ivpay.configured
    assert ivpay.inbound == {"stored": 3, "duplicate": 1, "bad_signature": 1}
    assert ivpay.events == {"payment.paid": 2, "payment.created": 1}
    unknown = snap.source("_unknown")
    assert unknown is not None and unknown.inbound == {"unknown_source": 1}

    shop, ops, legacy = snap.sink("shop"), snap.sink("ops"), snap.sink("legacy")
    assert shop and ops and legacy
    assert (shop.delivered, shop.retry, shop.failed, shop.retrying_now) == (3, 0, 0, 0)
    assert shop.healthy and shop.last_ok_at is not None and shop.last_error is None
    assert shop.latency.count == 3 and sum(shop.latency.buckets) == 3 and shop.latency.sum > 0
    assert (ops.delivered, ops.retry, ops.retrying_now) == (0, 3, 3)
    assert ops.last_status == 503 and not ops.healthy and not ops.gone
    assert (legacy.failed, legacy.delivered) == (2, 0)
    assert legacy.gone and legacy.last_status == 410

    # Newest first: the unknown source was rejected after the bad key.
    assert [r.error for r in snap.rejections] == ["unknown_source", "bad_signature"]
    assert snap.rejections[0].source == "ivpey" and snap.rejections[1].status == 401


async def test_counts_move_with_more_traffic(realistic: Realistic, redis: Any) -> None:
    """A new webhook after the first snapshot moves the inbound and delivery counters."""
    before = await take_snapshot(redis, realistic.loaded.config)
    response = await realistic.client.post(
        "/hooks/ivpay", data=ivpay_body("p9"), headers={"X-API-KEY": IVPAY_KEY}
    )
    assert response.status == 200
    await wait_for(lambda: redis.hget("relay:stats", "dlv:shop:delivered"), timeout=5)
    await wait_for(lambda: _equals(redis, "dlv:legacy:failed", b"3"), timeout=10)
    after = await take_snapshot(redis, realistic.loaded.config)
    assert after.source("ivpay").stored == before.source("ivpay").stored + 1  # type: ignore[union-attr]
    assert after.sink("shop").delivered == before.sink("shop").delivered + 1  # type: ignore[union-attr]
    assert after.sink("ops").retrying_now == 4  # type: ignore[union-attr]
    assert after.dlq_size == 3


async def _equals(redis: Any, field: str, value: bytes) -> bool:
    return bool(await redis.hget("relay:stats", field) == value)


async def test_removed_sink_still_reported(
    realistic: Realistic, redis: Any, config_factory: Any
) -> None:
    """A sink dropped from the config still shows its counters and pending retries."""
    raw = {**realistic.raw, "sinks": {"shop": realistic.raw["sinks"]["shop"]}}
    snap = await take_snapshot(redis, config_factory(raw).config)
    ops = snap.sink("ops")
    assert ops is not None and not ops.configured
    assert ops.retrying_now == 3 and ops.retry == 3


async def test_waiting_jobs_and_oldest_age(ingress: Any, redis: Any, config_factory: Any) -> None:
    """Without a worker, stored webhooks wait; the oldest's age counts from when it was stored,
    and a job arq is running (its in-progress key) is not counted as waiting."""
    raw = {"sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}}}
    client = await ingress(raw)
    ids = []
    for payment in ("a", "b", "c"):
        response = await client.post(
            "/hooks/ivpay", data=ivpay_body(payment), headers={"X-API-KEY": IVPAY_KEY}
        )
        ids.append((await response.json())["id"])
    config = config_factory(raw).config
    first_score = (await redis.zscore("relay:queue", ids[0])) / 1000
    second_score = (await redis.zscore("relay:queue", ids[1])) / 1000

    snap = await take_snapshot(redis, config, now=first_score + 30)
    assert (snap.queue.waiting, snap.queue.scheduled, snap.queue.in_progress) == (3, 0, 0)
    assert abs(snap.queue.oldest_waiting_age_s - 30) < 0.01  # type: ignore[operator]
    assert snap.workers == []

    # A live worker running the oldest job: the way arq and our heartbeat show it.
    await redis.set(in_progress_key_prefix + ids[0], b"1", px=60_000)
    await redis.set(
        "relay:worker:w1",
        orjson.dumps({"id": "w1", "running": 1, "at": first_score + 29, "started_at": first_score}),
        ex=30,
    )
    await redis.zadd("relay:workers", {"w1": first_score + 29})
    snap = await take_snapshot(redis, config, now=first_score + 30)
    assert (snap.queue.waiting, snap.queue.in_progress) == (2, 1)
    assert abs(snap.queue.oldest_waiting_age_s - (first_score + 30 - second_score)) < 0.01
    assert [w.id for w in snap.workers] == ["w1"]


async def test_stale_heartbeat_is_not_a_live_worker(redis: Any, config_factory: Any) -> None:
    """A heartbeat older than the worker TTL (e.g. a frozen process) does not count."""
    now = time.time()
    await redis.set("relay:worker:old", orjson.dumps({"id": "old", "running": 4, "at": now - 120}))
    await redis.zadd("relay:workers", {"old": now - 120})
    snap = await take_snapshot(redis, config_factory({}).config, now=now)
    assert snap.workers == [] and snap.queue.in_progress == 0


async def test_retry_scan_cap(realistic: Realistic, redis: Any) -> None:
    """Past the scan cap per-sink retry counts are partial, and the snapshot says so."""
    snap = await take_snapshot(redis, realistic.loaded.config, retry_scan_cap=2)
    assert snap.retry_scan_truncated
    assert snap.sink("ops").retrying_now == 2  # type: ignore[union-attr]
    assert snap.queue.scheduled == 3


async def test_json_shape(realistic: Realistic, redis: Any) -> None:
    """The JSON form keys sources and sinks by name and keeps latency buckets by bound."""
    data = orjson.loads((await take_snapshot(redis, realistic.loaded.config)).to_json())
    assert data["queue"]["scheduled"] == 3 and data["dlq_size"] == 2
    assert data["sinks"]["ops"]["retrying_now"] == 3
    assert data["sinks"]["legacy"]["gone"] is True
    assert list(data["sinks"]["shop"]["latency"]["buckets"]) == list(BUCKET_LABELS)
    assert data["sources"]["ivpay"]["inbound"]["stored"] == 3
    assert data["rejections"][0]["error"] == "unknown_source"
