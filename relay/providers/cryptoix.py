"""Cryptoix (docs.cryptoix.io). Not to be confused with Cryptix, another provider.

Authentication: the official docs document none; the official SDKs (Python, Go) sign the raw
body with hex HMAC-SHA256 keyed with the webhook secret, sent "typically" in
`X-Cryptoix-Signature`, so the header name is configurable (`signature_header`).

Two payload shapes exist and both are read: the docs' `{"event": "payment_received",
"timestamp": ISO, "data": {"transaction_id", "order_id", "amount": "1.50", "status": "paid",
"payment_hash", "confirmation_count", ...}}` and the SDK's flat `{"uuid", "status":
"completed", "amount_fiat": 100, "timestamp": unix}` (with `type` as the event name). Numbers are
parsed as exact decimals (`relay.events.loads`).

Event names: the docs' `payment_received` (paid), and the SDK's dotted ids in `type`
(cryptoix-python docs/API.md, `configure_webhook(events=["payment.success", "payout.failed"])`;
docs/WEBHOOKS.md's handler reads `type`): `payment.<action>` and `invoice.<action>` map by the
action (`success`/`succeeded`/`received`/`paid` -> paid, `completed`, `pending`, `created`,
`expired`, `failed`, `cancelled`), a success whose `status` says `completed` is completed; any
other object (`payout.*`, `refund.*`, ...) is not a payment: payment.other, whatever its status
says. A name the relay does not know leaves it to `status`.

Amounts: `amount` in `currency` is the payment's; on a paid or completed event it is also
`amount_received` (the docs: `payment_received` is "triggered when a payment is successfully
received and confirmed"). No partial or review state is documented, so Cryptoix yields no
`payment.review`.

Dedupe key: no event id is documented. The payment id (`transaction_id`/`uuid`/`id`) + event
name + status + transaction hash + confirmation count: one event per payment and state, and a
new hash or confirmation is new information. Without a payment id, a digest of the body.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

from relay.config.types import HeaderName, Secrets, SourceConfig
from relay.events import PaymentEvent, dumps
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

# Event names that say what happened on their own.
_EVENTS = {"payment_received": "payment.paid"}

# The action of a dotted `payment.<action>` / `invoice.<action>` id (SDK: `payment.success`).
_ACTIONS = {
    "created": "payment.created",
    "pending": "payment.pending",
    "success": "payment.paid",
    "succeeded": "payment.paid",
    "received": "payment.paid",
    "paid": "payment.paid",
    "completed": "payment.completed",
    "expired": "payment.expired",
    "failed": "payment.failed",
    "cancelled": "payment.cancelled",
    "canceled": "payment.cancelled",
}
_PAYMENT_OBJECTS = ("payment", "invoice")

# Otherwise the payment's `status` decides.
_STATUSES = {
    "pending": "payment.pending",
    "paid": "payment.paid",
    "completed": "payment.completed",
    "expired": "payment.expired",
    "failed": "payment.failed",
    "cancelled": "payment.cancelled",
    "canceled": "payment.cancelled",
}

_FUNDS_IN = ("payment.paid", "payment.completed")  # the amount has arrived

_SAMPLES = ("pending", "paid", "completed", "expired", "failed", "cancelled")


class CryptoixConfig(SourceConfig):
    provider: Literal["cryptoix"]
    secret: Secrets
    signature_header: HeaderName = "X-Cryptoix-Signature"  # the SDKs hedge the name: configurable


def classify(event: str | None, status: str | None) -> str:
    """The canonical type from the event name, else the status; payouts are not payments."""
    name = (event or "").strip().casefold()
    by_status = _STATUSES.get((status or "").strip().casefold())
    kind = _EVENTS.get(name)
    if kind is None and "." in name:
        subject, _, action = name.partition(".")
        if subject not in _PAYMENT_OBJECTS:
            return "payment.other"  # payout.failed, refund.*: another object's status
        kind = _ACTIONS.get(action)
    if name.startswith("payout"):
        return "payment.other"
    if kind == "payment.paid" and by_status == "payment.completed":
        return by_status  # succeeded, and the status says it is credited already
    return kind or by_status or "payment.other"


class CryptoixProvider(Provider):
    kind = "cryptoix"
    Config = CryptoixConfig
    sample_events: ClassVar[tuple[str, ...]] = _SAMPLES
    config: CryptoixConfig

    def verify(self, request: InboundRequest) -> None:
        header = self.config.signature_header
        given = request.header(header)
        if not given:
            raise bad_signature(f"{header} header missing")
        candidate = decode_signature(given, "hex")
        if not candidate or not any_secret_matches(self.config.secret, request.body, [candidate]):
            raise bad_signature(f"{header} matches no configured secret")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        # The docs nest the payment under `data`; the SDK sends it flat.
        inner = as_dict(payload.get("data")) or payload
        event = scalar(first(payload.get("event"), payload.get("type")))
        status = scalar(first(inner.get("status"), payload.get("status")))
        event_name = None if event is None else str(event)
        status_name = None if status is None else str(status)
        payment_id = scalar(first(inner.get("transaction_id"), inner.get("uuid"), inner.get("id")))
        tx_hash = scalar(first(inner.get("payment_hash"), inner.get("tx_hash")))
        confirmations = scalar(inner.get("confirmation_count"))
        if payment_id is not None:
            key = f"pay:{payment_id}:{event_name}:{status_name}:{tx_hash}:{confirmations}"
        else:
            key = f"body:{body_digest(request.body)}"
        kind = classify(event_name, status_name)
        amount = scalar(inner.get("amount"))
        return [
            self.event(
                request,
                dedupe_key=key,
                type=kind,
                provider_event=event_name if event_name is not None else status_name,
                occurred_at=safe_time(
                    scalar(first(payload.get("timestamp"), inner.get("timestamp")))
                ),
                payment={
                    "id": payment_id,
                    "reference": scalar(inner.get("order_id")),
                    "amount": amount,
                    "amount_received": amount if kind in _FUNDS_IN else None,
                    "currency": scalar(inner.get("currency")),
                    "fiat_amount": scalar(inner.get("amount_fiat")),
                    "fiat_currency": scalar(
                        first(inner.get("currency_fiat"), inner.get("fiat_currency"))
                    ),
                    "tx_hash": tx_hash,
                    "confirmations": confirmations,
                },
                data=payload,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        if event not in _SAMPLES:
            raise KeyError(event)
        body_obj: dict[str, Any]
        if event == "paid":
            # The documented shape.
            body_obj = {
                "event": "payment_received",
                "timestamp": safe_time(int(now)),
                "data": {
                    "transaction_id": "txn_123abc456",
                    "order_id": "order_xyz789",
                    "amount": "1.50",
                    "currency": "BTC",
                    "status": "paid",
                    "payment_address": "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
                    "payment_hash": "a1b2c3d4e5f67890",
                    "confirmation_count": 6,
                },
            }
        else:
            # The SDK's flat shape, which carries the status itself.
            body_obj = {
                "uuid": "tx_test_123",
                "status": event,
                "amount_fiat": Decimal(100),
                "timestamp": int(now),
            }
        body = dumps(body_obj)
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                self.config.signature_header: hmac_digest(self.config.secret[0], body).hex(),
            },
        )
