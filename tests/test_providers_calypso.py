"""Calypso: hex HMAC-SHA512 of the raw body in `Sign`, optional public key in `Key`."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson

from relay.events import loads
from relay.providers import PROVIDERS, InboundRequest
from relay.providers.calypso import CalypsoProvider
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "calypso"
SECRET = TEST_SECRETS["CALYPSO_SECRET_KEY"]
PUBLIC = "calypso-public-key-1"
SOURCE = {"provider": "calypso", "secret_key": ["${CALYPSO_SECRET_KEY}", "${CALYPSO_SECRET_KEY_2}"]}
CONFIG = {"sources": {"calypso": SOURCE}}
WITH_KEY = {"sources": {"calypso": {**SOURCE, "public_key": PUBLIC}}}
BODY = (DATA / "invoice_create_invoice.json").read_bytes()


def headers(body: bytes, secret: str = SECRET, key: str | None = None) -> dict[str, str]:
    sent = {
        "Content-Type": "application/json",
        "Sign": hmac.new(secret.encode(), body, hashlib.sha512).hexdigest(),
    }
    if key is not None:
        sent["Key"] = key
    return sent


def normalize(body: bytes) -> Any:
    made = PROVIDERS["calypso"]("calypso", make_config(CONFIG).config.sources["calypso"])
    assert isinstance(made, CalypsoProvider)
    (event,) = made.normalize(
        InboundRequest(source="calypso", body=body, headers={}, received_at=1.0)
    )
    return event


def envelope(event_type: str, **data: Any) -> bytes:
    return orjson.dumps(
        {
            "id": 7,
            "createdDate": "2022-03-15T12:13:05.909616",
            "eventType": event_type,
            "data": {"type": event_type, "parentExternalId": 3, **data},
        }
    )


async def test_valid_request_is_stored(ingress: Any, redis: Any) -> None:
    """A correctly signed webhook is answered 200 and queued."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/calypso", data=BODY, headers=headers(BODY))
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


async def test_tampered_body_is_rejected(ingress: Any, redis: Any) -> None:
    """A body changed after signing is 401 bad_signature and nothing is stored."""
    client = await ingress(CONFIG)
    tampered = BODY.replace(b"0.01", b"0.02")
    response = await client.post("/hooks/calypso", data=tampered, headers=headers(BODY))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_wrong_secret_is_rejected(ingress: Any, redis: Any) -> None:
    """A body signed with another secret key is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/calypso", data=BODY, headers=headers(BODY, secret="nope"))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_missing_sign_header_is_rejected(ingress: Any, redis: Any) -> None:
    """A request without the Sign header is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post(
        "/hooks/calypso", data=BODY, headers={"Content-Type": "application/json"}
    )
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_wrong_public_key_is_rejected(ingress: Any, redis: Any) -> None:
    """With `public_key` set, a correctly signed request with another Key is 401 bad_signature."""
    client = await ingress(WITH_KEY)
    response = await client.post("/hooks/calypso", data=BODY, headers=headers(BODY, key="other"))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_matching_public_key_is_stored(ingress: Any, redis: Any) -> None:
    """With `public_key` set, the matching Key header and signature are accepted."""
    client = await ingress(WITH_KEY)
    response = await client.post("/hooks/calypso", data=BODY, headers=headers(BODY, key=PUBLIC))
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


async def test_second_secret_verifies(ingress: Any, redis: Any) -> None:
    """During rotation the second configured secret key verifies too."""
    client = await ingress(CONFIG)
    second = TEST_SECRETS["CALYPSO_SECRET_KEY_2"]
    response = await client.post("/hooks/calypso", data=BODY, headers=headers(BODY, secret=second))
    assert response.status == 200


def test_envelope_example_normalizes() -> None:
    """The reference's INVOICE_CREATE_INVOICE envelope becomes payment.created with its fields."""
    event = normalize(BODY)
    assert (event.type, event.provider_event) == ("payment.created", "INVOICE_CREATE_INVOICE")
    assert (event.payment.id, event.payment.amount, event.payment.currency) == ("3", "0.01", "ETH")
    assert event.payment.fiat_currency == "USD"  # spelt `fiatcurrency` in this example
    assert event.payment.description == "Invoice example"
    assert event.occurred_at == "2022-03-15T12:13:05.909Z"
    assert event.data == loads(BODY)


def test_float_amount_keeps_exact_digits() -> None:
    """A JSON float amount 0.123456789012345678 reaches payment.amount digit for digit."""
    body = b'{"id": 9, "eventType": "INVOICE_PAID", "data": {"amount": 0.123456789012345678}}'
    event = normalize(body)
    assert event.payment.amount == "0.123456789012345678"
    assert b"0.123456789012345678" in event.to_json()


def test_event_table() -> None:
    """Every documented event type maps per SPEC 4 (both compliance spellings included)."""
    expected = {
        "INVOICE_CREATE_INVOICE": "created",
        "INVOICE_CREATE_UNLIMITED_INVOICE": "created",
        "INVOICE_MEMPOOL_FOUND": "pending",
        "INVOICE_FUNDS_RECEIVED_FOR_INVOICE": "pending",
        "INVOICE_PAID": "paid",
        "INVOICE_TRANSLATION_TO_ACCOUNT_COMPLETED": "completed",
        "INVOICE_PENDING_INTERVENTION": "review",
        "INVOICE_PENDING_COMPLIANCE": "review",
        "INVOICE_COMPLIANCE_CHECK": "review",
        "INVOICE_COMPLIANCE_DECLINED": "failed",
        "INVOICE_EXPIRED": "expired",
        "PAYOUT_CONFIRMED": "other",
    }
    for name, short in expected.items():
        assert normalize(envelope(name)).type == f"payment.{short}", name


def test_paid_event_fields() -> None:
    """INVOICE_PAID's merchant id, fiat amount and transaction hash are read."""
    event = normalize(
        envelope(
            "INVOICE_PAID",
            externalId="order-9",
            amount=1,
            fiatAmount=25,
            fiatCurrency="EUR",
            transactionHash="0xabc",
        )
    )
    assert (event.payment.reference, event.payment.fiat_amount, event.payment.fiat_currency) == (
        "order-9",
        "25",
        "EUR",
    )
    assert event.payment.tx_hash == "0xabc"


def test_fiat_amount_object_is_read() -> None:
    """A `fiatAmount` object (as in FUNDS_RECEIVED/EXPIRED) gives its amount and currency."""
    body = envelope("INVOICE_EXPIRED", fiatAmount={"amount": "10.5", "currency": "USD"})
    event = normalize(body)
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("10.5", "USD")


def test_dedupe_key_is_envelope_id() -> None:
    """Two deliveries with the same envelope id are one event; another id is another event."""
    first = envelope("INVOICE_PAID")
    again = orjson.dumps({**orjson.loads(first), "requestId": "other-subscription"})
    later = orjson.dumps({**orjson.loads(first), "id": 8})
    assert normalize(first).id == normalize(again).id
    assert normalize(first).id != normalize(later).id
