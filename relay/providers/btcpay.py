"""BTCPay Server (Greenfield API webhooks).

Follows the Greenfield webhooks document (btcpayserver/btcpayserver
`BTCPayServer/wwwroot/swagger/v1/swagger.template.webhooks.json`: `WebhookEvent`,
`WebhookInvoice*Event`, the `BTCPay-Sig` parameter) and BTCPay's own sending code, read at
btcpayserver/btcpayserver 03345c2 (Jul 2026): `BTCPayServer/Plugins/Webhooks/WebhookSender.cs`
(signs, sends, redelivers), `.../TriggerProviders/InvoiceTriggerProvider.cs` (which invoice
event becomes which webhook, and its flags), `BTCPayServer/HostedServices/InvoiceWatcher.cs`
(when each fires), `BTCPayServer.Client/Models/WebhookEvent.cs`, `WebhookInvoiceEvent.cs`,
`WebhookEventType.cs` and `InvoicePaymentMethodDataModel.cs` (the payload's fields).

Authentication: `BTCPay-Sig: sha256=<hex>`, HMAC-SHA256 keyed with the UTF-8 of the webhook's
secret over the raw body (`WebhookSender.SendDelivery`; the body is Newtonsoft's indented,
camel-case JSON, UTF-8 without BOM). Compared in constant time against every configured secret.
No timestamp is signed, no source address is published (BTCPay is self-hosted: allow your own
server's address in `allowed_ips` if you like).

Events (`type`) and the canonical types:

| `type` | type | review_reason |
|---|---|---|
| InvoiceCreated | created | |
| InvoiceReceivedPayment (a payment seen, e.g. 0 confirmations) | pending | |
| InvoicePaymentSettled (one payment has its confirmations) | pending | |
| either of those two with `afterExpiration: true` | review | late |
| InvoiceProcessing (paid in full, confirmations due) | paid | |
| InvoiceProcessing with `overPaid: true` | review | overpaid |
| InvoiceSettled (the merchant can deliver; `overPaid` stays in data) | completed | |
| InvoiceExpired | expired | |
| InvoiceExpired with `partiallyPaid: true`, InvoiceExpiredPaidPartial | review | underpaid |
| InvoicePaidAfterExpiration | review | late |
| InvoiceInvalid (payments failed to confirm in time, or marked invalid) | failed | |
| anything else (InvoiceRefund, Payout*, PaymentRequest*, Subscriber*, ...) | other | |

The invoice's `additionalStatus` (PaidPartial, PaidOver, PaidLate) is not in any webhook: these
flags are how the webhooks say it. Matching ignores case.

Fields: `payment.id` is `invoiceId`; `reference` the merchant's `metadata.orderId`; webhooks
carry no invoice price (`amount` stays null: the status API has it); a payment event's
`payment.value` is `amount_received` (that payment's value, in the payment method's currency),
`currency` the crypto code of `paymentMethodId` (`BTC-CHAIN`, `BTC-LN`; `paymentMethod` in older
servers), `network` the payment method id itself, `tx_hash` the transaction id of an on-chain
payment (its `payment.id` is `<txid>-<vout>`; a Lightning payment has none), `occurred_at` the
delivery's `timestamp` (Unix seconds, the same on every redelivery), `description`
`metadata.itemDesc`.

Dedupe key: `webhookId` + `originalDeliveryId`. A delivery is one event: BTCPay redelivers (after
10 s, 1 min, then six times 10 min apart, and on "Redeliver") with a NEW `deliveryId` but the
same `originalDeliveryId` (`WebhookSender.CreateRedeliveryRequest`; a first delivery has
`originalDeliveryId == deliveryId`, and servers before the typo fix wrote `orignalDeliveryId`),
so redeliveries collapse while a second partial payment (a new InvoiceReceivedPayment, another
`payment.id`) is a new delivery and a new event. Exception: BTCPay sends both InvoiceExpired
(`partiallyPaid`) and InvoiceExpiredPaidPartial for the one expiry of an underpaid invoice
(`InvoiceWatcher.UpdateInvoice`): both are keyed `invoiceId` + `expired-partially-paid`, one
event. Without delivery ids: invoice + type + payment id + payment status; then a body digest.

Status API: Greenfield `GET /api/v1/stores/{storeId}/invoices/{invoiceId}` (`status`,
`additionalStatus`, `amount`, `currency`) and `.../payment-methods` (payments), with
`Authorization: token <API key>` holding `btcpay.store.canviewinvoices`
(`swagger.template.invoices.json`).
"""

