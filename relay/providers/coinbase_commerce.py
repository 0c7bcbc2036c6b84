"""Coinbase Commerce (charges and their webhook events).

Follows Coinbase's documents (docs.cdp.coinbase.com/commerce: `api-arcitecture/webhooks-overview`
(subscribing, retries, signature), `api-arcitecture/webhooks-fields` (the envelope and its
example payload), `introduction/payment-status` (what each event means), `accepting-payment/faq`
(the `payments[]` entry), and the older docs.cloud.coinbase.com `webhooks-fields-and-security`
(the full event list: charge:delayed and charge:resolved)) and Coinbase's own code:
coinbase/coinbase-commerce-node `lib/Webhook.js` (`verifyEventBody`: HMAC-SHA256 hex of the raw
payload with the shared secret, compared in constant time; the event is the body's `event`) and
its `test/testWebhook.spec.js` vector, and coinbase/coinbase-commerce-woocommerce
`class-wc-gateway-coinbase.php` (reads `event.data.metadata.order_id` and the charge `timeline`).

Authentication: `X-CC-Webhook-Signature` = hex HMAC-SHA256 of the raw body keyed with the
endpoint's shared secret (Settings > Webhook subscriptions > Show shared secret); every
configured secret is tried, in constant time. No timestamp is signed; the documents name no
sending addresses.

Events (`event.type`) and the canonical types:

| `event.type` | type | review_reason |
|---|---|---|
| charge:created | created | |
| charge:pending ("posted to the blockchain and funds are received by the merchant": the docs' own test for "paid in full") | paid | |
| charge:confirmed (fully confirmed, finalized) | completed | |
| charge:failed, timeline ends EXPIRED | expired | |
| charge:failed, timeline ends CANCELED | cancelled | |
| charge:failed, timeline ends UNRESOLVED (`context` UNDERPAID / OVERPAID / DELAYED / other) | review | underpaid / overpaid / late / other |
| charge:failed otherwise | failed | |
| charge:delayed (a payment after the charge expired) | review | late |
| charge:resolved (the merchant resolved an unresolved charge: accepted it) | completed | |
| anything else | other | |

Fields: `payment.id` is the charge `code` (else its `id`); `reference` the charge's
`metadata.<reference_key>` (default `order_id`, as Coinbase's WooCommerce plugin writes it);
`amount`/`currency` the charge's crypto price (`pricing.settlement`, or in older charges the
`pricing` entry of the paying network); `fiat_amount`/`fiat_currency` `pricing.local`;
`amount_received` the sum of the `payments[]` `value.crypto` amounts (not counting failed ones)
when they are all in that currency (exact decimal sums); `tx_hash`, `network` and
`confirmations` from the latest payment (`transaction_id`, `network`,
`block.confirmations`); `occurred_at` the event's `created_at`; `description` the charge's.

Dedupe key: `event.id`. Coinbase retries a delivery that is not answered 200 "with an
exponential backoff for up to three days" (at most an hour apart): each retry carries the same
`event.id` with a new `attempt_number` / `scheduled_for` (so its bytes differ), and collapses
into one event; every new payment on a charge is a new event (new `event.id`), so two partial
payments are two events. Without an event id: charge + type + timeline length + latest
transaction; then a body digest.

Status API: `GET https://api.commerce.coinbase.com/charges/{code or id}` with headers
`X-CC-Api-Key` and `X-CC-Version: 2018-03-22`; the charge's `timeline` is its state (the
WooCommerce plugin's `check_orders` polls it so).
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    any_secret_matches,
    as_dict,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    first,
    hmac_digest,
    parse_json_object,
    safe_time,
    scalar,
)

_TYPES = {
    "charge:created": "payment.created",
    "charge:pending": "payment.paid",
    "charge:confirmed": "payment.completed",
    "charge:failed": "payment.failed",
    "charge:delayed": "payment.review",
    "charge:resolved": "payment.completed",
}
_UNRESOLVED = {"UNDERPAID": "underpaid", "OVERPAID": "overpaid", "DELAYED": "late"}


class CoinbaseCommerceConfig(SourceConfig):
    provider: Literal["coinbase_commerce"]
    secret: Secrets  # the webhook subscription's shared secret
    reference_key: str = "order_id"  # the charge metadata key that holds the merchant's order id


def _last(items: Any) -> dict[str, Any]:
    return as_dict(items[-1]) if isinstance(items, list) and items else {}


def classify(event_type: str, timeline: Any) -> tuple[str, str | None]:
    """(canonical type, review_reason) from the event type and the charge's last status."""
    name = event_type.casefold()
    if name == "charge:delayed":
        return "payment.review", "late"
    if name != "charge:failed":
        return _TYPES.get(name, "payment.other"), None
    last = _last(timeline)
    status = str(scalar(last.get("status")) or "").upper()
    if status == "EXPIRED":
        return "payment.expired", None
    if status in ("CANCELED", "CANCELLED"):
        return "payment.cancelled", None
    if status == "UNRESOLVED":
        context = str(scalar(last.get("context")) or "").upper()
        return "payment.review", _UNRESOLVED.get(context, "other")
    return "payment.failed", None


