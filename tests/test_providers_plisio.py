"""Plisio: `verify_hash` (HMAC-SHA1 of the rest of the payload, as Plisio's own code serializes
it) for form callbacks (PHP plugins) and `?json=true` JSON callbacks (Node.js code).

Requests here are signed by this module's own serializers (PHP `serialize`, `JSON.stringify`),
written from Plisio's published code, never by the provider's `sample()`. What the ingress
rejects is in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from arq.jobs import deserialize_job

from relay.providers import PROVIDERS, InboundRequest, Provider
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "plisio"
SECRET = "plisio-test-secret-key-0001"
CONFIG = {"sources": {"plisio": {"provider": "plisio", "secret_key": [SECRET, "plisio-old-key"]}}}
TX = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
NODE_SDK_KEY = "8LEfCIhEwSApKj02NM0jI-1urGthaqprSArbfzTAcvAIpMQu_jGTkXEyE3TE26Ip"


def provider(secret: str = SECRET) -> Provider:
    loaded = make_config({"sources": {"plisio": {"provider": "plisio", "secret_key": secret}}})
    return PROVIDERS["plisio"]("plisio", loaded.config.sources["plisio"])


def fields(**changes: str) -> dict[str, str]:
    """A callback's fields as Plisio's docs list them (values are strings)."""
    base = {
        "txn_id": "65f1c0de9b1e2a0011223344",
        "ipn_type": "invoice",
        "merchant": "Test shop",
        "merchant_id": "5d09fcd84f1e66138d706ed8",
        "amount": "0.00047000",
        "pending_amount": "0",
        "invoice_sum": "0.00046000",
        "invoice_commission": "0.00001000",
        "invoice_total_sum": "0.00047000",
        "currency": "BTC",
        "psys_cid": "BTC",
        "source_amount": "30.00",
        "source_currency": "USD",
        "source_rate": "63829.78",
        "order_number": "1001",
        "order_name": "Order #1001",
        "confirmations": "2",
        "status": "completed",
        "tx_id": TX,
        "tx_urls": "[&quot;https://mempool.space/tx/" + TX + "&quot;]",
        "expire_utc": "1718000000",
    }
    return {**base, **changes}


def php_serialize(values: dict[str, str]) -> bytes:
    """PHP's serialize() of a string array, after ksort (as the plugins call it)."""
    out = b"a:%d:{" % len(values)
    for key in sorted(values):
        for text in (key.encode(), values[key].encode()):
            out += b's:%d:"%s";' % (len(text), text)
    return out + b"}"


def form_body(values: dict[str, str], secret: str = SECRET) -> bytes:
    """A form callback signed as Plisio/woocommerce-plugin `verifyCallbackData` checks it."""
    hashed = dict(values)
    hashed["tx_urls"] = hashed["tx_urls"].replace("&quot;", '"')  # html_entity_decode
    digest = hmac.new(secret.encode(), php_serialize(hashed), hashlib.sha1).hexdigest()
    return urlencode({**values, "verify_hash": digest}).encode()


def json_body(values: dict[str, Any], secret: str = SECRET) -> bytes:
    """A `?json=true` callback signed as the docs' Node.js example checks it: JSON.stringify
    of the object without verify_hash, in the order received."""
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    return json.dumps({**values, "verify_hash": digest}, ensure_ascii=False).encode()


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(InboundRequest(source="plisio", body=body, headers={}))
    return event


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    """The request exactly as the ingress stored it for the worker."""
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


def test_nodejs_sdk_vector_verifies() -> None:
    """Plisio/nodejs-api-client's ResponseValidator test vector (sorted, stringified values)."""
    body = (DATA / "nodejs_sdk_vector.json").read_bytes()
    provider(NODE_SDK_KEY).verify(InboundRequest(source="plisio", body=body, headers={}))
    event = normalize(body)
    assert (event.type, event.payment.reference, event.payment.id) == (
        "payment.completed",
        "21120906",
        "61b19fd3f609ba61f4282547",
    )
    assert (event.payment.amount_received, event.payment.currency) == ("15.300000", "USDT")
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("15.00", "USD")


def test_form_vector_verifies() -> None:
    """Our own form vector (tests/data/plisio/form_completed.txt): PHP serialize, SHA-1."""
    body = (DATA / "form_completed.txt").read_bytes()
    assert body == form_body(fields())
    provider().verify(InboundRequest(source="plisio", body=body, headers={}))


