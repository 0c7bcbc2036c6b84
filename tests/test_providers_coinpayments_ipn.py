"""CoinPayments legacy IPN: a form body signed with hex HMAC-SHA512 in the `HMAC` header.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from relay.providers import PROVIDERS, InboundRequest
from relay.providers.coinpayments_ipn import CoinpaymentsIpnProvider, status_type
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "coinpayments_ipn"
MERCHANT = "0123456789abcdef"
SOURCE = {
    "provider": "coinpayments_ipn",
    "ipn_secret": ["${COINPAYMENTS_IPN_SECRET}", "${COINPAYMENTS_IPN_SECRET_2}"],
    "merchant_id": MERCHANT,
}
CONFIG = {"sources": {"ipn": SOURCE}}
BODY = (DATA / "api_complete_vector.txt").read_bytes()


def provider() -> CoinpaymentsIpnProvider:
    made = PROVIDERS["coinpayments_ipn"]("ipn", make_config(CONFIG).config.sources["ipn"])
    assert isinstance(made, CoinpaymentsIpnProvider)
    return made


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(
        InboundRequest(source="ipn", body=body, headers={}, received_at=1.0)
    )
    return event


def form(**fields: str) -> bytes:
    base = {
        "ipn_version": "1.0",
        "ipn_type": "api",
        "ipn_mode": "hmac",
        "ipn_id": "i1",
        "merchant": MERCHANT,
        "txn_id": "CPXX1",
        "status": "0",
    }
    return urlencode({**base, **fields}).encode()


def test_vector_body_normalizes() -> None:
    """The reference's status-100 IPN becomes payment.completed with its amounts as sent."""
    event = normalize(BODY)
    assert (event.type, event.provider_event) == ("payment.completed", "100")
    assert (event.payment.id, event.payment.reference) == ("CPXX1234", "ORDER-1")
    assert (event.payment.amount, event.payment.currency) == ("0.00025", "BTC")
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("10.00", "USD")
    assert event.payment.confirmations == 3
    assert event.payment.amount_received == "0.00025"
    assert event.data["ipn_id"] == "abc123"


def test_status_table() -> None:
    """Statuses map per SPEC 4: 0, 1/3/5, 2, >=100, -1, -2 and anything else as other."""
    expected = {
        "0": "created",
        "1": "pending",
        "3": "pending",
        "5": "pending",
        "2": "paid",
        "100": "completed",
        "101": "completed",
        "-1": "expired",
        "-2": "failed",
        "4": "other",
        "x": "other",
        "": "other",
    }
    for status, short in expected.items():
        assert status_type(status) == f"payment.{short}", status


def test_dedupe_key_is_txn_and_status() -> None:
    """Retries with a new ipn_id keep the event id; a new status gets a new one."""
    assert normalize(form(ipn_id="a")).id == normalize(form(ipn_id="b")).id
    assert normalize(form(status="0")).id != normalize(form(status="1")).id


def test_deposit_txn_id_is_the_transaction_hash() -> None:
    """A deposit IPN's txn_id (a coin transaction) is payment.tx_hash."""
    event = normalize(
        form(
            ipn_type="deposit",
            txn_id="ab" * 32,
            currency="LTC",
            amount="1.5",
            confirms="4",
            status="100",
        )
    )
    assert (event.payment.tx_hash, event.payment.amount, event.payment.currency) == (
        "ab" * 32,
        "1.5",
        "LTC",
    )


def test_deposit_keeps_its_fiat_value() -> None:
    """A deposit IPN's fiat_amount in fiat_coin is payment.fiat_amount/fiat_currency (issue 14:
    only amount1/currency1 were read, which deposits do not have)."""
    event = normalize(
        form(
            ipn_type="deposit",
            deposit_id="dep1",
            txn_id="cd" * 32,
            currency="BTC",
            amount="0.01000000",
            amounti="1000000",
            confirms="1",
            status="0",
            fiat_coin="USD",
            fiat_amount="650.12345678",
        )
    )
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("650.12345678", "USD")
    assert (event.payment.amount, event.payment.currency) == ("0.01000000", "BTC")


def test_price_in_the_coin_paid_is_no_fiat() -> None:
    """currency1 equal to the coin paid (no conversion) is no fiat value."""
    event = normalize(form(currency1="BTC", currency2="BTC", amount1="0.1", amount2="0.1"))
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == (None, None)


def test_exponent_amount_in_a_form_field_becomes_plain() -> None:
    """A form amount written `1.0E-5` (as Java writes a double) becomes 0.000010 (SPEC 4)."""
    event = normalize(form(amount2="1.0E-5", currency2="BTC", currency1="USD", amount1="1E+1"))
    assert (event.payment.amount, event.payment.fiat_amount) == ("0.000010", "10")


def test_received_amount_is_amount_received() -> None:
    """received_amount keeps its digits as payment.amount_received beside amount2."""
    event = normalize(form(amount2="0.00250000", currency2="BTC", received_amount="0.00100000"))
    assert (event.payment.amount, event.payment.amount_received) == ("0.00250000", "0.00100000")
    assert event.payment.review_reason is None


def test_more_coins_received_in_the_same_status_is_a_new_event() -> None:
    """A second partial payment (received_amount grows, status still 0) is a new event; a
    retry of the first is not."""
    first = normalize(form(received_amount="0.001", received_confirms="0", ipn_id="a"))
    retry = normalize(form(received_amount="0.001", received_confirms="0", ipn_id="b"))
    more = normalize(form(received_amount="0.002", received_confirms="0", ipn_id="c"))
    assert first.id == retry.id != more.id


def test_deposits_to_two_addresses_in_one_transaction_are_two_events() -> None:
    """Two deposits with one txn_id but their own deposit_id (the IPN page: "multiple deposits
    with the same TXID but to different addresses") are two payments, each its amount received."""
    common = {"ipn_type": "deposit", "txn_id": "ef" * 32, "currency": "BTC", "status": "100"}
    one = normalize(form(**common, deposit_id="D1", address="a1", amount="0.1"))
    two = normalize(form(**common, deposit_id="D2", address="a2", amount="0.2"))
    assert (one.payment.id, two.payment.id) == ("D1", "D2")
    assert one.id != two.id
    assert (one.payment.amount_received, two.payment.amount_received) == ("0.1", "0.2")