def _price(pricing: dict[str, Any], network: Any) -> dict[str, Any]:
    settlement = as_dict(pricing.get("settlement"))
    if settlement:
        return settlement
    # Older charges priced every network: {"bitcoin": {"amount", "currency"}, ...}.
    return as_dict(pricing.get(network)) if isinstance(network, str) else {}


def _received(payments: list[dict[str, Any]], currency: Any) -> tuple[str | None, Any]:
    """(exact sum of the crypto values paid, their currency) when they share one currency."""
    values = [
        as_dict(as_dict(p.get("value")).get("crypto"))
        for p in payments
        if str(scalar(p.get("status")) or "").casefold() != "failed"
    ]
    currencies = {scalar(v.get("currency")) for v in values}
    if not values or len(currencies) != 1 or (currency is not None and currency not in currencies):
        return None, currency
    try:
        total = sum((Decimal(str(scalar(v.get("amount")))) for v in values), Decimal(0))
    except (InvalidOperation, ValueError):
        return None, currency
    return (str(total) if total.is_finite() else None), first(currency, *currencies)


def dedupe_key(event: dict[str, Any], charge: dict[str, Any], body: bytes) -> str:
    event_id = scalar(event.get("id"))
    if event_id is not None and event_id != "":
        return f"event:{event_id}"
    code = scalar(first(charge.get("code"), charge.get("id")))
    if code is None:
        return f"body:{body_digest(body)}"
    timeline = charge.get("timeline")
    steps = len(timeline) if isinstance(timeline, list) else 0
    tx = scalar(_last(charge.get("payments")).get("transaction_id"))
    return f"charge:{code}:{scalar(event.get('type'))}:{steps}:{tx}"


