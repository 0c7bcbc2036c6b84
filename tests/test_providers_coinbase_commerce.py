"""Coinbase Commerce: `X-CC-Webhook-Signature` (hex HMAC-SHA256 of the raw body with the shared
secret), one event per `event.id`.

Requests are signed here with `hmac` as coinbase-commerce-node `lib/Webhook.js` computes it,
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
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "coinbase_commerce"
SECRET = "coinbase-test-shared-secret-0001"
SOURCE = {"provider": "coinbase_commerce", "secret": [SECRET, "coinbase-old-shared-secret"]}
CONFIG = {"sources": {"coinbase-commerce": SOURCE}}
CONFIRMED = (DATA / "charge_confirmed_docs.json").read_bytes()
NODE_VECTOR = (DATA / "node_sdk_vector.json").read_bytes()
# coinbase/coinbase-commerce-node test/testWebhook.spec.js: its secret and expected signature.
NODE_SECRET = "30291a20-0bd1-4267-9b0f-e6e7b123c0bf"
NODE_SIGNATURE = "8be7742c7d372f08a6a3224edadf18a22b65fa9e28f3f2de97376cdaa092590d"
TX = "0x1fd123fb4567c8aaaef12b345de67fc01234f5fb6789f123d45d6789a123456d"


def provider(source: dict[str, Any] = SOURCE) -> Provider:
    loaded = make_config({"sources": {"cc": source}})
    return PROVIDERS["coinbase_commerce"]("cc", loaded.config.sources["cc"])


def sig(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-CC-Webhook-Signature": digest}


def normalize(body: bytes, source: dict[str, Any] = SOURCE) -> Any:
    (event,) = provider(source).normalize(
        InboundRequest(source="cc", body=body, headers={}, received_at=1.0)
    )
    return event


def changed(body: bytes, event: dict[str, Any] | None = None, **charge: Any) -> bytes:
    envelope = json.loads(body)
    envelope["event"].update(event or {})
    envelope["event"]["data"].update(charge)
    return json.dumps(envelope).encode()


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


def test_node_sdk_vector_verifies_and_normalizes() -> None:
    """The SDK's own test: its payload, secret and signature verify; a charge:created."""
    made = provider({"provider": "coinbase_commerce", "secret": NODE_SECRET})
    headers = {"x-cc-webhook-signature": NODE_SIGNATURE}
    made.verify(InboundRequest(source="cc", body=NODE_VECTOR, headers=headers))
    event = normalize(NODE_VECTOR)
    assert (event.type, event.payment.id, event.id) == (
        "payment.created",
        "66BEOV2A",
        normalize(NODE_VECTOR).id,
    )
    assert event.payment.description == "Mastering the Transition to the Information Age"


async def test_docs_example_is_stored_and_normalizes(ingress: Any, redis: Any) -> None:
    """The docs' charge:confirmed example, signed as Coinbase signs it, through the ingress:
    completed, with the settlement amount, received amount, local price, order id and tx."""
    client = await ingress(CONFIG)
    response = await client.post("/hooks/coinbase-commerce", data=CONFIRMED, headers=sig(CONFIRMED))
    assert response.status == 200, await response.text()
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider_event) == ("payment.completed", "charge:confirmed")
    assert (event.payment.id, event.payment.reference) == ("XA6G6ZFR", "order-1001")
    assert (event.payment.amount, event.payment.currency) == ("1", "USDC")
    assert event.payment.amount_received == "1"
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("1.00", "USD")
    assert (event.payment.tx_hash, event.payment.network) == (TX, "base")
    assert event.occurred_at == "2023-08-30T19:29:20Z"


def _timeline(*statuses: str, context: str | None = None) -> list[dict[str, str]]:
    steps = [{"time": "2023-08-30T19:24:45Z", "status": s} for s in statuses]
    if context:
        steps[-1]["context"] = context
    return steps