from __future__ import annotations

import json
import re
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

_PREFIX = "sha256="

# Lower-cased event type -> canonical type, before the flags below are looked at.
_TYPES = {
    "invoicecreated": "payment.created",
    "invoicereceivedpayment": "payment.pending",
    "invoicepaymentsettled": "payment.pending",
    "invoiceprocessing": "payment.paid",
    "invoicesettled": "payment.completed",
    "invoiceexpired": "payment.expired",
    "invoiceinvalid": "payment.failed",
    "invoiceexpiredpaidpartial": "payment.review",
    "invoicepaidafterexpiration": "payment.review",
}

_PAYMENT_EVENTS = ("invoicereceivedpayment", "invoicepaymentsettled")
_OUTPOINT = re.compile(r"([0-9a-fA-F]{64})-[0-9]+")


class BtcpayConfig(SourceConfig):
    provider: Literal["btcpay"]
    secret: Secrets  # the webhook's secret (Store > Webhooks); a list while rotating


def classify(payload: dict[str, Any]) -> tuple[str, str | None]:
    """(canonical type, review_reason) of a Greenfield webhook payload."""
    name = str(scalar(payload.get("type")) or "").casefold()
    if name in _PAYMENT_EVENTS and payload.get("afterExpiration") is True:
        return "payment.review", "late"
    if name == "invoiceprocessing" and payload.get("overPaid") is True:
        return "payment.review", "overpaid"
    if name == "invoiceexpiredpaidpartial" or (
        name == "invoiceexpired" and payload.get("partiallyPaid") is True
    ):
        return "payment.review", "underpaid"
    if name == "invoicepaidafterexpiration":
        return "payment.review", "late"
    return _TYPES.get(name, "payment.other"), None


def _crypto_code(method: Any) -> str | None:
    """`BTC-CHAIN`, `BTC-LN`, `BTC_LightningLike`, `BTC` -> `BTC`."""
    if not isinstance(method, str) or not method:
        return None
    return re.split(r"[-_]", method, maxsplit=1)[0] or None


def _tx_hash(payment_id: Any, method: Any) -> str | None:
    """The txid of an on-chain payment (its id is the outpoint `<txid>-<vout>`); a Lightning
    payment's id is its payment hash, not a transaction."""
    upper = str(method or "").upper()
    if not isinstance(payment_id, str) or "LN" in upper or "LIGHTNING" in upper:
        return None
    match = _OUTPOINT.fullmatch(payment_id)
    return match.group(1) if match else None


def dedupe_key(payload: dict[str, Any], body: bytes) -> str:
    name = str(scalar(payload.get("type")) or "").casefold()
    invoice = scalar(payload.get("invoiceId"))
    if invoice is not None and classify(payload)[1] == "underpaid":
        # InvoiceExpired(partiallyPaid) and InvoiceExpiredPaidPartial: one expiry, one event.
        return f"invoice:{invoice}:expired-partially-paid"
    original = scalar(
        first(
            payload.get("originalDeliveryId"),
            payload.get("orignalDeliveryId"),
            payload.get("deliveryId"),
        )
    )
    if original is not None:
        return f"delivery:{scalar(payload.get('webhookId'))}:{original}"
    if invoice is not None:
        payment = as_dict(payload.get("payment"))
        paid = f"{scalar(payment.get('id'))}:{scalar(payment.get('status'))}"
        return f"invoice:{invoice}:{name}:{paid}"
    return f"body:{body_digest(body)}"


