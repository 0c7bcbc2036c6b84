"""BTCPay Server: `BTCPay-Sig: sha256=<hex>` over the raw body; one event per delivery, keyed on
`webhookId` + `originalDeliveryId`, so redeliveries collapse.

Bodies are laid out as BTCPay's Newtonsoft serializer writes them and signed here with
`hmac` as BTCPay's WebhookSender signs (secret "HelloWorld", as BTCPay's own WebhooksTests),
never by the provider's `sample()`. What the ingress rejects is in
tests/test_provider_rejections.py.
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

from relay.providers import PROVIDERS, InboundRequest, Provider
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config, wait_for

DATA = Path(__file__).parent / "data" / "btcpay"
SECRET = "HelloWorld"  # BTCPayServer.Tests/WebhooksTests.cs signs its deliveries with it
SOURCE = {"provider": "btcpay", "secret": [SECRET, "btcpay-old-secret"]}
CONFIG = {"sources": {"btcpay-server": SOURCE}}
RECEIVED = (DATA / "invoice_received_payment.json").read_bytes()
SETTLED = (DATA / "invoice_settled.json").read_bytes()
TXID = "9a3f1c6e0b2d4c8e7f5a1b3c9d0e2f4a6b8c0d1e3f5a7b9c2d4e6f8a0b1c3d5e"


def provider() -> Provider:
    loaded = make_config(CONFIG)
    return PROVIDERS["btcpay"]("btcpay-server", loaded.config.sources["btcpay-server"])


def sig(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "BTCPay-Sig": f"sha256={digest}"}


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(
        InboundRequest(source="btcpay-server", body=body, headers={}, received_at=1.0)
    )
    return event


def delivery(body: bytes, **changes: Any) -> bytes:
    """The payload with fields changed, laid out again as BTCPay lays it out."""
    payload = json.loads(body)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(payload.get(key), dict):
            payload[key] = {**payload[key], **value}
        else:
            payload[key] = value
    return json.dumps(payload, indent=2, ensure_ascii=False).encode()


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    """The request exactly as the ingress stored it for the worker."""
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


async def test_received_payment_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """An InvoiceReceivedPayment as BTCPay sends it goes through the real ingress and becomes
    payment.pending with the payment's exact value, its currency, the order id and the txid."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/btcpay-server", data=RECEIVED, headers=sig(RECEIVED))
    assert response.status == 200, await response.text()
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider_event) == ("payment.pending", "InvoiceReceivedPayment")
    assert (event.payment.id, event.payment.reference) == ("NnG7uKcA7KjQnvxUCj9o3Y", "order-4711")
    assert (event.payment.amount_received, event.payment.currency) == ("0.00031000", "BTC")
    assert event.payment.amount is None  # no webhook carries the invoice price
    assert (event.payment.tx_hash, event.payment.network) == (TXID, "BTC-CHAIN")
    assert (event.occurred_at, event.payment.description) == (
        "2026-01-01T00:00:01Z",
        "Ledger Nano X",
    )


def test_settled_is_completed() -> None:
    event = normalize(SETTLED)
    assert (event.type, event.payment.reference, event.payment.tx_hash) == (
        "payment.completed",
        "order-4711",
        None,
    )


@pytest.mark.parametrize(
    ("changes", "expected", "reason"),
    [
        ({"type": "InvoiceCreated"}, "created", None),
        ({"type": "InvoiceReceivedPayment"}, "pending", None),
        ({"type": "InvoicePaymentSettled"}, "pending", None),
        ({"type": "InvoiceReceivedPayment", "afterExpiration": True}, "review", "late"),
        ({"type": "InvoicePaymentSettled", "afterExpiration": True}, "review", "late"),
        ({"type": "InvoiceProcessing", "overPaid": False}, "paid", None),
        ({"type": "InvoiceProcessing", "overPaid": True}, "review", "overpaid"),
        ({"type": "InvoiceSettled", "overPaid": True}, "completed", None),
        ({"type": "InvoiceExpired", "partiallyPaid": False}, "expired", None),
        ({"type": "InvoiceExpired", "partiallyPaid": True}, "review", "underpaid"),
        ({"type": "InvoiceExpiredPaidPartial"}, "review", "underpaid"),
        ({"type": "InvoicePaidAfterExpiration"}, "review", "late"),
        ({"type": "InvoiceInvalid", "manuallyMarked": True}, "failed", None),
        ({"type": "invoicesettled"}, "completed", None),
        ({"type": "InvoiceRefund"}, "other", None),
        ({"type": "PayoutCreated"}, "other", None),
    ],
)
def test_status_table(changes: dict[str, Any], expected: str, reason: str | None) -> None:
    event = normalize(delivery(RECEIVED, **{"afterExpiration": False, **changes}))
    assert (event.type, event.payment.review_reason) == (f"payment.{expected}", reason)


