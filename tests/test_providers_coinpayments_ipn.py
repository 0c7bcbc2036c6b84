"""CoinPayments legacy IPN: a form body signed with hex HMAC-SHA512 in the `HMAC` header."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.providers import PROVIDERS, InboundRequest, Rejected
from relay.providers.coinpayments_ipn import CoinpaymentsIpnProvider, status_type
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "coinpayments_ipn"
MERCHANT = "0123456789abcdef"
SECRET = TEST_SECRETS["COINPAYMENTS_IPN_SECRET"]
SOURCE = {
    "provider": "coinpayments_ipn",
    "ipn_secret": ["${COINPAYMENTS_IPN_SECRET}", "${COINPAYMENTS_IPN_SECRET_2}"],
    "merchant_id": MERCHANT,
}
CONFIG = {"sources": {"ipn": SOURCE}}
BODY = (DATA / "api_complete_vector.txt").read_bytes()
FORM = "application/x-www-form-urlencoded"


def headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": FORM,
        "HMAC": hmac.new(secret.encode(), body, hashlib.sha512).hexdigest(),
    }


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


async def test_valid_request_is_stored(ingress: Any, redis: Any) -> None:
    """A correctly signed IPN is answered 200 and queued."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/ipn", data=BODY, headers=headers(BODY))
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


async def test_tampered_body_is_rejected(ingress: Any, redis: Any) -> None:
    """A form changed after signing is 401 bad_signature and nothing is stored."""
    client = await ingress(CONFIG)
    tampered = BODY.replace(b"amount1=10.00", b"amount1=99.00")
    response = await client.post("/hooks/ipn", data=tampered, headers=headers(BODY))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_wrong_secret_is_rejected(ingress: Any, redis: Any) -> None:
    """An IPN signed with another secret is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/ipn", data=BODY, headers=headers(BODY, secret="nope"))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_missing_hmac_header_is_rejected(ingress: Any, redis: Any) -> None:
    """An IPN without the HMAC header is 401 bad_signature."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/ipn", data=BODY, headers={"Content-Type": FORM})
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


async def test_other_merchant_is_rejected(ingress: Any, redis: Any) -> None:
    """A correctly signed IPN for another merchant id is 401 bad_signature."""
    client = await ingress(CONFIG)
    body = form(merchant="fedcba9876543210")
    response = await client.post("/hooks/ipn", data=body, headers=headers(body))
    assert response.status == 401
    assert await response.json() == {"error": "bad_signature"}
    assert await redis.zcard("relay:queue") == 0


def test_ipn_mode_other_than_hmac_is_rejected() -> None:
    """A signed IPN whose ipn_mode is not `hmac` is refused."""
    body = form(ipn_mode="httpauth")
    request = InboundRequest(source="ipn", body=body, headers={"hmac": headers(body)["HMAC"]})
    with pytest.raises(Rejected) as rejected:
        provider().verify(request)
    assert (rejected.value.status, rejected.value.error) == (401, "bad_signature")


async def test_second_secret_verifies(ingress: Any, redis: Any) -> None:
    """During rotation the second configured IPN secret verifies too."""
    client = await ingress(CONFIG)
    second = TEST_SECRETS["COINPAYMENTS_IPN_SECRET_2"]
    response = await client.post("/hooks/ipn", data=BODY, headers=headers(BODY, secret=second))
    assert response.status == 200


def test_uppercase_hex_signature_verifies() -> None:
    """The HMAC header is accepted in upper-case hex too."""
    request = InboundRequest(
        source="ipn", body=BODY, headers={"hmac": headers(BODY)["HMAC"].upper()}
    )
    provider().verify(request)


def test_vector_body_normalizes() -> None:
    """The reference's status-100 IPN becomes payment.completed with its amounts as sent."""
    event = normalize(BODY)
    assert (event.type, event.provider_event) == ("payment.completed", "100")
    assert (event.payment.id, event.payment.reference) == ("CPXX1234", "ORDER-1")
    assert (event.payment.amount, event.payment.currency) == ("0.00025", "BTC")
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("10.00", "USD")
    assert event.payment.confirmations == 3
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
