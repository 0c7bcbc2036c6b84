"""Coinable: no signature exists, so the source is authenticated by a secret URL token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from relay.providers import PROVIDERS, InboundRequest
from relay.providers.coinable import CoinableProvider
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "coinable"
TOKEN = TEST_SECRETS["COINABLE_URL_TOKEN"]
SOURCE = {"provider": "coinable", "url_token": ["${COINABLE_URL_TOKEN}", "${COINABLE_URL_TOKEN_2}"]}
CONFIG = {"sources": {"coinable": SOURCE}}
BODY = (DATA / "checkout_session_completed.json").read_bytes()
JSON = {"Content-Type": "application/json"}


def normalize(body: bytes) -> Any:
    made = PROVIDERS["coinable"]("coinable", make_config(CONFIG).config.sources["coinable"])
    assert isinstance(made, CoinableProvider)
    (event,) = made.normalize(
        InboundRequest(source="coinable", body=body, headers={}, received_at=1.0)
    )
    return event


async def test_valid_request_is_stored(ingress: Any, redis: Any) -> None:
    """A webhook POSTed to the token URL is answered 200 and queued."""
    client = await ingress(CONFIG)
    response = await client.post(f"/hooks/coinable/{TOKEN}", data=BODY, headers=JSON)
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


async def test_wrong_token_is_rejected(ingress: Any, redis: Any) -> None:
    """A wrong URL token is 401 bad_token and nothing is stored."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/coinable/not-the-token", data=BODY, headers=JSON)
    assert response.status == 401
    assert await response.json() == {"error": "bad_token"}
    assert await redis.zcard("relay:queue") == 0


async def test_missing_token_is_rejected(ingress: Any, redis: Any) -> None:
    """The source's URL without a token is 401 bad_token."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/coinable", data=BODY, headers=JSON)
    assert response.status == 401
    assert await response.json() == {"error": "bad_token"}
    assert await redis.zcard("relay:queue") == 0


async def test_token_prefix_is_rejected(ingress: Any, redis: Any) -> None:
    """A prefix of the token is not the token (no partial matches)."""
    client = await ingress(CONFIG)
    response = await client.post(f"/hooks/coinable/{TOKEN[:-1]}", data=BODY, headers=JSON)
    assert response.status == 401
    assert await redis.zcard("relay:queue") == 0


async def test_second_token_verifies(ingress: Any, redis: Any) -> None:
    """During rotation the second configured URL token is accepted too."""
    client = await ingress(CONFIG)
    second = TEST_SECRETS["COINABLE_URL_TOKEN_2"]
    response = await client.post(f"/hooks/coinable/{second}", data=BODY, headers=JSON)
    assert response.status == 200


async def test_allowed_ips_applies(ingress: Any, redis: Any) -> None:
    """With `allowed_ips` set, the right token from another address is 403 ip_not_allowed."""
    client = await ingress({"sources": {"coinable": {**SOURCE, "allowed_ips": ["203.0.113.0/24"]}}})
    response = await client.post(f"/hooks/coinable/{TOKEN}", data=BODY, headers=JSON)
    assert response.status == 403
    assert await redis.zcard("relay:queue") == 0


def test_documented_events_normalize() -> None:
    """The three documented checkout events map to pending, completed and failed."""
    expected = {
        "checkout_session_payment_attempt.json": "payment.pending",
        "checkout_session_completed.json": "payment.completed",
        "checkout_session_failed.json": "payment.failed",
    }
    for name, kind in expected.items():
        body = (DATA / name).read_bytes()
        event = normalize(body)
        assert (event.type, event.payment.reference) == (kind, "1001"), name
        assert event.data == orjson.loads(body)


def test_unknown_event_is_other() -> None:
    """An event type Coinable did not document is relayed as payment.other."""
    assert normalize(b'{"type": "checkout.session.refunded", "data": {}}').type == "payment.other"


def test_dedupe_by_checkout_and_type() -> None:
    """With a checkout id, the same id and type is one event and a new type another."""
    done = orjson.dumps({"type": "checkout.session.completed", "data": {"id": "cs1", "x": 1}})
    done_again = orjson.dumps({"type": "checkout.session.completed", "data": {"id": "cs1", "x": 2}})
    failed = orjson.dumps({"type": "checkout.session.failed", "data": {"id": "cs1"}})
    assert normalize(done).id == normalize(done_again).id
    assert normalize(done).id != normalize(failed).id
