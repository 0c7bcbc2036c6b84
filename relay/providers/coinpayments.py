"""CoinPayments v2 webhooks (api.coinpayments.com): invoice events of an API integration ("client").

Authentication: `X-CoinPayments-Signature` = base64 HMAC-SHA256, keyed with the client secret as
UTF-8 (it looks like base64 but is not decoded), of the bytes `EF BB BF` (a UTF-8 BOM, from the
sender's .NET StreamWriter) + `POST` + the registered notification URL + the client id + the
`X-CoinPayments-Timestamp` header value + the raw body, with no separators. The URL is the one
configured as `notification_url` (what CoinPayments signs), never the Host the request came to,
which a proxy may change. The timestamp (UTC, no zone) must be within `timestamp_tolerance`.

Dedupe key: `invoice.id` + the event type (case-folded) + a digest of the `invoice` object.
Not the top-level `id`: it is a notification id that live traffic shows changing between
deliveries of the same event, so it would let a retry through as a new event, and a
byte-identical retry is already caught at the door. The invoice object, on the other hand, is
the information: a retry carries the same one, while a new confirmation or state changes it.
Wallet notifications (no invoice) use `transactionId` + type + confirmations; anything else
falls back to the top-level `id`, then to a digest of the body.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, field_validator

from relay.config.types import Duration, Secrets, SourceConfig
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
    header_bytes,
    hmac_digest,
    parse_instant,
    parse_json_object,
    safe_time,
    scalar,
    skew_text,
    stale_timestamp,
    token_matches,
    value_digest,
)

BOM = b"\xef\xbb\xbf"

# Keys are case-folded: subscriptions say `invoicePaid`, live payloads say `InvoicePaid`.
_TYPES = {
    "invoicecreated": "payment.created",
    "paymentcreated": "payment.created",
    "invoicepending": "payment.pending",
    "invoicepaid": "payment.paid",
    "invoicecompleted": "payment.completed",
    "invoicecancelled": "payment.cancelled",
    "invoicetimedout": "payment.expired",
    "paymenttimedout": "payment.expired",
}

# What `relay trigger` sends: the PascalCase type seen live, and the invoice state it carries.
_SAMPLES = {
    "created": ("InvoiceCreated", "Unpaid"),
    "pending": ("InvoicePending", "Pending"),
    "paid": ("InvoicePaid", "Paid"),
    "completed": ("InvoiceCompleted", "Completed"),
    "cancelled": ("InvoiceCancelled", "Cancelled"),
    "expired": ("InvoiceTimedOut", "TimedOut"),
}


class CoinpaymentsConfig(SourceConfig):
    provider: Literal["coinpayments"]
    client_id: str = Field(min_length=1)
    client_secret: Secrets
    notification_url: str  # exactly as registered with CoinPayments: it is part of the signature
    timestamp_tolerance: Duration = Field(default=300.0, gt=0)

    @field_validator("notification_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("not a valid URL (the notificationsUrl registered with CoinPayments)")
        return value


def _client_form(client_id: str) -> str:
    # The dashboard shows the client id as a dashed UUID, the header sends it as 32 hex digits.
    return client_id.replace("-", "").strip().lower()


class CoinpaymentsProvider(Provider):
    kind = "coinpayments"
    Config = CoinpaymentsConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: CoinpaymentsConfig

    def verify(self, request: InboundRequest) -> None:
        config = self.config
        signature = request.header("x-coinpayments-signature")
        client = request.header("x-coinpayments-client")
        stamp = request.header("x-coinpayments-timestamp")
        if not signature or not client or not stamp:
            raise bad_signature("X-CoinPayments-Signature, -Client or -Timestamp header missing")
        if not token_matches([_client_form(config.client_id)], _client_form(client)):
            raise bad_signature("X-CoinPayments-Client is not the configured client_id")
        candidate = decode_signature(signature, "base64")
        head = BOM + request.method.encode() + config.notification_url.encode()
        tail = header_bytes(stamp) + request.body
        matched = False
        # The sender signs the client id as it sends it; the configured spelling is tried too.
        for client_id in dict.fromkeys((header_bytes(client), config.client_id.encode())):
            matched |= any_secret_matches(
                config.client_secret, head + client_id + tail, [candidate] if candidate else []
            )
        if not matched:
            raise bad_signature("X-CoinPayments-Signature matches no configured client_secret")
        # After the signature: `stale_timestamp` then means "authentic but old" (clock, queueing).
        sent_at = parse_instant(stamp)
        if sent_at is None:
            raise bad_signature("X-CoinPayments-Timestamp is not a date-time")
        now = request.received_at or time.time()
        if abs(now - sent_at) > config.timestamp_tolerance:
            raise stale_timestamp(
                f"X-CoinPayments-Timestamp {stamp.strip()[:32]} is {skew_text(sent_at, now)}"
            )
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        data = parse_json_object(request.body)
        provider_event = scalar(data.get("type"))
        name = str(provider_event) if provider_event is not None else ""
        kind = _TYPES.get(name.casefold(), "payment.other")
        invoice = as_dict(data.get("invoice"))
        if invoice:
            payment = {
                "id": scalar(invoice.get("id")),
                "reference": scalar(first(invoice.get("invoiceId"), invoice.get("invoiceNumber"))),
                # Invoice amounts are integer minor units of a currency given only by a numeric
                # id: the decimal value is unknown here, so they stay in `data` only.
                "amount": _decimal_value(as_dict(invoice.get("amount")).get("total")),
                "description": scalar(invoice.get("description")),
            }
        else:
            # Wallet/address notifications: amounts arrive as decimal strings.
            payment = {
                "id": scalar(first(data.get("transactionId"), data.get("spendRequestId"))),
                "amount": _decimal_value(data.get("amount")),
                "tx_hash": scalar(data.get("txHash")),
                "confirmations": scalar(data.get("confirmations")),
            }
        return [
            self.event(
                request,
                dedupe_key=_dedupe_key(data, invoice, name, request.body),
                type=kind,
                provider_event=None if provider_event is None else name,
                occurred_at=safe_time(scalar(data.get("timestamp"))),
                payment=payment,
                data=data,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        kind, state = _SAMPLES[event]
        moment = datetime.fromtimestamp(int(now), UTC)
        notification_id = hashlib.sha256(f"{kind}{now}".encode()).hexdigest()[:32]
        body = orjson.dumps(
            {
                "id": notification_id,
                "type": kind,
                "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00"),
                "invoice": {
                    "invoiceId": "0067",
                    "id": "2008d68d-0f66-44ec-8500-68d054b882b9",
                    "merchantClientId": self.config.client_id,
                    "invoiceNumber": "0067",
                    "createdAt": int(now) - 60,
                    "expiresDate": int(now) + 3600,
                    "lineItems": [
                        {"amount": 10000, "name": "test item", "quantity": 1, "type": "Quantity"}
                    ],
                    "amount": {
                        "currency": {"id": 5057, "smartContract": None},
                        "subtotal": 10000,
                        "shippingTotal": 0,
                        "handlingTotal": 0,
                        "discountTotal": 0,
                        "taxTotal": 0,
                        "total": 10000,
                    },
                    "state": state,
                    "payments": [],
                    "partialAcceptAvailable": False,
                },
            }
        )
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-CoinPayments-Client": self.config.client_id,
                "X-CoinPayments-Timestamp": stamp,
                "X-CoinPayments-Signature": signature(
                    self.config.client_secret[0],
                    self.config.notification_url,
                    self.config.client_id,
                    stamp,
                    body,
                ),
            },
        )


def signature(secret: str, url: str, client_id: str, stamp: str, body: bytes) -> str:
    """The `X-CoinPayments-Signature` CoinPayments sends for this request."""
    message = BOM + b"POST" + url.encode() + client_id.encode() + stamp.encode() + body
    return base64.b64encode(hmac_digest(secret, message)).decode()


def _decimal_value(value: Any) -> str | Decimal | None:
    """A decimal string ("0.0015") is a known decimal value; an integer is minor units: None."""
    if isinstance(value, str) and "." in value:
        try:
            Decimal(value)
        except InvalidOperation:
            return None
        return value
    if isinstance(value, Decimal):  # a JSON number with a fraction is a decimal value too
        return value
    return None


def _dedupe_key(data: dict[str, Any], invoice: dict[str, Any], name: str, body: bytes) -> str:
    if invoice.get("id") is not None:
        return f"invoice:{invoice['id']}:{name.casefold()}:{value_digest(invoice)}"
    if data.get("transactionId") is not None:
        return f"wallet:{data['transactionId']}:{name.casefold()}:{data.get('confirmations')}"
    if scalar(data.get("id")) is not None:
        return f"id:{data['id']}"
    return f"body:{body_digest(body)}"
