"""Cryptoix: hex HMAC-SHA256 of the raw body in a configurable header (SDK scheme)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson

from relay.events import loads
from relay.providers import PROVIDERS, InboundRequest
from relay.providers.cryptoix import CryptoixProvider
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "cryptoix"
SECRET = TEST_SECRETS["CRYPTOIX_WEBHOOK_SECRET"]
SOURCE = {
    "provider": "cryptoix",
    "secret": ["${CRYPTOIX_WEBHOOK_SECRET}", "${CRYPTOIX_WEBHOOK_SECRET_2}"],
}
CONFIG = {"sources": {"cryptoix": SOURCE}}
BODY = (DATA / "payment_received_docs.json").read_bytes()
FLAT = (DATA / "sdk_completed_vector.json").read_bytes()


def headers(
    body: bytes, secret: str = SECRET, header: str = "X-Cryptoix-Signature"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        header: hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def normalize(body: bytes) -> Any:
    made = PROVIDERS["cryptoix"]("cryptoix", make_config(CONFIG).config.sources["cryptoix"])
    assert isinstance(made, CryptoixProvider)
    (event,) = made.normalize(
        InboundRequest(source="cryptoix", body=body, headers={}, received_at=1.0)
    )
    return event


async def test_valid_request_is_stored(ingress: Any, redis: Any) -> None:
    """A correctly signed webhook is answered 200 and queued."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/cryptoix", data=BODY, headers=headers(BODY))
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


async def test_tampered_body_is_rejected(ingress: Any, redis: Any) -> None:
    """A body changed after signing is 401 bad_signature and nothing is stored."""
    client = await ingress(CONFIG)
    tampered = BODY.replace(b"1.50", b"9.50")
    response = await client.post("/hooks/cryptoix", data=tampered, headers=headers(BODY))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_wrong_secret_is_rejected(ingress: Any, redis: Any) -> None:
    """A body signed with another secret is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/cryptoix", data=BODY, headers=headers(BODY, secret="nope"))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_missing_signature_header_is_rejected(ingress: Any, redis: Any) -> None:
    """A request without the signature header is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post(
        "/hooks/cryptoix", data=BODY, headers={"Content-Type": "application/json"}
    )
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_signature_header_is_configurable(ingress: Any, redis: Any) -> None:
    """With `signature_header: X-Signature`, the signature is read from that header."""
    client = await ingress({"sources": {"cryptoix": {**SOURCE, "signature_header": "X-Signature"}}})
    response = await client.post(
        "/hooks/cryptoix", data=BODY, headers=headers(BODY, header="X-Signature")
    )
    assert response.status == 200


async def test_second_secret_verifies(ingress: Any, redis: Any) -> None:
    """During rotation the second configured secret verifies too."""
    client = await ingress(CONFIG)
    second = TEST_SECRETS["CRYPTOIX_WEBHOOK_SECRET_2"]
    response = await client.post("/hooks/cryptoix", data=BODY, headers=headers(BODY, secret=second))
    assert response.status == 200


def test_docs_example_normalizes() -> None:
    """The docs' payment_received example becomes payment.paid with its nested fields."""
    event = normalize(BODY)
    assert (event.type, event.provider_event) == ("payment.paid", "payment_received")
    assert (event.payment.id, event.payment.reference) == ("txn_123abc456", "order_xyz789")
    assert (event.payment.amount, event.payment.currency) == ("1.50", "BTC")
    assert (event.payment.tx_hash, event.payment.confirmations) == ("a1b2c3d4e5f67890", 6)
    assert event.occurred_at == "2023-10-27T10:30:00Z"
    assert event.data == loads(BODY)


def test_sdk_flat_payload_normalizes() -> None:
    """The SDK's flat payload (uuid, status completed, amount_fiat, Unix timestamp) is read."""
    event = normalize(FLAT)
    assert (event.type, event.payment.id, event.payment.fiat_amount) == (
        "payment.completed",
        "tx_test_123",
        "100",
    )
    assert event.occurred_at == "2026-06-04T12:00:00Z"


def test_status_table() -> None:
    """Without a known event name the status decides per SPEC 4; unknown ones are other."""
    expected = {
        "pending": "pending",
        "paid": "paid",
        "completed": "completed",
        "expired": "expired",
        "failed": "failed",
        "cancelled": "cancelled",
        "weird": "other",
    }
    for status, short in expected.items():
        assert normalize(orjson.dumps({"uuid": "u", "status": status})).type == f"payment.{short}"


def test_payout_events_are_other() -> None:
    """A payout event is not a payment: payout.failed becomes payment.other."""
    assert (
        normalize(orjson.dumps({"type": "payout.failed", "uuid": "u", "status": "failed"})).type
        == "payment.other"
    )


def test_float_amount_keeps_exact_digits() -> None:
    """A JSON float amount 0.123456789012345678 reaches payment.amount digit for digit."""
    body = b'{"event": "payment_received", "data": {"amount": 0.123456789012345678}}'
    event = normalize(body)
    assert event.payment.amount == "0.123456789012345678"
    assert b"0.123456789012345678" in event.to_json()


def test_new_confirmation_is_a_new_event() -> None:
    """Same payment and status with another confirmation count is a new event; a replay is not."""
    first = orjson.loads(BODY)
    more = {**first, "data": {**first["data"], "confirmation_count": 7}}
    later_copy = {**first, "timestamp": "2023-10-27T10:31:00Z"}
    assert normalize(BODY).id != normalize(orjson.dumps(more)).id
    assert normalize(BODY).id == normalize(orjson.dumps(later_copy)).id