class CoinbaseCommerceProvider(Provider):
    kind = "coinbase_commerce"
    Config = CoinbaseCommerceConfig
    sample_events: ClassVar[tuple[str, ...]] = (
        "created",
        "paid",
        "completed",
        "expired",
        "failed",
        "review",
    )
    config: CoinbaseCommerceConfig

    def verify(self, request: InboundRequest) -> None:
        given = request.header("x-cc-webhook-signature")
        if not given:
            raise bad_signature("X-CC-Webhook-Signature header missing")
        candidate = decode_signature(given, "hex")
        if not candidate or not any_secret_matches(self.config.secret, request.body, [candidate]):
            raise bad_signature("X-CC-Webhook-Signature matches no configured secret")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        envelope = parse_json_object(request.body)
        event = as_dict(envelope.get("event"))
        charge = as_dict(event.get("data"))
        event_type = scalar(event.get("type"))
        payments = [as_dict(p) for p in charge.get("payments") or [] if isinstance(p, dict)]
        latest = payments[-1] if payments else {}
        network = scalar(latest.get("network"))
        price = _price(as_dict(charge.get("pricing")), network)
        received, currency = _received(payments, scalar(price.get("currency")))
        local = as_dict(as_dict(charge.get("pricing")).get("local"))
        block = as_dict(latest.get("block"))
        canonical, reason = classify(str(event_type or ""), charge.get("timeline"))
        return [
            self.event(
                request,
                dedupe_key=dedupe_key(event, charge, request.body),
                type=canonical,
                provider_event=event_type,
                occurred_at=safe_time(scalar(event.get("created_at"))),
                payment={
                    "id": scalar(first(charge.get("code"), charge.get("id"))),
                    "reference": scalar(
                        as_dict(charge.get("metadata")).get(self.config.reference_key)
                    ),
                    "amount": scalar(price.get("amount")),
                    "amount_received": received,
                    "currency": currency,
                    "fiat_amount": scalar(local.get("amount")),
                    "fiat_currency": scalar(local.get("currency")),
                    "network": network,
                    "tx_hash": scalar(latest.get("transaction_id")),
                    "confirmations": scalar(
                        first(block.get("confirmations"), block.get("confirmations_accumulated"))
                    ),
                    "description": scalar(charge.get("description")),
                    "review_reason": reason,
                },
                data=envelope,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        body = sample_body(event, now, self.config.reference_key)
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-CC-Webhook-Signature": hmac_digest(self.config.secret[0], body).hex(),
            },
        )


_SAMPLES: dict[str, tuple[str, list[str], str | None]] = {
    "created": ("charge:created", ["NEW"], None),
    "paid": ("charge:pending", ["NEW", "SIGNED", "PENDING"], None),
    "completed": ("charge:confirmed", ["NEW", "SIGNED", "PENDING", "COMPLETED"], None),
    "expired": ("charge:failed", ["NEW", "EXPIRED"], None),
    "failed": ("charge:failed", ["NEW", "SIGNED", "FAILED"], None),
    "review": ("charge:failed", ["NEW", "PENDING", "UNRESOLVED"], "UNDERPAID"),
}
_SAMPLE_TX = "0x1fd123fb4567c8aaaef12b345de67fc01234f5fb6789f123d45d6789a123456d"


def sample_body(event: str, now: float, reference_key: str = "order_id") -> bytes:
    """A payload shaped as the docs' example (webhooks-fields), for `relay trigger`."""
    event_type, statuses, context = _SAMPLES[event]
    when = safe_time(int(now)) or ""
    timeline: list[dict[str, Any]] = [{"time": when, "status": s} for s in statuses]
    if context:
        timeline[-1]["context"] = context
    payments = []
    if "PENDING" in statuses:
        paid = "0.60" if context == "UNDERPAID" else "1.00"
        payments.append(
            {
                "payment_id": _SAMPLE_TX,
                "network": "base",
                "transaction_id": _SAMPLE_TX,
                "status": "confirmed" if "COMPLETED" in statuses else "pending",
                "detected_at": when,
                "value": {
                    "local": {"amount": paid, "currency": "USD"},
                    "crypto": {"amount": paid, "currency": "USDC"},
                },
            }
        )
    charge = {
        "id": "2aee9dd1-67b8-43ef-8dfe-977959850f27",
        "code": f"S{event[:3].upper()}{int(now) % 10**4:04d}",  # each sample its own charge
        "description": "Sample order from relay trigger",
        "pricing": {
            "local": {"amount": "1.00", "currency": "USD"},
            "settlement": {"amount": "1", "currency": "USDC"},
        },
        "metadata": {reference_key: "order-1001"},
        "timeline": timeline,
        "payments": payments,
    }
    envelope = {
        "attempt_number": 1,
        "event": {
            "api_version": "2018-03-22",
            "created_at": when,
            "data": charge,
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay-sample:{event}:{now}")),
            "resource": "event",
            "type": event_type,
        },
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay-sample-delivery:{event}:{now}")),
        "scheduled_for": when,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()
