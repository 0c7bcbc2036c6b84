"""Cryptomus and Heleket (one platform, two brands): the body's `sign` = md5(base64(body without
`sign`, as PHP's json_encode writes it) + API key).

Signed bodies here were made by PHP itself (tests/data/cryptomus/make_signed.php, written from
CryptomusCom/api-php-sdk and Heleket/php-sdk), or are Heleket's Go SDK test body, or are built
as PHP writes JSON and signed with `hashlib` here; never by the provider's `sample()`. What the
ingress rejects is in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import deserialize_job

from relay.providers import PROVIDERS, InboundRequest, Provider, Rejected
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data"
KEY = "cryptomus-test-payment-key-0001"  # signed tests/data/cryptomus/webhook_paid_php.json
HELEKET_KEY = "webhook-secret"  # Heleket's SDK tests' key
CRYPTOMUS = {"provider": "cryptomus", "api_key": [KEY, "cryptomus-test-payout-key-0001"]}
HELEKET = {"provider": "heleket", "api_key": [HELEKET_KEY, "heleket-old-key"]}
CONFIG = {"sources": {"cryptomus": CRYPTOMUS, "heleket": HELEKET}}
PAID = (DATA / "cryptomus" / "webhook_paid_php.json").read_bytes()
HELEKET_PAID = (DATA / "heleket" / "webhook_payment_paid_signed.json").read_bytes()
GO_SDK = (DATA / "heleket" / "go_sdk_php_style.json").read_bytes()
TX = "6f0d9c8374db57cac0d806251473de754f361c83a03cd805f74aa9da3193486b"


def provider(kind: str = "cryptomus") -> Provider:
    loaded = make_config(CONFIG)
    return PROVIDERS[kind](kind, loaded.config.sources[kind])


def signed(unsigned_json: str, key: str = KEY) -> bytes:
    """A body as the platform sends it: the PHP-written JSON, then `sign` as its last member."""
    message = base64.b64encode(unsigned_json.encode()) + key.encode()
    digest = hashlib.md5(message, usedforsecurity=False).hexdigest()
    return (unsigned_json[:-1] + f',"sign":"{digest}"}}').encode()


def php_json(payload: dict[str, Any]) -> str:
    r"""PHP's json_encode(JSON_UNESCAPED_UNICODE) for ASCII payloads: compact, `\/`."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/")


def unsigned(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    payload.pop("sign")
    return payload


def verify(body: bytes, kind: str = "cryptomus") -> None:
    provider(kind).verify(InboundRequest(source=kind, body=body, headers={}))


def normalize(body: bytes, kind: str = "cryptomus") -> Any:
    (event,) = provider(kind).normalize(
        InboundRequest(source=kind, body=body, headers={}, received_at=1.0)
    )
    return event


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


async def test_php_signed_webhook_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """A webhook PHP signed and wrote (escaped slashes, raw non-ASCII), through the ingress:
    completed, exact amounts, currency, order id and txid."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/cryptomus", data=PAID, headers={})
    assert response.status == 200, await response.text()
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider_event) == ("payment.completed", "paid")
    assert (event.payment.id, event.payment.reference) == (
        "62f88b36-a9d5-4fa6-aa26-e040c3dbf26d",
        "order-2024/17",
    )
    assert (event.payment.amount, event.payment.currency) == ("15.00", "USDT")
    assert (event.payment.amount_received, event.payment.fiat_amount) == ("15.00", "15.00")
    assert (event.payment.tx_hash, event.payment.network) == (TX, "tron")
    assert event.payment.description == "Bestellung für Jürgen – https://shop.example.com/o/17"


async def test_heleket_sdk_fixture_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """Heleket/php-sdk's webhook fixture, signed by PHP with its tests' key, at a heleket source."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/heleket", data=HELEKET_PAID, headers={})
    assert response.status == 200, await response.text()
    (event,) = provider("heleket").normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider) == ("payment.completed", "heleket")
    assert (event.payment.reference, event.payment.amount, event.payment.currency) == (
        "order-42",
        "15.00",
        "USD",
    )
    assert (event.payment.tx_hash, event.payment.amount_received) == ("deadbeef", "15.00")


def test_go_sdk_php_style_vector() -> None:
    r"""Heleket/go-sdk's TestVerifyRaw_PHPStylePayload body (`https:\/\/...`), its key."""
    verify(GO_SDK, "heleket")
    # The same content with the slashes left raw (a re-serializing proxy) still verifies:
    # the relay writes it again as PHP does.
    verify(GO_SDK.replace(b"\\/", b"/"), "heleket")


