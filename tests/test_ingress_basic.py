"""The ingress answers table (SPEC 3), against a real Redis."""

from __future__ import annotations

from typing import Any

import orjson

IVPAY = {"sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}}}
KEY = "ivpay-test-api-key-0001"
BODY = orjson.dumps({"payment_id": "abc", "status": "PAID", "foreign_id": "1"})


async def test_valid_request_is_stored_once(ingress: Any, redis: Any) -> None:
    """A valid webhook is queued; its byte-identical retry answers duplicate with the same id."""
    client = await ingress(IVPAY)
    first = await client.post("/hooks/ivpay", data=BODY, headers={"X-API-KEY": KEY})
    assert first.status == 200
    answer = await first.json()
    assert answer["ok"] is True and "duplicate" not in answer
    assert await redis.zcard("relay:queue") == 1
    again = await client.post("/hooks/ivpay", data=BODY, headers={"X-API-KEY": KEY})
    assert (await again.json()) == {"ok": True, "id": answer["id"], "duplicate": True}
    assert await redis.zcard("relay:queue") == 1


async def test_wrong_key_is_rejected_and_not_stored(ingress: Any, redis: Any) -> None:
    """A wrong API key gets 401 bad_signature and nothing is queued."""
    client = await ingress(IVPAY)
    response = await client.post("/hooks/ivpay", data=BODY, headers={"X-API-KEY": "nope"})
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0
    assert await redis.llen("relay:rejections") == 1


async def test_unknown_source(ingress: Any, redis: Any) -> None:
    """An unknown source is a 404 unknown_source."""
    client = await ingress(IVPAY)
    response = await client.post("/hooks/nope", data=BODY)
    assert response.status == 404
    assert await response.json() == {"error": "unknown_source"}


async def test_too_large(ingress: Any, redis: Any) -> None:
    """A body over max_body_bytes is a 413 too_large."""
    client = await ingress({**IVPAY, "server": {"max_body_bytes": 2048}})
    response = await client.post("/hooks/ivpay", data=b"x" * 5000, headers={"X-API-KEY": KEY})
    assert response.status == 413
    assert await response.json() == {"error": "too_large"}
