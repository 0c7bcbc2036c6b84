"""Generic raw-body HMAC sources: BTCPay Server and Coinbase Commerce configured with no code.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config.model import ConfigError
from relay.providers import PROVIDERS, InboundRequest
from relay.providers.hmac import HmacProvider
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "hmac"
SECRET = TEST_SECRETS["HMAC_WEBHOOK_SECRET"]

# SPEC 5's BTCPay example, verbatim.
BTCPAY = {
    "provider": "hmac",
    "algorithm": "sha256",
    "secret": "${BTCPAY_WEBHOOK_SECRET}",
    "signature_header": "BTCPay-Sig",
    "signature_prefix": "sha256=",
    "encoding": "hex",
    "fields": {"payment_id": "invoiceId", "event": "type", "reference": "metadata.orderId"},
    "event_types": {
        "InvoiceCreated": "payment.created",
        "InvoiceReceivedPayment": "payment.pending",
        "InvoiceProcessing": "payment.paid",
        "InvoiceSettled": "payment.completed",
        "InvoiceExpired": "payment.expired",
        "InvoiceInvalid": "payment.failed",
    },
}
COINBASE = {
    "provider": "hmac",
    "secret": "${COINBASE_WEBHOOK_SECRET}",
    "signature_header": "X-CC-Webhook-Signature",
    "fields": {
        "event_id": "event.id",
        "event": "event.type",
        "payment_id": "event.data.code",
        "reference": "event.data.metadata.order_id",
        "fiat_amount": "event.data.pricing.local.amount",
        "fiat_currency": "event.data.pricing.local.currency",
        "occurred_at": "event.created_at",
    },
    "event_types": {
        "charge:created": "payment.created",
        "charge:pending": "payment.paid",  # detected on chain: funds received (Coinbase docs)
        "charge:confirmed": "payment.completed",
        "charge:failed": "payment.failed",
        "charge:delayed": "payment.review",
        "charge:resolved": "payment.completed",
    },
}
GENERIC = {
    "provider": "hmac",
    "algorithm": "sha512",
    "secret": ["${HMAC_WEBHOOK_SECRET}", "${HMAC_WEBHOOK_SECRET_2}"],
    "signature_header": "X-Signature",
    "encoding": "base64",
    "fields": {"payment_id": "id", "event": "status"},
    "event_types": {"done": "payment.completed"},
}
CONFIG = {"sources": {"btcpay": BTCPAY, "coinbase": COINBASE, "generic": GENERIC}}
BTCPAY_BODY = (DATA / "btcpay_invoice_settled.json").read_bytes()
COINBASE_BODY = (DATA / "coinbase_charge_confirmed.json").read_bytes()
GENERIC_BODY = b'{"id": "p1", "status": "done"}'


def provider(name: str) -> HmacProvider:
    made = PROVIDERS["hmac"](name, make_config(CONFIG).config.sources[name])
    assert isinstance(made, HmacProvider)
    return made


def normalize(name: str, body: bytes) -> Any:
    (event,) = provider(name).normalize(
        InboundRequest(source=name, body=body, headers={}, received_at=1.0)
    )
    return event


def test_sha1_is_supported() -> None:
    """`algorithm: sha1` verifies an HMAC-SHA1 signature."""
    config = {"sources": {"s": {**GENERIC, "algorithm": "sha1", "encoding": "hex"}}}
    made = PROVIDERS["hmac"]("s", make_config(config).config.sources["s"])
    sig = hmac.new(SECRET.encode(), GENERIC_BODY, hashlib.sha1).hexdigest()
    made.verify(InboundRequest(source="s", body=GENERIC_BODY, headers={"x-signature": sig}))


def test_btcpay_payload_normalizes() -> None:
    """BTCPay's InvoiceSettled becomes payment.completed with its invoice and order ids."""
    event = normalize("btcpay", BTCPAY_BODY)
    assert (event.type, event.provider_event) == ("payment.completed", "InvoiceSettled")
    assert (event.payment.id, event.payment.reference) == ("W1d4Zq7rL3m8Pj2Xy9Tb5", "order-1001")
    assert event.occurred_at == "2024-09-13T17:33:05Z"
    assert event.data == orjson.loads(BTCPAY_BODY)


def test_coinbase_payload_normalizes() -> None:
    """Coinbase's charge:confirmed becomes payment.completed with nested fields read."""
    event = normalize("coinbase", COINBASE_BODY)
    assert (event.type, event.provider_event) == ("payment.completed", "charge:confirmed")
    assert (event.payment.id, event.payment.reference) == ("66BEOV2A", "order-1001")
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("100.00", "USD")
    assert event.occurred_at == "2024-09-13T17:33:05Z"


def test_unlisted_event_is_other() -> None:
    """A BTCPay event that event_types does not list becomes payment.other."""
    body = orjson.dumps({**orjson.loads(BTCPAY_BODY), "type": "InvoicePaymentSettled"})
    assert normalize("btcpay", body).type == "payment.other"


