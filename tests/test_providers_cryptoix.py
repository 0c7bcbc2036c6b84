"""Cryptoix: hex HMAC-SHA256 of the raw body in a configurable header (SDK scheme).

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from relay.events import loads
from relay.providers import PROVIDERS, InboundRequest
from relay.providers.cryptoix import CryptoixProvider
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "cryptoix"
SOURCE = {
    "provider": "cryptoix",
    "secret": ["${CRYPTOIX_WEBHOOK_SECRET}", "${CRYPTOIX_WEBHOOK_SECRET_2}"],
}
CONFIG = {"sources": {"cryptoix": SOURCE}}
BODY = (DATA / "payment_received_docs.json").read_bytes()
FLAT = (DATA / "sdk_completed_vector.json").read_bytes()


def normalize(body: bytes) -> Any:
    made = PROVIDERS["cryptoix"]("cryptoix", make_config(CONFIG).config.sources["cryptoix"])
    assert isinstance(made, CryptoixProvider)
    (event,) = made.normalize(
        InboundRequest(source="cryptoix", body=body, headers={}, received_at=1.0)
    )
    return event


def test_docs_example_normalizes() -> None:
    """The docs' payment_received example becomes payment.paid with its nested fields."""
    event = normalize(BODY)
    assert (event.type, event.provider_event) == ("payment.paid", "payment_received")
    assert (event.payment.id, event.payment.reference) == ("txn_123abc456", "order_xyz789")
    assert (event.payment.amount, event.payment.currency) == ("1.50", "BTC")
    assert event.payment.amount_received == "1.50"  # "successfully received and confirmed"
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


def test_sdk_dotted_event_ids_are_mapped() -> None:
    """The SDK's `type` ids (payment.success, ...) decide the type, status or no status
    (issue 14: `type` was read but only `payment_received` was known)."""
    expected = {
        "payment.success": "paid",
        "payment.succeeded": "paid",
        "payment.pending": "pending",
        "payment.completed": "completed",
        "payment.failed": "failed",
        "payment.expired": "expired",
        "payment.cancelled": "cancelled",
        "payment.created": "created",
        "invoice.paid": "paid",
        "Payment.Success": "paid",
    }
    for name, short in expected.items():
        body = orjson.dumps({"type": name, "uuid": "u", "amount": "1.50", "currency": "BTC"})
        event = normalize(body)
        assert (event.type, event.provider_event) == (f"payment.{short}", name), name


def test_success_with_completed_status_is_completed() -> None:
    """payment.success whose status says completed (credited) is payment.completed."""
    body = orjson.dumps({"type": "payment.success", "uuid": "u", "status": "completed"})
    assert normalize(body).type == "payment.completed"


def test_other_objects_are_other_whatever_their_status() -> None:
    """payout.failed and refund.completed are not payments: payment.other, not failed/completed."""
    for name, status in (("payout.failed", "failed"), ("refund.completed", "completed")):
        body = orjson.dumps({"type": name, "uuid": "u", "status": status})
        assert normalize(body).type == "payment.other", name


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


def test_amount_received_only_once_funds_are_in() -> None:
    """A pending or failed payment's amount is not what has arrived; a completed one's is."""
    for status, received in (("pending", None), ("failed", None), ("completed", "2.5")):
        body = orjson.dumps({"uuid": "u", "status": status, "amount": "2.5", "currency": "ETH"})
        assert normalize(body).payment.amount_received == received, status
