"""Coinable: no signature exists, so the source is authenticated by a secret URL token.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from relay.providers import PROVIDERS, InboundRequest
from relay.providers.coinable import CoinableProvider
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "coinable"
SOURCE = {"provider": "coinable", "url_token": ["${COINABLE_URL_TOKEN}", "${COINABLE_URL_TOKEN_2}"]}
CONFIG = {"sources": {"coinable": SOURCE}}


def normalize(body: bytes) -> Any:
    made = PROVIDERS["coinable"]("coinable", make_config(CONFIG).config.sources["coinable"])
    assert isinstance(made, CoinableProvider)
    (event,) = made.normalize(
        InboundRequest(source="coinable", body=body, headers={}, received_at=1.0)
    )
    return event


def test_documented_events_normalize() -> None:
    """The three documented checkout events map to pending, completed and failed."""
    expected = {
        "checkout_session_payment_attempt.json": "payment.pending",
        "checkout_session_completed.json": "payment.completed",
        "checkout_session_failed.json": "payment.failed",
    }
    for name, kind in expected.items():
        body = (DATA / name).read_bytes()
        event = normalize(body)
        assert (event.type, event.payment.reference) == (kind, "1001"), name
        assert event.data == orjson.loads(body)


def test_unknown_event_is_other() -> None:
    """An event type Coinable did not document is relayed as payment.other."""
    assert normalize(b'{"type": "checkout.session.refunded", "data": {}}').type == "payment.other"


def test_dedupe_by_checkout_and_type() -> None:
    """With a checkout id, the same id and type is one event and a new type another."""
    done = orjson.dumps({"type": "checkout.session.completed", "data": {"id": "cs1", "x": 1}})
    done_again = orjson.dumps({"type": "checkout.session.completed", "data": {"id": "cs1", "x": 2}})
    failed = orjson.dumps({"type": "checkout.session.failed", "data": {"id": "cs1"}})
    assert normalize(done).id == normalize(done_again).id
    assert normalize(done).id != normalize(failed).id
