"""Binance Pay: SHA256withRSA over timestamp, nonce and body (each followed by LF), base64 in
BinancePay-Signature, checked with Binance's public key (PEM, a list).

The key pairs under tests/data/binance_pay/ were generated for these tests (Binance keeps its
private key; nothing here is Binance's). Signatures are made here as Binance's documented Java
and PHP verification code expects them, never by the provider's `sample()`. What the ingress
rejects is in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import deserialize_job
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relay.providers import PROVIDERS, InboundRequest, Provider, Rejected
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "binance_pay"
PUBLIC = (DATA / "test_public_key.pem").read_text()
OTHER_PUBLIC = (DATA / "other_public_key.pem").read_text()
PRIVATE = (DATA / "test_private_key.pem").read_bytes()
OTHER_PRIVATE = (DATA / "other_private_key.pem").read_bytes()
DOCS_BODY = (DATA / "order_notification_docs.json").read_bytes()
SOURCE = {"provider": "binance_pay", "public_key": [OTHER_PUBLIC, PUBLIC]}
CONFIG = {"sources": {"binance": SOURCE}}


def provider(source: dict[str, Any] | None = None) -> Provider:
    loaded = make_config({"sources": {"binance": source or SOURCE}})
    return PROVIDERS["binance_pay"]("binance", loaded.config.sources["binance"])


@functools.cache
def wrong_private_key() -> bytes:
    """A key pair none of the configured public keys belongs to."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def headers(body: bytes, key: bytes = PRIVATE, at: float | None = None) -> dict[str, str]:
    """What Binance sends: its signature over timestamp, nonce and body, LF after each."""
    private = serialization.load_pem_private_key(key, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    stamp = str(int((time.time() if at is None else at) * 1000))
    nonce = "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeF"
    payload = f"{stamp}\n{nonce}\n".encode() + body + b"\n"
    signature = private.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return {
        "Content-Type": "application/json",
        "BinancePay-Timestamp": stamp,
        "BinancePay-Nonce": nonce,
        "BinancePay-Signature": base64.b64encode(signature).decode(),
        "BinancePay-Certificate-SN": "0ce2a6d9e23e9f2c8d0b7f1f2ad5a1f3",
    }


def inbound(body: bytes, sent: dict[str, str], received_at: float | None = None) -> InboundRequest:
    return InboundRequest(
        source="binance",
        body=body,
        headers={k.lower(): v for k, v in sent.items()},
        received_at=time.time() if received_at is None else received_at,
    )


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(InboundRequest(source="binance", body=body, headers={}))
    return event


def envelope(biz_type: str = "PAY", status: str = "PAY_SUCCESS", biz_id: str = "1") -> bytes:
    data = json.dumps({"merchantTradeNo": "m1", "totalFee": 1.5, "currency": "USDT"})
    return json.dumps(
        {"bizType": biz_type, "bizIdStr": biz_id, "bizStatus": status, "data": data}
    ).encode()


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


async def test_docs_notification_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """The docs' Order Notification sample, signed with the test key, through the real ingress:
    PAY_SUCCESS -> completed, totalFee's digits as sent, merchantTradeNo as the reference."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/binance", data=DOCS_BODY, headers=headers(DOCS_BODY))
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert (answer["returnCode"], answer["returnMessage"]) == ("SUCCESS", None)  # Binance's form
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider_event) == ("payment.completed", "PAY_SUCCESS")
    assert (event.payment.id, event.payment.reference) == ("29383937493038367292", "9825382937292")
    assert (event.payment.amount, event.payment.currency) == ("0.88000000", "USDT")
    assert event.payment.amount_received == "0.88000000"
    assert event.payment.tx_hash is None  # Binance Pay is off-chain: transactionId is in data
    assert event.data["data"]["transactionId"] == "M_R_282737362839373"
    assert event.occurred_at == "2021-04-27T07:35:39.664Z"


def test_rotation_second_key_and_certificate_body_forms() -> None:
    """Either configured key verifies; a bare base64 certPublic (no PEM armour) is accepted."""
    bare = "".join(line for line in PUBLIC.splitlines() if not line.startswith("-----"))
    made = provider({"provider": "binance_pay", "public_key": [bare]})
    made.verify(inbound(DOCS_BODY, headers(DOCS_BODY)))
    provider().verify(inbound(DOCS_BODY, headers(DOCS_BODY, OTHER_PRIVATE)))


def test_config_refuses_what_is_not_an_rsa_public_key() -> None:
    with pytest.raises(Exception, match="public key"):
        make_config({"sources": {"b": {"provider": "binance_pay", "public_key": "nope"}}})


@pytest.mark.parametrize(("shift", "ok"), [(-240, True), (-600, False), (600, False)])
def test_timestamp_tolerance(shift: float, ok: bool) -> None:
    now = time.time()
    request = inbound(DOCS_BODY, headers(DOCS_BODY, at=now + shift), received_at=now)
    if ok:
        provider().verify(request)
    else:
        with pytest.raises(Rejected) as info:
            provider().verify(request)
        assert info.value.error == "stale_timestamp"


STATUSES = [
    ("PAY", "PAY_SUCCESS", "completed"),
    ("PAY", "PAY_CLOSED", "expired"),
    ("PAY", "PAY_SOMETHING", "other"),
    ("PAY_REFUND", "REFUND_SUCCESS", "other"),
    ("PAY_REFUND", "REFUND_REJECTED", "other"),
    ("PAYOUT", "SUCCESS", "other"),
]


@pytest.mark.parametrize(("biz_type", "status", "short"), STATUSES)
def test_status_table(biz_type: str, status: str, short: str) -> None:
    event = normalize(envelope(biz_type, status))
    assert (event.type, event.provider_event) == (f"payment.{short}", status)
    assert event.payment.amount == "1.5"


def test_data_that_is_not_json_still_relays() -> None:
    body = json.dumps({"bizType": "PAY", "bizIdStr": "7", "bizStatus": "PAY_SUCCESS", "data": "{"})
    event = normalize(body.encode())
    assert (event.type, event.payment.reference, event.data["data"]) == (
        "payment.completed",
        None,
        "{",
    )


async def test_retries_are_one_event_and_two_orders_two(ingress: Any, redis: Any) -> None:
    """Binance re-signs each retry (new timestamp and nonce) over the same body: the body is
    stored once (duplicate at the door) and is one event. Another order is another event."""
    client = await ingress(CONFIG)
    first = await client.post("/hooks/binance", data=DOCS_BODY, headers=headers(DOCS_BODY))
    again = await client.post(
        "/hooks/binance", data=DOCS_BODY, headers=headers(DOCS_BODY, at=time.time() + 1)
    )
    assert (await again.json())["duplicate"] is True
    assert (await first.json())["id"] == (await again.json())["id"]
    assert normalize(envelope(biz_id="1")).id == normalize(envelope(biz_id="1")).id
    assert normalize(envelope(biz_id="1")).id != normalize(envelope(biz_id="2")).id


@pytest.mark.parametrize("event", PROVIDERS["binance_pay"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    """What `relay trigger binance <event>` sends is accepted and is that canonical event."""
    made = provider({**SOURCE, "sample_private_key": PRIVATE.decode()})
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(
        InboundRequest(source="binance", body=sample.body, headers=sent, received_at=time.time())
    )
    kept = {k: v for k, v in sent.items() if k in made.keep_headers}
    (normalized,) = made.normalize(InboundRequest(source="binance", body=sample.body, headers=kept))
    assert normalized.type == f"payment.{event}"
