"""The canonical event's building blocks (relay.events): exact decimals and PaymentEvent.build."""

from __future__ import annotations

from decimal import Decimal

import pytest

from relay.events import PaymentEvent, exact_decimal, loads


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0.10", "0.10"),
        (" 2.50 ", "2.50"),
        ("-0.000000001", "-0.000000001"),
        ("0.123456789012345678", "0.123456789012345678"),
        ("100", "100"),
    ],
)
def test_plain_text_keeps_its_digits(sent: str, kept: str) -> None:
    """A plain decimal in text is kept digit for digit (trailing zeros included)."""
    assert exact_decimal(sent) == kept


@pytest.mark.parametrize(
    ("sent", "plain"),
    [
        ("1.0E-5", "0.000010"),  # as Java writes a double, in a form field
        ("1.0e-5", "0.000010"),
        ("1E+2", "100"),
        ("2.50E+1", "25.0"),
        (".5", "0.5"),
        ("+1.5", "1.5"),
    ],
)
def test_other_number_text_becomes_a_plain_decimal(sent: str, plain: str) -> None:
    """Text in exponent (or other non-plain) form becomes a plain decimal with its precision."""
    assert exact_decimal(sent) == plain


def test_text_and_json_number_agree() -> None:
    """`1.0E-5` reads the same whether it came as a JSON number or as text (SPEC 4)."""
    number = loads(b'{"amount": 1.0E-5}')["amount"]
    assert isinstance(number, Decimal)
    assert exact_decimal(number) == exact_decimal("1.0E-5") == "0.000010"


@pytest.mark.parametrize("sent", ["NaN", "Infinity", "-inf", "sNaN", "abc", "0x10", "", "1.2.3"])
def test_non_numbers_are_no_amount(sent: str) -> None:
    """Text that is not a finite decimal is no amount at all."""
    assert exact_decimal(sent) is None


def test_huge_exponent_stays_in_exponent_form() -> None:
    """`1E+999999999` is not written out (a gigabyte of zeros), as text or as a JSON number."""
    assert exact_decimal("1E+999999999") == "1E+999999999"
    assert exact_decimal(Decimal("1E+999999999")) == "1E+999999999"


def test_float_is_refused() -> None:
    """A binary float means a lossy parser was used: an error, never a rounded amount."""
    with pytest.raises(TypeError):
        exact_decimal(0.1)


def test_build_writes_every_amount_plain() -> None:
    """amount, fiat_amount and amount_received of a built event are all plain decimals."""
    event = PaymentEvent.build(
        source="s",
        provider="p",
        dedupe_key="k",
        type="payment.paid",
        provider_event="paid",
        received_at=1.0,
        payment={"amount": "1.0E-5", "fiat_amount": Decimal("4.2E+1"), "amount_received": "1e-5"},
    )
    assert (event.payment.amount, event.payment.fiat_amount, event.payment.amount_received) == (
        "0.000010",
        "42",
        "0.00001",
    )
    assert b'"amount":"0.000010"' in event.to_json()


def build(kind: str, **payment: object) -> PaymentEvent:
    return PaymentEvent.build(
        source="s",
        provider="p",
        dedupe_key="k",
        type=kind,
        provider_event=None,
        received_at=1.0,
        payment=payment,
    )


def test_review_reason_only_on_review_events() -> None:
    """A review event always has a reason (other when unknown or not one of SPEC 11's); any
    other type has none."""
    assert build("payment.review", review_reason="underpaid").payment.review_reason == "underpaid"
    assert build("payment.review", review_reason="weird").payment.review_reason == "other"
    assert build("payment.review").payment.review_reason == "other"
    assert build("payment.expired", review_reason="underpaid").payment.review_reason is None
