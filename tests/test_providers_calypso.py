"""Calypso: hex HMAC-SHA512 of the raw body in `Sign`, optional public key in `Key`.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from relay.events import loads
from relay.providers import PROVIDERS, InboundRequest
from relay.providers.calypso import CalypsoProvider
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "calypso"
SOURCE = {"provider": "calypso", "secret_key": ["${CALYPSO_SECRET_KEY}", "${CALYPSO_SECRET_KEY_2}"]}
CONFIG = {"sources": {"calypso": SOURCE}}
BODY = (DATA / "invoice_create_invoice.json").read_bytes()


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


def test_real_amount_is_amount_received() -> None:
    """INVOICE_PAID's realAmount ("what the client really paid") is amount_received, exact."""
    body = b'{"id": 9, "eventType": "INVOICE_PAID", "data": {"amount": 0.01, "realAmount": 1.0E-2}}'
    event = normalize(body)
    assert (event.payment.amount, event.payment.amount_received) == ("0.01", "0.010")


def test_funds_received_amount_is_what_arrived() -> None:
    """In INVOICE_FUNDS_RECEIVED_FOR_INVOICE `amount` is the received money, not the invoice's."""
    event = normalize(envelope("INVOICE_FUNDS_RECEIVED_FOR_INVOICE", amount=0.004, currency="ETH"))
    assert (event.type, event.payment.amount, event.payment.amount_received) == (
        "payment.pending",
        None,
        "0.004",
    )


def test_intervention_review_reason() -> None:
    """INVOICE_PENDING_INTERVENTION is underpaid/overpaid when the amounts say so, else other
    (the documented webhook carries no amounts); compliance checks are compliance."""
    cases = [
        (envelope("INVOICE_PENDING_INTERVENTION"), "other"),
        (envelope("INVOICE_PENDING_INTERVENTION", amount=1, realAmount=0.5), "underpaid"),
        (envelope("INVOICE_PENDING_INTERVENTION", amount=1, realAmount=1.25), "overpaid"),
        (envelope("INVOICE_PENDING_INTERVENTION", amount=1, realAmount="x"), "other"),
        (envelope("INVOICE_COMPLIANCE_CHECK", amount=0.2), "compliance"),
        (envelope("INVOICE_PENDING_COMPLIANCE"), "compliance"),
    ]
    for body, reason in cases:
        event = normalize(body)
        assert (event.type, event.payment.review_reason) == ("payment.review", reason), body
    assert (
        normalize(envelope("INVOICE_PAID", amount=1, realAmount=0.5)).payment.review_reason is None
    )
