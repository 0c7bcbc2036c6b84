"""Standard Webhooks sources: signed id.timestamp.body, whsec_ secrets, YAML field mapping.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from relay.config.model import ConfigError
from relay.providers import PROVIDERS, InboundRequest, Rejected
from relay.providers.standard_webhooks import StandardWebhooksProvider
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "standard_webhooks"
SECRET = TEST_SECRETS["PARTNER_WHSEC"]
SOURCE = {
    "provider": "standard_webhooks",
    "secret": ["${PARTNER_WHSEC}", "${PARTNER_WHSEC_2}"],
    "fields": {
        "payment_id": "data.id",
        "event": "type",
        "reference": "data.order",
        "amount": "data.amount",
        "currency": "data.currency",
    },
    "event_types": {"invoice.paid": "payment.paid", "invoice.expired": "payment.expired"},
}
BODY = (DATA / "invoice_paid.json").read_bytes()


def headers(
    body: bytes,
    secret: str = SECRET,
    msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    when: float | None = None,
) -> dict[str, str]:
    moment = datetime.fromtimestamp(int(when or time.time()), UTC)
    # Signed by the reference SDK, not by our own code.
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def provider(**overrides: Any) -> StandardWebhooksProvider:
    made = PROVIDERS["standard_webhooks"](
        "partner",
        make_config({"sources": {"partner": {**SOURCE, **overrides}}}).config.sources["partner"],
    )
    assert isinstance(made, StandardWebhooksProvider)
    return made


def request(body: bytes, sent: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        source="partner",
        body=body,
        headers={k.lower(): v for k, v in sent.items()},
        received_at=time.time(),
    )


def test_any_signature_in_the_list_verifies() -> None:
    """A space-separated list with one matching v1 entry among others verifies."""
    sent = headers(BODY)
    sent["webhook-signature"] = f"v1a,AAAA v1,Zm9v {sent['webhook-signature']}"
    provider().verify(request(BODY, sent))


def test_tolerance_is_configurable() -> None:
    """`timestamp_tolerance: 1h` accepts a message signed ten minutes ago."""
    sent = headers(BODY, when=time.time() - 600)
    provider(timestamp_tolerance="1h").verify(request(BODY, sent))


def test_stale_reason_says_how_old_or_how_far_ahead() -> None:
    """A message signed 10 minutes ago reads "600 s old"; one 10 minutes ahead "in the future"."""
    now = time.time()
    for offset, words in ((-600, "600 s old"), (600, "600 s in the future")):
        sent = headers(BODY, when=now + offset)
        inbound = InboundRequest(
            source="partner",
            body=BODY,
            headers={k.lower(): v for k, v in sent.items()},
            received_at=int(now),
        )
        with pytest.raises(Rejected) as rejected:
            provider().verify(inbound)
        assert rejected.value.error == "stale_timestamp"
        assert rejected.value.reason.endswith(words), rejected.value.reason


def test_example_normalizes_through_fields() -> None:
    """The configured dotted paths and event_types turn the payload into payment.paid."""
    (event,) = provider().normalize(request(BODY, headers(BODY)))
    assert (event.type, event.provider_event) == ("payment.paid", "invoice.paid")
    assert (event.payment.id, event.payment.reference, event.payment.currency) == (
        "inv_1001",
        "order-1001",
        "ETH",
    )
    assert event.payment.amount == "0.123456789012345678"
    assert event.occurred_at == "2022-11-03T20:26:10.344Z"


def test_unlisted_event_is_other() -> None:
    """An event that event_types does not list becomes payment.other, not dropped."""
    body = b'{"type": "invoice.refunded", "data": {"id": "inv_1"}}'
    (event,) = provider().normalize(request(body, headers(body)))
    assert (event.type, event.provider_event) == ("payment.other", "invoice.refunded")


def test_dedupe_key_is_webhook_id() -> None:
    """The same webhook-id is the same event even for other bytes; another id is another event."""
    other_bytes = BODY + b"\n"
    one = provider().normalize(request(BODY, headers(BODY, msg_id="msg_1")))[0]
    same = provider().normalize(request(other_bytes, headers(other_bytes, msg_id="msg_1")))[0]
    other = provider().normalize(request(BODY, headers(BODY, msg_id="msg_2")))[0]
    assert one.id == same.id != other.id


def test_webhook_id_is_kept_for_the_worker() -> None:
    """keep_headers includes webhook-id, which normalize needs for the dedupe key."""
    assert "webhook-id" in StandardWebhooksProvider.keep_headers


def test_unknown_canonical_type_is_a_config_error() -> None:
    """An event_types value outside the canonical types is refused at config time."""
    with pytest.raises(ConfigError) as error:
        make_config(
            {"sources": {"partner": {**SOURCE, "event_types": {"invoice.paid": "payment.done"}}}}
        )
    assert "sources.partner.event_types.invoice.paid" in str(error.value)


def test_secret_that_is_not_base64_is_a_config_error() -> None:
    """A secret that is not whsec_ + base64 is refused at config time without echoing it."""
    with pytest.raises(ConfigError) as error:
        make_config({"sources": {"partner": {**SOURCE, "secret": "whsec_not*base64!"}}})
    assert "not*base64" not in str(error.value)