class BtcpayProvider(Provider):
    kind = "btcpay"
    Config = BtcpayConfig
    sample_events: ClassVar[tuple[str, ...]] = (
        "created",
        "pending",
        "paid",
        "completed",
        "expired",
        "failed",
        "review",
    )
    config: BtcpayConfig

    def verify(self, request: InboundRequest) -> None:
        given = (request.header("btcpay-sig") or "").strip()
        if not given:
            raise bad_signature("BTCPay-Sig header missing")
        if given[: len(_PREFIX)].lower() != _PREFIX:
            raise bad_signature("BTCPay-Sig does not start with sha256=")
        candidate = decode_signature(given[len(_PREFIX) :], "hex")
        if not candidate or not any_secret_matches(self.config.secret, request.body, [candidate]):
            raise bad_signature("BTCPay-Sig matches no configured secret")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        metadata = as_dict(payload.get("metadata"))
        payment = as_dict(payload.get("payment"))
        method = scalar(first(payload.get("paymentMethodId"), payload.get("paymentMethod")))
        canonical, reason = classify(payload)
        return [
            self.event(
                request,
                dedupe_key=dedupe_key(payload, request.body),
                type=canonical,
                provider_event=scalar(payload.get("type")),
                occurred_at=safe_time(scalar(payload.get("timestamp"))),
                payment={
                    "id": scalar(payload.get("invoiceId")),
                    "reference": scalar(metadata.get("orderId")),
                    "amount_received": scalar(payment.get("value")),
                    "currency": _crypto_code(method) if payment else None,
                    "network": method,
                    "tx_hash": _tx_hash(scalar(payment.get("id")), method),
                    "description": scalar(metadata.get("itemDesc")),
                    "review_reason": reason,
                },
                data=payload,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        body = sample_body(event, now)
        signature = hmac_digest(self.config.secret[0], body).hex()
        return SampleRequest(
            body=body,
            headers={"Content-Type": "application/json", "BTCPay-Sig": _PREFIX + signature},
        )


_SAMPLE_TYPES = {
    "created": ("InvoiceCreated", {}),
    "pending": ("InvoiceReceivedPayment", {"afterExpiration": False}),
    "paid": ("InvoiceProcessing", {"overPaid": False}),
    "completed": ("InvoiceSettled", {"manuallyMarked": False, "overPaid": False}),
    "expired": ("InvoiceExpired", {"partiallyPaid": False}),
    "failed": ("InvoiceInvalid", {"manuallyMarked": False}),
    "review": ("InvoiceProcessing", {"overPaid": True}),
}
_SAMPLE_TXID = "3f5c3e2a8d1b4f6e9a0c7b2d5e8f1a4c6b9d2e5f8a1b4c7d0e3f6a9b2c5d8e1f"


def sample_body(event: str, now: float) -> bytes:
    """A payload laid out as BTCPay's Newtonsoft serializer writes it (flags of the event's
    own class first, then the envelope, then storeId, invoiceId, metadata; indented)."""
    event_type, flags = _SAMPLE_TYPES[event]
    stamp = int(now)
    delivery = f"WrR4sample{stamp}{event}"
    payload: dict[str, Any] = dict(flags)
    if event_type == "InvoiceReceivedPayment":
        payload["paymentMethodId"] = "BTC-CHAIN"
        payload["payment"] = {
            "id": f"{_SAMPLE_TXID}-0",
            "receivedDate": stamp,
            "value": "0.00125000",
            "fee": "0.00000140",
            "status": "Processing",
            "destination": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        }
    payload |= {
        "deliveryId": delivery,
        "webhookId": "Lq8QWnGkWa3iDjXyCP4sYm",
        "originalDeliveryId": delivery,
        "isRedelivery": False,
        "type": event_type,
        "timestamp": stamp,
        "storeId": "9CiNzKoANXxmk5ayZngSXrHTiVvvgCrwrpFQd4m2K776",
        "invoiceId": f"Sample{event.capitalize()}{stamp}",  # each sample its own invoice
        "metadata": {"orderId": "order-1001", "itemDesc": "Sample order from relay trigger"},
    }
    return json.dumps(payload, indent=2).encode()