def test_event_id_field_is_the_dedupe_key() -> None:
    """With `fields.event_id`, the same event id is one event and another id another one."""
    first = orjson.loads(COINBASE_BODY)
    retry = {**first, "attempt_number": 2}
    other = {**first, "event": {**first["event"], "id": "another"}}
    one = normalize("coinbase", COINBASE_BODY).id
    assert one == normalize("coinbase", orjson.dumps(retry)).id
    assert one != normalize("coinbase", orjson.dumps(other)).id


def test_without_event_id_payment_and_event_are_the_key() -> None:
    """Without `fields.event_id`, a redelivery with a new deliveryId is the same event."""
    redelivery = {**orjson.loads(BTCPAY_BODY), "deliveryId": "new", "isRedelivery": True}
    assert normalize("btcpay", BTCPAY_BODY).id == normalize("btcpay", orjson.dumps(redelivery)).id


def received_payment(delivery: str, txid: str, value: str, **extra: Any) -> bytes:
    """BTCPay's InvoiceReceivedPayment for one on-chain payment, shaped as BTCPay's
    WebhookInvoiceReceivedPaymentEvent (`payment.id` is `<txid>-<vout>`, as BTCPay's own
    tests assert): a first delivery has originalDeliveryId == deliveryId (WebhookSender)."""
    body = {
        **orjson.loads(BTCPAY_BODY),
        "deliveryId": delivery,
        "originalDeliveryId": delivery,
        "type": "InvoiceReceivedPayment",
        "afterExpiration": False,
        "paymentMethodId": "BTC-CHAIN",
        "payment": {
            "id": f"{txid}-0",
            "receivedDate": 1726248785,
            "value": value,
            "fee": "0.0000014",
            "status": "Processing",
            "destination": "bc1qexampledestination0000000000000000000",
        },
    }
    for name in ("manuallyMarked", "overPaid"):
        body.pop(name)
    return orjson.dumps({**body, **extra})


def btcpay_source(name: str, **fields: str) -> HmacProvider:
    config = {"sources": {name: {**BTCPAY, "fields": {**BTCPAY["fields"], **fields}}}}
    made = PROVIDERS["hmac"](name, make_config(config).config.sources[name])
    assert isinstance(made, HmacProvider)
    return made


def event_id_of(made: HmacProvider, body: bytes) -> str:
    (event,) = made.normalize(InboundRequest(source=made.name, body=body, headers={}))
    return event.id


def test_btcpay_partial_payments_are_two_events_by_original_delivery_id() -> None:
    """Two InvoiceReceivedPayment of one invoice are two events with `event_id:
    originalDeliveryId`; BTCPay's redelivery of the first (new deliveryId, isRedelivery,
    originalDeliveryId kept) is the same event (issue 14)."""
    made = btcpay_source("btcpay", event_id="originalDeliveryId")
    first = received_payment("DlvA", "aa" * 32, "0.00050000")
    second = received_payment("DlvB", "bb" * 32, "0.00070000")
    redelivery = orjson.dumps({**orjson.loads(first), "deliveryId": "DlvC", "isRedelivery": True})
    assert event_id_of(made, first) != event_id_of(made, second)
    assert event_id_of(made, first) == event_id_of(made, redelivery)


def test_mapped_news_fields_are_in_the_key() -> None:
    """Without an event id, mapped tx_hash/amount are in the key: two partial payments are two
    events, a redelivery with only delivery fields changed is one (SPEC 4)."""
    made = btcpay_source("btcpay", tx_hash="payment.id", amount="payment.value")
    first = received_payment("DlvA", "aa" * 32, "0.00050000")
    same_amount = received_payment("DlvB", "bb" * 32, "0.00050000")
    redelivery = received_payment("DlvC", "aa" * 32, "0.00050000", isRedelivery=True)
    assert event_id_of(made, first) != event_id_of(made, same_amount)
    assert event_id_of(made, first) == event_id_of(made, redelivery)


def test_new_confirmation_count_is_a_new_event() -> None:
    """A mapped confirmation count that changes makes a new event; an unchanged one does not."""
    made = btcpay_source("btcpay", confirmations="confirmations")
    one, two = (orjson.dumps({**orjson.loads(BTCPAY_BODY), "confirmations": n}) for n in (1, 2))
    assert event_id_of(made, one) != event_id_of(made, two)
    assert event_id_of(made, one) == event_id_of(made, one)


def test_without_any_key_field_the_body_is_the_key() -> None:
    """With neither payment id nor event in the payload, only identical bodies share an id."""
    assert normalize("generic", b'{"a": 1}').id != normalize("generic", b'{"a": 2}').id
    assert normalize("generic", b'{"a": 1}').id == normalize("generic", b'{"a": 1}').id


def test_signature_header_name_is_validated() -> None:
    """A `signature_header` that is not a header name is a config error."""
    with pytest.raises(ConfigError):
        make_config({"sources": {"s": {**GENERIC, "signature_header": "X Sig:"}}})


def test_unknown_algorithm_is_a_config_error() -> None:
    """Only sha256, sha512 and sha1 are accepted as `algorithm`."""
    with pytest.raises(ConfigError):
        make_config({"sources": {"s": {**GENERIC, "algorithm": "md5"}}})
