"""OxaPay: `HMAC` = hex HMAC-SHA512 of the raw body, merchant API key for payments, payout API
key for payouts.

Signatures are computed here (as oxapaysdk/php-sdk `Webhook::verify` computes them), never by
the provider's `sample()`. What the ingress rejects is in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import deserialize_job

from relay.providers import PROVIDERS, InboundRequest, Provider, Rejected
from relay.queue import deserialize, inbound_id, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "oxapay"
MERCHANT_KEY = "oxapay-test-merchant-key-0001"
PAYOUT_KEY = "oxapay-test-payout-key-0001"
SOURCE = {
    "provider": "oxapay",
    "merchant_api_key": [MERCHANT_KEY, "oxapay-old-merchant-key"],
    "payout_api_key": PAYOUT_KEY,
}
CONFIG = {"sources": {"oxapay": SOURCE}}
PAID = (DATA / "invoice_paid.json").read_bytes()
TX = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"


def provider(source: dict[str, Any] | None = None) -> Provider:
    loaded = make_config({"sources": {"oxapay": source or SOURCE}})
    return PROVIDERS["oxapay"]("oxapay", loaded.config.sources["oxapay"])


def sign(body: bytes, key: str = MERCHANT_KEY) -> dict[str, str]:
    return {"HMAC": hmac.new(key.encode(), body, hashlib.sha512).hexdigest()}


def request(body: bytes, key: str = MERCHANT_KEY) -> InboundRequest:
    return InboundRequest(source="oxapay", body=body, headers={"hmac": sign(body, key)["HMAC"]})


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(InboundRequest(source="oxapay", body=body, headers={}))
    return event


def payload(**changes: Any) -> bytes:
    return json.dumps({**json.loads(PAID), **changes}).encode()


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("sdk_invoice_paid", "custom-merchant-secret"),
        ("sdk_payout_confirmed", "custom-payout-secret"),
    ],
)
def test_php_sdk_test_bodies_verify(name: str, key: str) -> None:
    """The bodies and keys of oxapaysdk/php-sdk tests/Feature/WebhookTest.php."""
    body = (DATA / f"{name}.json").read_bytes()
    source = {"provider": "oxapay", "merchant_api_key": "custom-merchant-secret"}
    source["payout_api_key"] = "custom-payout-secret"
    provider(source).verify(request(body, key))


def test_payout_key_cannot_sign_a_payment_nor_merchant_key_a_payout() -> None:
    payout_body = (DATA / "sdk_payout_confirmed.json").read_bytes()
    with pytest.raises(Rejected, match="payout_api_key"):
        provider().verify(request(payout_body, MERCHANT_KEY))
    with pytest.raises(Rejected, match="merchant_api_key"):
        provider().verify(request(PAID, PAYOUT_KEY))
    provider().verify(request(payout_body, PAYOUT_KEY))
    assert normalize(payout_body).type == "payment.other"


async def test_docs_shaped_paid_callback_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """A docs-shaped Paid callback, signed as the SDK checks it, through the real ingress."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/oxapay", data=PAID, headers=sign(PAID))
    assert response.status == 200, await response.text()
    assert await response.text() == "ok"  # OxaPay counts the delivery done only on `ok`
    (event,) = provider().normalize(await stored(redis, inbound_id("oxapay", PAID)))
    assert (event.type, event.provider_event) == ("payment.completed", "Paid")
    assert (event.payment.id, event.payment.reference) == ("151811887", "ORD-12345")
    assert (event.payment.amount, event.payment.currency) == ("10", "USDT")
    assert event.payment.amount_received == "10.000000000000000001"
    assert (event.payment.tx_hash, event.payment.network) == (TX, "Polygon Network")
    assert (event.payment.confirmations, event.occurred_at) == (12, "2025-02-02T10:58:20Z")


def test_legacy_camel_case_callback() -> None:
    body = json.dumps(
        {"trackId": "9", "status": "Confirming", "orderId": "o-9", "amount": "5", "txID": "0xab"}
    ).encode()
    event = normalize(body)
    assert (event.type, event.payment.reference, event.payment.tx_hash) == (
        "payment.pending",
        "o-9",
        "0xab",
    )


STATUSES = {
    "New": "created",
    "Waiting": "created",
    "Paying": "pending",
    "Confirming": "pending",
    "Paid": "completed",
    "manual_accept": "completed",
    "Underpaid": "review",
    "Expired": "expired",
    "Failed": "failed",
    "Refunding": "other",
    "Refunded": "other",
    "Mystery": "other",
}


@pytest.mark.parametrize(("status", "short"), STATUSES.items())
def test_status_table(status: str, short: str) -> None:
    event = normalize(payload(status=status))
    assert (event.type, event.provider_event) == (f"payment.{short}", status)
    assert event.payment.review_reason == ("underpaid" if short == "review" else None)


async def test_retry_is_one_event_and_partial_payments_two(ingress: Any, redis: Any) -> None:
    """OxaPay retries (up to 5 times) with the same body: one stored request, one event id. A
    second partial payment adds a transaction: a new event."""
    first_tx = json.loads(PAID)["txs"][0]
    one = payload(status="Paying", txs=[{**first_tx, "received_amount": 4}])
    client = await ingress(CONFIG)
    answers = [await client.post("/hooks/oxapay", data=one, headers=sign(one)) for _ in range(2)]
    assert [a.status for a in answers] == [200, 200]
    assert [await a.text() for a in answers] == ["ok", "ok"]  # OxaPay's own answer, both times
    assert await redis.zcard("relay:queue") == 1  # the retry is the same stored request
    second_tx = {**first_tx, "tx_hash": "0x" + "b" * 64, "received_amount": 6}
    two = payload(status="Paying", txs=[{**first_tx, "received_amount": 4}, second_tx])
    assert normalize(one).id != normalize(two).id
    assert normalize(two).payment.amount_received == "10"
    assert normalize(json.dumps(json.loads(one), indent=2).encode()).id == normalize(one).id


@pytest.mark.parametrize("event", PROVIDERS["oxapay"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    """What `relay trigger oxapay <event>` sends is accepted and is that canonical event."""
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(
        InboundRequest(source="oxapay", body=sample.body, headers=sent, received_at=time.time())
    )
    kept = {k: v for k, v in sent.items() if k in made.keep_headers}
    (normalized,) = made.normalize(InboundRequest(source="oxapay", body=sample.body, headers=kept))
    assert normalized.type == f"payment.{event}"