async def test_redelivery_is_one_event_and_partial_payments_two(
    ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """BTCPay redelivers with a new deliveryId, isRedelivery and the first delivery's id in
    originalDeliveryId: a different body (stored again) that a real worker counts as a
    duplicate. A second partial payment is a new delivery with another payment id: an event."""
    redelivery = delivery(RECEIVED, deliveryId="Jc2xQPz3hAo7rGk1DnWv5S", isRedelivery=True)
    second = delivery(
        RECEIVED,
        deliveryId="B8mPq2Yt6RkWc3Ns9HdLx1",
        originalDeliveryId="B8mPq2Yt6RkWc3Ns9HdLx1",
        timestamp=1767226000,
        payment={"id": "c" * 64 + "-0", "value": "0.00019000", "receivedDate": 1767225999},
    )
    config = {**CONFIG, "sinks": {"console": {"type": "log"}}}
    client = await ingress(config)
    for body in (RECEIVED, redelivery, second):
        response = await client.post("/hooks/btcpay-server", data=body, headers=sig(body))
        assert response.status == 200 and "duplicate" not in await response.json()
    await run_worker(config_factory(config))

    async def counted() -> bool:
        stats = await redis.hgetall("relay:stats")
        return stats.get(b"evt:btcpay-server:payment.pending") == b"2" and bool(
            stats.get(b"evt:btcpay-server:duplicate")
        )

    await wait_for(counted)
    assert await redis.hget("relay:stats", "evt:btcpay-server:duplicate") == b"1"
    assert normalize(second).payment.amount_received == "0.00019000"
    # A redelivery of a redelivery still names the first delivery.
    again = delivery(redelivery, deliveryId="Zr5tY1uI7oP3aS9dF2gH4j")
    assert normalize(again).id == normalize(RECEIVED).id != normalize(second).id


def test_older_servers_typo_and_expiry_pair() -> None:
    """Servers before the fix wrote `orignalDeliveryId`; the two webhooks of one underpaid
    expiry (InvoiceExpired with partiallyPaid, InvoiceExpiredPaidPartial) are one event."""
    payload = json.loads(RECEIVED)
    original = payload.pop("originalDeliveryId")
    old = json.dumps({**payload, "orignalDeliveryId": original, "deliveryId": "x"}).encode()
    assert normalize(old).id == normalize(RECEIVED).id
    expired = delivery(SETTLED, type="InvoiceExpired", partiallyPaid=True)
    pair = delivery(SETTLED, type="InvoiceExpiredPaidPartial", deliveryId="other")
    assert normalize(expired).id == normalize(pair).id
    assert normalize(expired).type == "payment.review"


def test_lightning_payment_has_no_tx_hash() -> None:
    body = delivery(RECEIVED, paymentMethodId="BTC-LN", payment={"id": "d" * 64})
    event = normalize(body)
    assert (event.payment.currency, event.payment.tx_hash) == ("BTC", None)


def test_signature_is_over_the_raw_bytes() -> None:
    """Re-indenting the body (same JSON) no longer matches: BTCPay signs the bytes it sent."""
    made = provider()
    compact = json.dumps(json.loads(RECEIVED)).encode()
    headers = {k.lower(): v for k, v in sig(RECEIVED).items()}
    made.verify(InboundRequest(source="btcpay-server", body=RECEIVED, headers=headers))
    with pytest.raises(Exception, match="matches no configured secret"):
        made.verify(InboundRequest(source="btcpay-server", body=compact, headers=headers))


@pytest.mark.parametrize("event", PROVIDERS["btcpay"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    """What `relay trigger <btcpay source> <event>` sends is accepted and is that event."""
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(InboundRequest(source="btcpay-server", body=sample.body, headers=sent))
    (normalized,) = made.normalize(
        InboundRequest(source="btcpay-server", body=sample.body, headers={})
    )
    assert normalized.type == f"payment.{event}"