@pytest.mark.parametrize(
    ("event_type", "timeline", "expected", "reason"),
    [
        ("charge:created", _timeline("NEW"), "created", None),
        ("charge:pending", _timeline("NEW", "PENDING"), "paid", None),
        ("charge:confirmed", _timeline("NEW", "PENDING", "COMPLETED"), "completed", None),
        ("charge:failed", _timeline("NEW", "EXPIRED"), "expired", None),
        ("charge:failed", _timeline("NEW", "CANCELED"), "cancelled", None),
        (
            "charge:failed",
            _timeline("NEW", "UNRESOLVED", context="UNDERPAID"),
            "review",
            "underpaid",
        ),
        ("charge:failed", _timeline("NEW", "UNRESOLVED", context="OVERPAID"), "review", "overpaid"),
        ("charge:failed", _timeline("NEW", "UNRESOLVED", context="DELAYED"), "review", "late"),
        ("charge:failed", _timeline("NEW", "UNRESOLVED", context="MULTIPLE"), "review", "other"),
        ("charge:failed", _timeline("NEW", "SIGNED", "FAILED"), "failed", None),
        ("charge:delayed", _timeline("NEW", "EXPIRED", "UNRESOLVED"), "review", "late"),
        ("charge:resolved", _timeline("NEW", "UNRESOLVED", "RESOLVED"), "completed", None),
        ("charge:refunded", _timeline("NEW"), "other", None),
    ],
)
def test_status_table(
    event_type: str, timeline: list[dict[str, str]], expected: str, reason: str | None
) -> None:
    event = normalize(changed(CONFIRMED, {"type": event_type}, timeline=timeline))
    assert (event.type, event.payment.review_reason) == (f"payment.{expected}", reason)


def test_retry_is_one_event_and_partial_payments_two() -> None:
    """Coinbase retries an unanswered delivery (up to three days) with the same event.id and a
    new attempt_number and scheduled_for: other bytes, one event. Each payment on a charge is
    a new charge:pending with its own event.id: two partial payments are two events, and the
    second's amount_received is the exact sum."""
    envelope = json.loads(CONFIRMED)
    first_payment = envelope["event"]["data"]["payments"][0]
    half = {**first_payment, "value": {"crypto": {"amount": "0.40", "currency": "USDC"}}}
    one = changed(
        CONFIRMED, {"type": "charge:pending", "id": "e-1"}, payments=[half], timeline=_timeline()
    )
    retry = json.loads(one)
    retry |= {"attempt_number": 2, "scheduled_for": "2023-08-30T19:30:20Z", "id": "d-2"}
    second = {
        **half,
        "transaction_id": "0x" + "ab" * 32,
        "value": {"crypto": {"amount": "0.60", "currency": "USDC"}},
    }
    two = changed(one, {"id": "e-2"}, payments=[half, second])
    assert normalize(json.dumps(retry).encode()).id == normalize(one).id
    assert normalize(two).id != normalize(one).id
    assert normalize(one).payment.amount_received == "0.40"
    assert (normalize(two).payment.amount_received, normalize(two).payment.tx_hash) == (
        "1.00",
        "0x" + "ab" * 32,
    )


def test_legacy_charge_prices_by_network_and_reference_key() -> None:
    """An older charge priced every network; the reference key is configurable."""
    legacy = changed(
        CONFIRMED,
        pricing={
            "local": {"amount": "25.00", "currency": "EUR"},
            "bitcoin": {"amount": "0.00041", "currency": "BTC"},
        },
        payments=[
            {
                "network": "bitcoin",
                "transaction_id": "e" * 64,
                "status": "CONFIRMED",
                "value": {"crypto": {"amount": "0.00041", "currency": "BTC"}},
                "block": {
                    "height": 100,
                    "confirmations_accumulated": 7,
                    "confirmations_required": 2,
                },
            }
        ],
        metadata={"customer_id": "c-77"},
    )
    event = normalize(legacy, {**SOURCE, "reference_key": "customer_id"})
    assert (event.payment.amount, event.payment.currency, event.payment.amount_received) == (
        "0.00041",
        "BTC",
        "0.00041",
    )
    assert (event.payment.reference, event.payment.confirmations) == ("c-77", 7)


@pytest.mark.parametrize("event", PROVIDERS["coinbase_commerce"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(InboundRequest(source="cc", body=sample.body, headers=sent))
    (normalized,) = made.normalize(InboundRequest(source="cc", body=sample.body, headers={}))
    assert normalized.type == f"payment.{event}"