@pytest.mark.parametrize("shape", ["form", "json"])
async def test_callback_is_stored_and_normalizes(shape: str, ingress: Any, redis: Any) -> None:
    """A callback built as Plisio's code builds it goes through the real ingress into Redis and
    normalizes with exact amounts, the order number, the transaction and its explorer link."""
    body = form_body(fields()) if shape == "form" else json_body(fields(tx_urls="[]"))
    client = await ingress(CONFIG)
    response = await client.post("/hooks/plisio", data=body)
    assert response.status == 200, await response.text()
    request = await stored(redis, (await response.json())["id"])
    (event,) = provider().normalize(request)
    assert (event.type, event.provider_event) == ("payment.completed", "completed")
    assert (event.payment.amount, event.payment.amount_received) == ("0.00047000", "0.00047000")
    assert (event.payment.currency, event.payment.reference) == ("BTC", "1001")
    assert (event.payment.fiat_amount, event.payment.tx_hash) == ("30.00", TX)
    if shape == "form":
        assert event.payment.tx_url == f"https://mempool.space/tx/{TX}"


def test_json_with_non_ascii_and_numbers_verifies() -> None:
    """JSON.stringify keeps non-ASCII as is and writes numbers as JS does (1.50 -> 1.5)."""
    values = {"txn_id": "t1", "status": "pending", "order_name": "Café ☕", "amount": 1.5}
    body = json_body(values).replace(b"1.5", b"1.50")
    provider().verify(InboundRequest(source="plisio", body=body, headers={}))
    assert normalize(body).payment.amount_received == "1.50"


STATUSES = {
    "new": "created",
    "pending": "pending",
    "pending internal": "pending",
    "completed": "completed",
    "mismatch": "review",
    "expired": "expired",
    "error": "failed",
    "cancelled": "cancelled",
    "cancelled duplicate": "cancelled",
    "something new": "other",
}


@pytest.mark.parametrize(("status", "short"), STATUSES.items())
def test_status_table(status: str, short: str) -> None:
    event = normalize(form_body(fields(status=status)))
    assert (event.type, event.provider_event) == (f"payment.{short}", status)
    assert (event.payment.review_reason is not None) == (short == "review")


@pytest.mark.parametrize(
    ("amount", "pending", "reason"),
    [("0.00094000", "0", "overpaid"), ("0.00020000", "0.00027000", "underpaid")],
)
def test_mismatch_review_reason_from_amounts(amount: str, pending: str, reason: str) -> None:
    event = normalize(form_body(fields(status="mismatch", amount=amount, pending_amount=pending)))
    assert (event.type, event.payment.review_reason) == ("payment.review", reason)
    assert event.payment.amount_received == amount


async def test_retry_is_one_event_and_partial_payments_two(ingress: Any, redis: Any) -> None:
    """Plisio re-sends a callback unchanged: the ingress answers duplicate with the same id, and
    the same information in another field order is the same event. Two partial payments (the
    amount received grows, the remaining pending_amount falls) are two events."""
    partial = {"status": "pending", "amount": "0.00020000", "pending_amount": "0.00027000"}
    body = form_body(fields(**partial))
    client = await ingress(CONFIG)
    first, again = [await client.post("/hooks/plisio", data=body) for _ in range(2)]
    assert (await again.json())["duplicate"] is True
    assert (await first.json())["id"] == (await again.json())["id"]
    reordered = form_body(dict(reversed(list(fields(**partial).items()))))
    assert reordered != body
    assert normalize(reordered).id == normalize(body).id
    rest = form_body(fields(status="pending", amount="0.00047000", pending_amount="0"))
    assert normalize(rest).id != normalize(body).id


@pytest.mark.parametrize("event", PROVIDERS["plisio"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    """What `relay trigger plisio <event>` sends is accepted and is that canonical event."""
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(
        InboundRequest(source="plisio", body=sample.body, headers=sent, received_at=time.time())
    )
    kept = {k: v for k, v in sent.items() if k in made.keep_headers}
    (normalized,) = made.normalize(InboundRequest(source="plisio", body=sample.body, headers=kept))
    assert normalized.type == f"payment.{event}"