def test_a_key_of_one_brand_does_not_verify_the_other() -> None:
    with pytest.raises(Rejected):
        verify(HELEKET_PAID, "cryptomus")
    with pytest.raises(Rejected):
        verify(PAID, "heleket")


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [("amount", b'"15.00"', b'"16.00"'), ("order", b"order-2024", b"order-2025")],
)
def test_one_changed_value_is_rejected(change: str, old: bytes, new: bytes) -> None:
    with pytest.raises(Rejected) as info:
        verify(PAID.replace(old, new, 1))
    assert (info.value.status, info.value.error) == (401, "bad_signature")


def test_whitespace_and_layout_do_not_matter_but_order_does() -> None:
    """The platform signs the PHP encoding of the decoded payload: pretty-printing keeps the
    signature; reordering keys (which PHP keeps) breaks it."""
    payload = json.loads(PAID)
    verify(json.dumps(payload, indent=2, ensure_ascii=False).encode())
    reordered = {"sign": payload["sign"], **dict(reversed(list(unsigned(PAID).items())))}
    with pytest.raises(Rejected):
        verify(json.dumps(reordered).encode())


@pytest.mark.parametrize(
    ("status", "expected", "reason"),
    [
        ("check", "created", None),
        ("process", "pending", None),
        ("confirm_check", "pending", None),
        ("paid", "completed", None),
        ("paid_over", "review", "overpaid"),
        ("wrong_amount", "review", "underpaid"),
        ("wrong_amount_waiting", "review", "underpaid"),
        ("fail", "failed", None),
        ("system_fail", "failed", None),
        ("cancel", "cancelled", None),
        ("locked", "review", "compliance"),
        ("refund_process", "review", "other"),
        ("refund_fail", "review", "other"),
        ("refund_paid", "review", "other"),
        ("PAID", "completed", None),
        ("mystery", "other", None),
    ],
)
@pytest.mark.parametrize("kind", ["cryptomus", "heleket"])
def test_status_table(kind: str, status: str, expected: str, reason: str | None) -> None:
    key = KEY if kind == "cryptomus" else HELEKET_KEY
    body = signed(php_json({**unsigned(HELEKET_PAID), "status": status}), key)
    verify(body, kind)
    event = normalize(body, kind)
    assert (event.type, event.payment.review_reason) == (f"payment.{expected}", reason)


def test_payout_webhooks_are_other() -> None:
    payout = {"type": "payout", "uuid": "p-1", "order_id": "w-1", "amount": "5", "status": "paid"}
    assert normalize(signed(php_json(payout))).type == "payment.other"


def test_resend_is_one_event_and_partial_payments_two() -> None:
    """A resent webhook (same payload; here also laid out differently) is one event; a second
    partial payment raises payment_amount (wrong_amount_waiting, then paid): new events."""
    base = unsigned(HELEKET_PAID)
    first = signed(php_json({**base, "status": "wrong_amount_waiting", "payment_amount": "5.00"}))
    resent = json.dumps(json.loads(first), indent=4).encode()
    verify(resent)
    second = signed(php_json({**base, "status": "wrong_amount_waiting", "payment_amount": "9.00"}))
    done = signed(php_json({**base, "status": "paid", "payment_amount": "15.00"}))
    assert normalize(resent).id == normalize(first).id
    assert len({normalize(first).id, normalize(second).id, normalize(done).id}) == 3
    assert normalize(second).payment.amount_received == "9.00"


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"payment","uuid":"u1","status":"paid"}',  # no sign
        b'{"type":"payment","sign":""}',
        b'{"type":"payment","sign":"not hex"}',
        b'{"type":"payment","sign":12}',
        b"[1,2]",
        b"",
        b"not json",
    ],
)
def test_no_usable_sign_is_bad_signature(body: bytes) -> None:
    with pytest.raises(Rejected) as info:
        verify(body)
    assert (info.value.status, info.value.error) == (401, "bad_signature")


def test_a_body_larger_than_any_webhook_is_not_worked_on() -> None:
    body = signed(php_json({**unsigned(HELEKET_PAID), "additional_data": "x" * 70_000}))
    with pytest.raises(Rejected, match="larger than any webhook"):
        verify(body)


@pytest.mark.parametrize("kind", ["cryptomus", "heleket"])
@pytest.mark.parametrize("event", PROVIDERS["cryptomus"].sample_events)
def test_sample_verifies_and_normalizes(kind: str, event: str) -> None:
    made = provider(kind)
    sample = made.sample(event, time.time())
    made.verify(InboundRequest(source=kind, body=sample.body, headers={}))
    assert b"\\/" in sample.body  # written as the platform's PHP writes it
    (normalized,) = made.normalize(InboundRequest(source=kind, body=sample.body, headers={}))
    assert normalized.type == f"payment.{event}"
