"""CoinGate: no signature; the order's `token` (static `tokens` or per-order `token_key`) and
CoinGate's source addresses. Form callbacks (the default) and JSON callbacks.

Requests are built here from CoinGate's documented callback fields. What the ingress rejects is
in tests/test_provider_rejections.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from arq.jobs import deserialize_job

from relay.providers import PROVIDERS, InboundRequest, Provider
from relay.queue import deserialize, job_to_request
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "coingate"
DOCS_TOKEN = "5d02161be9bfb6192a33"  # the docs' example token
TOKEN_KEY = "coingate-test-token-key-0001"
SOURCES = {
    "coingate": {"provider": "coingate", "tokens": [DOCS_TOKEN, "coingate-old-token"]},
    "coingate-keyed": {"provider": "coingate", "token_key": TOKEN_KEY},
}
CONFIG = {"sources": SOURCES}
DOCS_FORM = (DATA / "payment_callback_docs.txt").read_bytes()


def provider(source: str = "coingate") -> Provider:
    loaded = make_config({"sources": {source: SOURCES[source]}})
    return PROVIDERS["coingate"](source, loaded.config.sources[source])


def form(**changes: str) -> bytes:
    return urlencode({**dict(parse_qsl(DOCS_FORM.decode())), **changes}).encode()


def normalize(body: bytes, source: str = "coingate") -> Any:
    (event,) = provider(source).normalize(InboundRequest(source=source, body=body, headers={}))
    return event


async def stored(redis: Any, inbound_id: str) -> InboundRequest:
    job = deserialize_job(await redis.get(f"arq:job:{inbound_id}"), deserializer=deserialize)
    return job_to_request(job.kwargs["inbound"])


def test_config_needs_a_way_to_check_the_token() -> None:
    with pytest.raises(Exception, match="tokens or token_key"):
        make_config({"sources": {"cg": {"provider": "coingate"}}})


@pytest.mark.parametrize("shape", ["form", "json"])
async def test_docs_callback_is_stored_and_normalizes(shape: str, ingress: Any, redis: Any) -> None:
    """The docs' example callback (developer.coingate.com api-callbacks), with its token, through
    the real ingress into Redis: paid -> completed, exact amounts, the merchant's order id."""
    body = DOCS_FORM if shape == "form" else (DATA / "payment_callback.json").read_bytes()
    client = await ingress(CONFIG)
    response = await client.post("/hooks/coingate", data=body)
    assert response.status == 200, await response.text()
    (event,) = provider().normalize(await stored(redis, (await response.json())["id"]))
    assert (event.type, event.provider_event) == ("payment.completed", "paid")
    assert (event.payment.id, event.payment.reference) == ("343", "ORDER-1415020039")
    assert (event.payment.amount, event.payment.currency) == ("4.81849315", "BTC")
    assert event.payment.amount_received == "4.81849315"
    assert (event.payment.fiat_amount, event.payment.fiat_currency) == ("1050.99", "USD")
    assert event.payment.tx_hash is None  # CoinGate's order callback carries none
    assert "token" not in event.data  # the callback's credential is not relayed


async def test_per_order_token_from_token_key(ingress: Any, redis: Any) -> None:
    """A per-order token: hex HMAC-SHA256(token_key, order_id), made when creating the order."""
    token = hmac.new(TOKEN_KEY.encode(), b"ORDER-1415020039", hashlib.sha256).hexdigest()
    client = await ingress(CONFIG)
    response = await client.post("/hooks/coingate-keyed", data=form(token=token))
    assert response.status == 200, await response.text()
    other_order = form(token=token, order_id="ORDER-2")
    assert (await client.post("/hooks/coingate-keyed", data=other_order)).status == 401


STATUSES = {
    "new": "created",
    "pending": "pending",
    "confirming": "pending",
    "paid": "completed",
    "invalid": "failed",
    "expired": "expired",
    "canceled": "cancelled",
    "refunded": "other",
    "partially_refunded": "other",
    "unheard_of": "other",
}


@pytest.mark.parametrize(("status", "short"), STATUSES.items())
def test_status_table(status: str, short: str) -> None:
    event = normalize(form(status=status))
    assert (event.type, event.provider_event) == (f"payment.{short}", status)


def test_json_numbers_keep_their_digits() -> None:
    body = json.dumps({"id": 1, "order_id": "o", "status": "paid", "token": DOCS_TOKEN})
    body = body.replace("}", ', "pay_amount": 0.123456789012345678, "pay_currency": "ETH"}')
    assert normalize(body.encode()).payment.amount == "0.123456789012345678"


async def test_retry_is_one_event_and_partial_payments_two(ingress: Any, redis: Any) -> None:
    """CoinGate retries a callback unchanged (up to 40 times): a duplicate at the door and one
    event id. Two partial payments of one order leave different underpaid amounts: two events."""
    client = await ingress(CONFIG)
    body = form(status="confirming", underpaid_amount="2.0")
    first, again = [await client.post("/hooks/coingate", data=body) for _ in range(2)]
    assert (await again.json())["duplicate"] is True
    assert (await first.json())["id"] == (await again.json())["id"]
    reordered = urlencode(list(reversed(parse_qsl(body.decode())))).encode()
    assert normalize(reordered).id == normalize(body).id
    topped_up = form(status="confirming", underpaid_amount="0.5")
    assert normalize(topped_up).id != normalize(body).id


@pytest.mark.parametrize("event", PROVIDERS["coingate"].sample_events)
def test_sample_verifies_and_normalizes(event: str) -> None:
    """What `relay trigger coingate <event>` sends is accepted and is that canonical event."""
    made = provider()
    sample = made.sample(event, time.time())
    sent = {k.lower(): v for k, v in sample.headers.items()}
    made.verify(
        InboundRequest(source="coingate", body=sample.body, headers=sent, received_at=time.time())
    )
    kept = {k: v for k, v in sent.items() if k in made.keep_headers}
    (normalized,) = made.normalize(
        InboundRequest(source="coingate", body=sample.body, headers=kept)
    )
    assert normalized.type == f"payment.{event}"
